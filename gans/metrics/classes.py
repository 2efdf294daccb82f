"""Class structure of generated images, judged by the labels of their nearest real neighbours."""

from __future__ import annotations

import numpy as np


def nearest_neighbour_labels(
    samples: np.ndarray, real: np.ndarray, real_labels: np.ndarray
) -> np.ndarray:
    """Labels of each sample's nearest real example in pixel space (Euclidean), ``[N]``."""
    a = np.asarray(samples, np.float64).reshape(len(samples), -1)
    b = np.asarray(real, np.float64).reshape(len(real), -1)
    distances = (a**2).sum(1)[:, None] - 2.0 * a @ b.T + (b**2).sum(1)[None, :]
    return np.asarray(real_labels)[np.argmin(distances, axis=1)]


def category_purity(categories: np.ndarray, labels: np.ndarray, num_labels: int) -> dict:
    """How well latent categories (e.g. InfoGAN's code) map onto classes.

    Each category is mapped to its majority label; purity is the fraction of samples whose
    label is their category's majority label. A code that ignores the classes scores about
    the largest class share (0.1 for ten balanced classes); a perfect one scores 1.

    Returns:
      ``purity``, ``mapping`` (category -> majority label) and ``distinct`` (how many
      different labels the categories map to).
    """
    categories, labels = np.asarray(categories), np.asarray(labels)
    mapping, hits = {}, 0
    for category in np.unique(categories):
        counts = np.bincount(labels[categories == category], minlength=num_labels)
        mapping[int(category)] = int(np.argmax(counts))
        hits += int(counts.max())
    return {
        "purity": hits / len(labels),
        "mapping": mapping,
        "distinct": len(set(mapping.values())),
    }
