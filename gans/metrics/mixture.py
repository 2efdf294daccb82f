"""Mode coverage on 2-D Gaussian mixtures with known centres.

Definitions follow VEEGAN (Srivastava et al., 2017) and PacGAN (Lin et al., 2018):
a generated sample is *high quality* when it lies within ``3 sigma`` of its
nearest centre; a mode is *captured* when at least ``min_count`` high-quality
samples fall on it; the reverse KL compares the histogram of high-quality
samples over modes with the uniform histogram of the true mixture.
"""

from __future__ import annotations

import numpy as np


def mode_coverage(
    samples: np.ndarray, centres: np.ndarray, sigma: float, *, min_count: int = 20
) -> dict[str, float]:
    """Modes captured, high-quality fraction and reverse KL of a sample set.

    Args:
      samples: ``[N, 2]`` generated points.
      centres: ``[K, 2]`` mixture means.
      sigma: the components' standard deviation.
      min_count: high-quality samples a mode needs to count as captured
        (PacGAN uses 20 out of 2,500 samples).

    Returns:
      ``modes`` (captured, out of K), ``high_quality`` (fraction in [0, 1]) and
      ``reverse_kl`` = KL(p_hat || uniform) of the high-quality mode histogram
      (0 when generated mass is spread evenly; ``log K`` when on one mode; inf
      when there is no high-quality sample).
    """
    samples = np.asarray(samples, np.float64)
    centres = np.asarray(centres, np.float64)
    distances = np.linalg.norm(samples[:, None, :] - centres[None, :, :], axis=-1)
    nearest = np.argmin(distances, axis=1)
    good = distances[np.arange(len(samples)), nearest] <= 3.0 * sigma
    counts = np.bincount(nearest[good], minlength=len(centres))
    total = counts.sum()
    if total == 0:
        reverse_kl = float("inf")
    else:
        p = counts[counts > 0] / total
        reverse_kl = float(np.sum(p * np.log(p * len(centres))))
    return {
        "modes": int(np.sum(counts >= min_count)),
        "high_quality": float(good.mean()),
        "reverse_kl": reverse_kl,
    }
