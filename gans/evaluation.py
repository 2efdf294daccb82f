"""Sample quality of a run's generator, by the metrics its data allows.

A data set says how it is scored (``Dataset.scoring``, ``Dataset.mixture``); nothing here
switches on its name. Digits sets (sklearn's digits, MNIST): FID, KID, precision and recall on
the features of the framework's own classifier for that set
(``gans.metrics.digits_classifier``), class coverage, and the real-vs-real FID floor. Stacked
digits: the modes covered of 1,000 and the KL of their histogram from uniform
(``gans.metrics.stacked``). Gaussian mixtures: modes captured, high-quality samples, reverse KL
and the exact Wasserstein-1 distance to real samples (with its real-vs-real floor). Other
images: FID, KID, precision, recall and the Inception Score on the Inception network's features
given its weights, else, for one-channel images at a digits size, on the digits classifier's
(``extractor_for``). Used by ``experiments.evaluate`` on checkpoints and sample sets
(``set_quality``) and by the training loop every ``Run.eval_every`` steps.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from gans import sampling
from gans.data import IMAGE_SIZES
from gans.metrics import (
    digits_classifier,
    frechet,
    manifold,
    mixture,
    scores,
    stacked,
    transport,
)


def _real(dataset, num: int, seed: int, index: int) -> np.ndarray:
    return np.asarray(dataset.batch(index, num, seed + 3)["x"][0])


@functools.lru_cache(maxsize=8)
def _real_vs_real(dataset, num: int, seed: int) -> float:
    """W1 between two real sets of ``num``: the floor, the same at every evaluation of a run."""
    return transport.wasserstein_1(_real(dataset, num, seed, 1), _real(dataset, num, seed, 0))


def supported(dataset) -> bool:
    """Whether ``sample_quality`` has metrics for ``dataset`` without Inception weights."""
    if dataset.mixture is not None:
        return True
    shape = dataset.element_shape
    if dataset.scoring is not None:
        sizes = digits_classifier.source(dataset.scoring.classifier).image_sizes
        return shape[0] in sizes
    return len(shape) == 3 and shape[2] == 1 and shape[0] in IMAGE_SIZES


def sample_quality(
    run,
    state,
    key: jax.Array | None = None,
    num: int | None = None,
    inception=None,
    *,
    seed: int | None = None,
) -> dict[str, Any]:
    """The metrics of one run's state, as a flat dict of numbers.

    Args:
      run: the ``run_lib.Run`` that trained ``state``.
      state: one run's ``GANState``.
      key: the samples' randomness (default: derived from the seed).
      num: samples to score (default: about the held-out split's size for digits sets, 360
        for sklearn's and 1,000 for MNIST; 26,000 for stacked digits, as in VEEGAN and PacGAN;
        for mixtures the run's ``num_samples``, 2,500
        by default as in PacGAN; 10,000 otherwise).
      inception: a ``gans.metrics.inception.InceptionExtractor`` for other image datasets:
        FID, KID, precision and recall on its pool features and the Inception score, beside
        the FID of two real sets of the same size. Without it, other one-channel images at a
        digits size get the same metrics on the digits classifier's features.
      seed: the run's seed (one of several trained together); default ``run.seed``.

    Raises:
      ValueError: a dataset without metrics here (see ``extractor_for``).
    """
    dataset = run.dataset
    seed = run.seed if seed is None else seed
    key = jax.random.key(seed + 4) if key is None else key
    if dataset.mixture is not None:
        num = num or run.num_samples
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        real = _real(dataset, num, seed, 0)
        found = dataset.mixture
        result = mixture.mode_coverage(samples, found.centres, found.sigma)
        result["wasserstein_1"] = transport.wasserstein_1(samples, real)
        result["wasserstein_1_real_vs_real"] = _real_vs_real(dataset, num, seed)
        return result
    scoring, size = dataset.scoring, dataset.element_shape[0]
    if scoring is not None:
        classifier = digits_classifier.classifier_for(scoring, size)
        if classifier is None:
            sizes = digits_classifier.source(scoring.classifier).image_sizes
            raise ValueError(
                f"{dataset.name}'s classifier reads images of side "
                f"{', '.join(map(str, sizes))}, not {size}: train at one of those "
                "--image_size values to score it."
            )
    if scoring is not None and scoring.stacked:
        num = num or stacked.NUM_SAMPLES
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        result = stacked.stacked_mode_scores(samples, classifier)
        return {"modes": result["modes"], "kl": result["kl"]}
    if scoring is not None:
        name = scoring.classifier
        num = num or digits_classifier.source(name).num_samples
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        result = digits_classifier.digits_sample_quality(samples, source_name=name)
        result["fid_real_vs_real"] = digits_classifier.digits_fid_floor(size, source_name=name)
        return result
    if len(dataset.element_shape) == 3:
        extractor = extractor_for(dataset.element_shape, inception)
        num = num or 10_000
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        real = [np.asarray(dataset.batch(i, num, seed + 3)["x"][0]) for i in (0, 1)]
        fake, logits = extractor.outputs(samples)
        real_features = [extractor.features(images) for images in real]
        return {
            **compare_features(real_features[0], fake, logits),
            "fid_real_vs_real": frechet.frechet_distance(real_features[0], real_features[1]),
        }
    raise ValueError(f"no sample-quality metric for the 2-D data set {dataset.name}.")


def compare_features(
    real: np.ndarray, fake: np.ndarray, fake_logits: np.ndarray, *, k: int = 3, seed: int = 0
) -> dict[str, float]:
    """FID, KID, precision and recall of ``fake`` against ``real`` features, and the Inception
    Score of ``fake_logits``: the metrics of two image sets on one network's outputs.

    KID averages 100 subsets of ``min(N_real, N_fake, 1000)`` (``seed`` picks them); precision
    and recall use ``k`` neighbours; the score is taken over 10 splits from 10,000 samples on,
    else over one, as in the papers' protocols.
    """
    size = min(len(real), len(fake), 1000)
    return {
        "fid": frechet.frechet_distance(real, fake),
        **frechet.kernel_inception_distance(real, fake, 100, size, seed),
        **manifold.precision_recall(real, fake, k),
        **scores.inception_score(fake_logits, num_splits=10 if len(fake) >= 10_000 else 1),
    }


def extractor_for(element_shape: tuple[int, ...], inception=None, scoring=None):
    """The network whose features compare images of ``element_shape``: Inception given its
    weights, else the classifier that the data set's ``scoring`` names (one digit per image),
    else the sklearn digits classifier for one-channel images at a digits size.

    Raises:
      ValueError: other images without Inception weights.
    """
    if inception is not None:
        return inception
    size, _, channels = element_shape
    if scoring is not None and not scoring.stacked:
        classifier = digits_classifier.classifier_for(scoring, size)
        if classifier is not None:
            return classifier
    if channels == 1 and size in IMAGE_SIZES:
        return digits_classifier.load_digits_classifier(size)
    raise ValueError(
        f"no features for {size}x{size}x{channels} images without Inception weights (the digits "
        "classifier reads one-channel 8, 16 or 32 pixel images): pass --inception_weights=FILE "
        "(gans/metrics/inception.py says how to make the file)."
    )


def set_quality(samples: np.ndarray, reference: np.ndarray, extractor) -> dict[str, float]:
    """``compare_features`` of two image sets, ``[N, S, S, C]`` in [-1, 1], on ``extractor``'s
    features; with ``fid_real_vs_real``, the FID between the reference's two halves (the floor
    at half the size: FID is biased upwards for fewer samples)."""
    fake, logits = extractor.outputs(samples)
    real = extractor.features(reference)
    half = len(real) // 2
    return {
        **compare_features(real, fake, logits),
        "fid_real_vs_real": frechet.frechet_distance(real[:half], real[half : 2 * half]),
    }
