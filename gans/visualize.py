"""Pictures a researcher looks at: sample grids and critic contours (PNG files)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np


def _pyplot():
    """matplotlib's pyplot, drawing to files only (never a window); imported on first use,
    so that commands which fail early or draw nothing start fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: np.ndarray, columns: int | None = None, pad: int = 1) -> np.ndarray:
    """Tiles ``[N, H, W, C]`` images in [-1, 1] into one ``[rows*H', cols*W', C]`` array in [0, 1]."""
    images = np.clip((np.asarray(images, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    n, h, w, c = images.shape
    columns = columns or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / columns))
    grid = np.ones((rows * (h + pad) + pad, columns * (w + pad) + pad, c), np.float32)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[top : top + h, left : left + w] = image
    return grid


def save_image_grid(
    images: np.ndarray, path: str | os.PathLike, columns: int | None = None, scale: int = 4
) -> None:
    """Writes a grid of images in [-1, 1] as a PNG, each pixel ``scale`` x ``scale``."""
    plt = _pyplot()
    grid = image_grid(images, columns)
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    if grid.shape[-1] == 1:
        plt.imsave(path, grid[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        plt.imsave(path, grid)


def save_critic_contour(
    path: str | os.PathLike,
    *,
    real: np.ndarray,
    fake: np.ndarray,
    critic_fn: Callable[[np.ndarray], np.ndarray] | None = None,
    extent: float = 3.0,
    resolution: int = 128,
    title: str = "",
) -> None:
    """Plots 2-D real (orange) and generated (green, on top) samples over the critic's contour.

    Args:
      path: PNG file to write.
      real, fake: ``[N, 2]`` samples.
      critic_fn: ``[M, 2] -> [M]`` scores, evaluated on a square grid; omitted if None.
      extent: the grid spans ``[-extent, extent]^2``.
      resolution: grid points per side.
      title: figure title.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if critic_fn is not None:
        axis = np.linspace(-extent, extent, resolution, dtype=np.float32)
        xx, yy = np.meshgrid(axis, axis)
        scores = np.asarray(critic_fn(np.stack([xx.ravel(), yy.ravel()], axis=1)))
        contour = ax.contourf(xx, yy, scores.reshape(xx.shape), levels=20, cmap="viridis")
        fig.colorbar(contour, ax=ax, fraction=0.046, pad=0.04, label="critic score")
    ax.scatter(real[:, 0], real[:, 1], s=12, c="orange", alpha=0.3, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=2, c="lime", alpha=0.8, label="generated")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# The curves a run's metrics log is plotted as, panel by panel, where present.
CURVES = (
    ("losses", ("critic_loss", "generator_loss", "loss")),
    ("Wasserstein estimate", ("wasserstein_estimate",)),
    ("sample quality", ("eval/fid", "eval/fid_real_vs_real", "eval/wasserstein_1")),
)


def save_curves(records: list[dict[str, float]], path: str | os.PathLike, title: str = "") -> None:
    """Plots the losses, the Wasserstein estimate and the sample-quality metric over training.

    Args:
      records: metrics lines (``{"step": ..., name: value}``), in step order.
      path: the PNG to write.
      title: the figure's title.
    """
    plt = _pyplot()
    panels = []
    for label, names in CURVES:
        present = [name for name in names if any(name in r for r in records)]
        if present:
            panels.append((label, present))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (label, names) in zip(axes[0], panels):
        for name in names:
            points = [(r["step"], r[name]) for r in records if name in r and math.isfinite(r[name])]
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, marker="." if len(points) < 30 else None, label=name)
        ax.set_title(label)
        ax.set_xlabel("generator step")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_tracking(
    steps: np.ndarray,
    estimate: np.ndarray,
    quality: np.ndarray,
    path: str | os.PathLike,
    *,
    estimate_label: str,
    quality_label: str,
    title: str = "",
) -> None:
    """Two quantities over training on twin axes, and one against the other."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(steps, estimate, color="tab:blue", marker=".")
    left.set_xlabel("generator step")
    left.set_ylabel(estimate_label, color="tab:blue")
    twin = left.twinx()
    twin.plot(steps, quality, color="tab:red", marker=".")
    twin.set_ylabel(quality_label, color="tab:red")
    right.scatter(estimate, quality, c=steps, cmap="viridis", s=14)
    right.set_xlabel(estimate_label)
    right.set_ylabel(quality_label)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
