"""Sample-quality metrics.

The names below load their module on first use (PEP 562): the training loop imports
``gans.metrics.mixture`` alone and need not pay for scipy and the classifiers at start-up.
"""

import importlib

_EXPORTS = {
    "DigitsClassifier": "digits_classifier",
    "digits_fid_floor": "digits_classifier",
    "digits_sample_quality": "digits_classifier",
    "digits_split": "digits_classifier",
    "load_digits_classifier": "digits_classifier",
    "feature_moments": "frechet",
    "frechet_distance": "frechet",
    "frechet_distance_from_moments": "frechet",
    "kernel_inception_distance": "frechet",
    "mmd2_unbiased": "frechet",
    "InceptionExtractor": "inception",
    "load_inception_variables": "inception",
    "precision_recall": "manifold",
    "mode_coverage": "mixture",
    "stacked_accuracy_bound": "stacked",
    "stacked_mode_scores": "stacked",
    "class_coverage": "scores",
    "inception_score": "scores",
    "wasserstein_1": "transport",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"gans.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'gans.metrics' has no attribute {name!r}")
