"""The mode-coverage table and picture: ours beside the published rows (VEEGAN, GDPP, PacGAN).

``experiments.paper.mode_coverage`` trains the rows; this module only renders finished records
(``experiments.paper.records``), so a table can be redrawn without training.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from experiments.paper import mode_coverage_protocol as setup

# Published rows, as printed: (protocol, source, model, modes, high-quality %, reverse KL) per
# dataset.
# VEEGAN Table 1 (Srivastava et al., 2017) and GDPP Table 1 (Elfeki et al., 2019), the unrolled-
# GAN toy setting, report no reverse KL. PacGAN Table 1 (Lin et al., 2018), read from the
# released code's synthetic_data_experiments/results/Table1.png (github fjxmlzn/PacGAN): its own
# networks and training (the ALI code's), not this protocol, so its GAN row is not VEEGAN's;
# ± is the standard error over 10 trials. The protocol is the key of ``mode_coverage_protocol.NETWORKS``
# the row was trained with: a table shows the published rows of its own protocol.
PUBLISHED: dict[str, tuple[tuple[str, str, str, str, str, str], ...]] = {
    "ring8": (
        ("unrolled", "VEEGAN T1", "GAN", "1.0", "99.3", ""),
        ("unrolled", "VEEGAN T1", "ALI", "2.8", "0.13", ""),
        ("unrolled", "VEEGAN T1", "Unrolled GAN", "7.6", "35.6", ""),
        ("unrolled", "VEEGAN T1", "VEEGAN", "8.0", "52.9", ""),
        ("unrolled", "GDPP T1", "WGAN-GP", "6.8", "59.6", ""),
        ("pacgan", "PacGAN T1", "GAN", "6.3 ± 0.5", "98.2 ± 0.2", "0.45 ± 0.09"),
        ("pacgan", "PacGAN T1", "PacGAN2", "7.9 ± 0.1", "95.6 ± 2.0", "0.07 ± 0.03"),
        ("pacgan", "PacGAN T1", "PacGAN3", "7.8 ± 0.1", "97.7 ± 0.3", "0.10 ± 0.02"),
        ("pacgan", "PacGAN T1", "PacGAN4", "7.8 ± 0.1", "95.9 ± 1.4", "0.07 ± 0.02"),
    ),
    "grid25": (
        ("unrolled", "VEEGAN T1", "GAN", "3.3", "0.5", ""),
        ("unrolled", "VEEGAN T1", "ALI", "15.8", "1.6", ""),
        ("unrolled", "VEEGAN T1", "Unrolled GAN", "23.6", "16.0", ""),
        ("unrolled", "VEEGAN T1", "VEEGAN", "24.6", "40.0", ""),
        ("unrolled", "GDPP T1", "WGAN-GP", "24.2", "28.7", ""),
        ("pacgan", "PacGAN T1", "GAN", "17.3 ± 0.8", "94.8 ± 0.7", "0.70 ± 0.07"),
        ("pacgan", "PacGAN T1", "PacGAN2", "23.8 ± 0.7", "91.3 ± 0.8", "0.13 ± 0.04"),
        ("pacgan", "PacGAN T1", "PacGAN3", "24.6 ± 0.4", "94.2 ± 0.4", "0.06 ± 0.02"),
        ("pacgan", "PacGAN T1", "PacGAN4", "24.8 ± 0.2", "93.6 ± 0.6", "0.04 ± 0.01"),
    ),
}


def table_rows(
    records: Sequence[dict[str, Any]], dataset: str, networks: str = "unrolled"
) -> list[str]:
    """Markdown rows for one dataset: ours (mean ± std [95 % interval]), then the published
    rows of the same protocol (``networks``)."""
    from gans import data
    from gans import statistics as seed_statistics

    num_modes = data.get_dataset(dataset).mixture.num_modes
    rows = [
        (
            f"| {dataset} | loss | modes (of {num_modes}; >= 20 hq) | modes (>= 1 hq) "
            "| high quality % | reverse KL | modes per seed | wall |"
        ),
        "|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        if record["dataset"] != dataset:
            continue
        runs = record["runs"]
        per_seed = ", ".join(str(r["modes"]) for r in runs)
        label = setup.row(record["loss"]).label
        over_seeds = {
            name: seed_statistics.summarize([r[name] for r in runs])
            for name in ("modes", "modes_any", "high_quality", "reverse_kl")
        }
        rows.append(
            f"| ours, {record['steps']:,} steps, {len(runs)} seeds | {label} "
            f"| {over_seeds['modes'].format()} "
            f"| {over_seeds['modes_any'].format()} "
            f"| {over_seeds['high_quality'].format(scale=100.0)} "
            f"| {over_seeds['reverse_kl'].format(digits=2)} "
            f"| {per_seed} | {record['wall_seconds'] / 60:.1f} min |"
        )
    for protocol, source, model, modes, quality, reverse_kl in PUBLISHED[dataset]:
        if protocol != networks:
            continue
        rows.append(f"| {source} | {model} | {modes} | | {quality} | {reverse_kl} | | |")
    return rows


def departures(settings: setup.Settings) -> list[str]:
    """How ``settings`` depart from their protocol as published (``setup.PUBLISHED``)."""
    protocol = setup.PUBLISHED[settings.networks]
    changes = []
    if settings.steps != protocol.steps:
        changes.append(f"{settings.steps:,} generator steps, not {protocol.steps:,}")
    if settings.seeds != protocol.seeds:
        changes.append(f"{settings.seeds} seeds, not {protocol.seeds}")
    if settings.batch_size != protocol.batch_size:
        changes.append(f"batch {settings.batch_size}, not {protocol.batch_size}")
    rates = [
        ("generator_lr", "the generator's Adam rate"),
        ("critic_lr", "the discriminator's Adam rate"),
        ("wgan_lr", "WGAN's RMSProp rate"),
    ]
    if settings.networks == "unrolled":  # PacGAN's kernels are normal, not orthogonal.
        rates.append(("init_scale", "the orthogonal gain"))
    for name, what in rates:
        value, published = getattr(settings, name), getattr(protocol, name)
        if value != published:
            changes.append(f"{what} {value:g}, not {published:g}")
    return changes


def _protocol_line(settings: setup.Settings) -> str:
    """The networks and training of ``settings``, in one sentence."""
    if settings.networks == "pacgan":
        return (
            "- PacGAN's networks and training (its released synthetic_data_experiments): z of 2 "
            "dims, G 4 x 400 (Dense without bias, BatchNorm, ReLU), D 3 x 200 maxout of 5 pieces, "
            f"kernels N(0, {setup.PACGAN_INIT_STD:g}^2), batches of "
            f"{settings.batch_size} packs (m samples each for PacGANm), {settings.steps:,} "
            f"generator steps; Adam (beta1 0.8) at G {settings.generator_lr:g}, D "
            f"{settings.critic_lr:g}; NS-GAN's loss. The generator draws a pack's m samples in "
            "one batch and the data are drawn afresh each step (the released code: m batches, "
            "100,000 fixed packs); updates alternate (there: simultaneous)."
        )
    return (
        f"- z of {setup.Z_DIM} dims, G and D 2 x 128 tanh, orthogonal kernels (gain "
        f"{settings.init_scale:g}), batch {settings.batch_size}, {settings.steps:,} generator "
        f"steps; Adam (beta1 0.5) at G {settings.generator_lr:g}, D {settings.critic_lr:g}, "
        f"except WGAN: RMSProp {settings.wgan_lr:g}, clip 0.01, n_critic 5. WGAN-GP: lambda "
        "0.1, n_critic 5. DRAGAN: lambda 10, symmetric perturbation."
    )


def write_table(
    records: Sequence[dict[str, Any]],
    path: pathlib.Path,
    settings: setup.Settings,
    command: str,
) -> None:
    """Writes the markdown table of every finished record (one section per dataset)."""
    total = sum(r["wall_seconds"] for r in records) / 60
    networks = setup.NETWORKS[settings.networks]
    lines = [
        f"# Mode coverage on ring-8 and grid-25 ({networks.label})",
        "",
        f"Generated by `{command}` ({total:.1f} min of training and scoring for the rows below).",
        "",
        *[f"- **Not the protocol: {change}.**" for change in departures(settings)],
        _protocol_line(settings),
        (
            "- Scored on 2,500 samples of each seed: high quality within 3 std of the nearest "
            "mode; a mode is captured with >= 20 high-quality samples; the released code of "
            "GDPP, and PacGAN's (its MetricLogger), count a mode with >= 1 (the column to read "
            "beside their rows). "
            "Ours: mean ± std (ddof 1) over seeds [percentile bootstrap 95 % interval of the "
            "mean, `gans.statistics`]; published: as printed."
        ),
        "",
    ]
    for dataset in setup.DATASETS:
        if any(r["dataset"] == dataset for r in records):
            lines += table_rows(records, dataset, settings.networks) + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def save_picture(samples: dict[tuple[str, str], np.ndarray], records, path: pathlib.Path) -> None:
    """One panel per (dataset, loss): seed 0's 2,500 samples over the real modes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gans import data

    datasets = [d for d in setup.DATASETS if any(k[1] == d for k in samples)]
    losses = list(dict.fromkeys(k[0] for k in samples))  # The rows, in the order trained.
    scores = {(r["loss"], r["dataset"]): r["runs"][0] for r in records}
    fig, axes = plt.subplots(
        len(datasets), len(losses), figsize=(2.6 * len(losses), 3.0 * len(datasets)), squeeze=False
    )
    for row, dataset in enumerate(datasets):
        mixture = data.get_dataset(dataset).mixture
        extent = float(np.abs(mixture.centres).max()) * 1.3 + 0.3
        for col, loss in enumerate(losses):
            ax = axes[row, col]
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            if (loss, dataset) not in samples:
                ax.set_title(f"{setup.row(loss).label}\n(not run)", fontsize=8)
                continue
            fake = samples[(loss, dataset)]
            ax.scatter(*mixture.centres.T, s=40, facecolors="none", edgecolors="orange", lw=1)
            ax.scatter(fake[:, 0], fake[:, 1], s=1, c="tab:green", alpha=0.5)
            s = scores[(loss, dataset)]
            ax.set_title(
                f"{setup.row(loss).label} on {dataset}\n{s['modes']}/{mixture.num_modes} modes, "
                f"{100 * s['high_quality']:.0f}% hq",
                fontsize=8,
            )
    fig.suptitle("seed 0, 2,500 samples (green) and the modes (orange)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
