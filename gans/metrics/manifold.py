"""Improved precision and recall: k-nearest-neighbour estimates of two feature manifolds.

Kynkaanniemi et al. (2019), "Improved precision and recall metric for assessing generative
models". Each set's manifold is approximated by the union of balls centred on its samples, each
with the radius of the distance to that sample's k-th nearest neighbour in its own set.
"""

from __future__ import annotations

import numpy as np

from gans.metrics.frechet import as_features

# Rows of the distance matrix computed at once: bounds memory at _BLOCK * N float64 values.
_BLOCK = 1024


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row of ``[N, D]`` features to its k-th nearest other row, ``[N]``."""
    features = as_features(features)
    if not 1 <= k < len(features):
        raise ValueError(f"k must be in [1, N - 1] = [1, {len(features) - 1}], got {k}.")
    radii = np.empty(len(features))
    for start in range(0, len(features), _BLOCK):
        distances = _squared_distances(features[start : start + _BLOCK], features)
        # Column k, not k - 1: each row's own zero distance is its 0-th neighbour.
        radii[start : start + _BLOCK] = np.partition(distances, k, axis=1)[:, k]
    return np.sqrt(radii)


def manifold_coverage(queries: np.ndarray, support: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each query lies in some ball ``||q - support_j|| <= radii_j``, bool ``[N_q]``."""
    queries, support = as_features(queries, "queries"), as_features(support, "support")
    radii = np.asarray(radii, np.float64)
    inside = np.empty(len(queries), bool)
    for start in range(0, len(queries), _BLOCK):
        distances = _squared_distances(queries[start : start + _BLOCK], support)
        inside[start : start + _BLOCK] = (distances <= radii[None, :] ** 2).any(axis=1)
    return inside


def precision_recall(
    real_features: np.ndarray, fake_features: np.ndarray, k: int = 3
) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al., 2019).

    With f(x, S) = 1 if ||x - s|| <= NN_k(s, S) for some s in S (NN_k: distance from s to its
    k-th nearest neighbour in S, itself excluded),

        precision = mean_{fake x} f(x, real),    recall = mean_{real x} f(x, fake):

    precision is the fraction of generated samples that fall on the real manifold (quality),
    recall the fraction of real samples that fall on the generated manifold (coverage). The
    paper uses k = 3 with 50,000 VGG-16 features per set.

    Args:
      real_features: ``[N_r, D]`` features of real samples.
      fake_features: ``[N_f, D]`` features of generated samples.
      k: Neighbourhood size; at most min(N_r, N_f) - 1.

    Returns:
      ``precision`` and ``recall``, floats in [0, 1].
    """
    real = as_features(real_features, "real_features")
    fake = as_features(fake_features, "fake_features")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} and {fake.shape[1]}.")
    precision = manifold_coverage(fake, real, knn_radii(real, k)).mean()
    recall = manifold_coverage(real, fake, knn_radii(fake, k)).mean()
    return {"precision": float(precision), "recall": float(recall)}


def _squared_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # The expanded form costs one matrix product; clipping removes round-off below zero.
    distances = (x**2).sum(1)[:, None] - 2.0 * x @ y.T + (y**2).sum(1)[None, :]
    return np.maximum(distances, 0.0)
