"""Sample-quality metrics."""

from gans.metrics.digits_classifier import (
    DigitsClassifier,
    digits_fid_floor,
    digits_sample_quality,
    digits_split,
    load_digits_classifier,
)
from gans.metrics.frechet import (
    feature_moments,
    frechet_distance,
    frechet_distance_from_moments,
    kernel_inception_distance,
    mmd2_unbiased,
)
from gans.metrics.inception import InceptionExtractor, load_inception_variables
from gans.metrics.manifold import precision_recall
from gans.metrics.mixture import mode_coverage
from gans.metrics.scores import class_coverage, inception_score
from gans.metrics.transport import wasserstein_1

__all__ = [
    "DigitsClassifier",
    "InceptionExtractor",
    "class_coverage",
    "digits_fid_floor",
    "digits_sample_quality",
    "digits_split",
    "feature_moments",
    "frechet_distance",
    "frechet_distance_from_moments",
    "inception_score",
    "kernel_inception_distance",
    "load_digits_classifier",
    "load_inception_variables",
    "mmd2_unbiased",
    "mode_coverage",
    "precision_recall",
    "wasserstein_1",
]
