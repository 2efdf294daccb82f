"""Sample quality of a run's generator, by the metrics its data allows.

Digits: digits-FID, KID, precision and recall on the features of the framework's own digits
classifier, class coverage, and the real-vs-real FID floor. Stacked digits: the modes covered
of 1,000 and the KL of their histogram from uniform (``gans.metrics.stacked``). Gaussian
mixtures: modes captured, high-quality samples, reverse KL and the exact Wasserstein-1 distance
to real samples (with its real-vs-real floor). Used by ``experiments.evaluate`` on checkpoints
and by the training loop every ``Run.eval_every`` steps.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import numpy as np

from gans import sampling
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
    return dataset.mixture is not None or dataset.name in ("digits", "stacked_digits")


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
      run: the ``runner.Run`` that trained ``state``.
      state: one run's ``GANState``.
      key: the samples' randomness (default: derived from the seed).
      num: samples to score (default: 360 for digits, the held-out split's size; 26,000 for
        stacked digits, as in VEEGAN and PacGAN; for mixtures the run's ``num_samples``, 2,500
        by default as in PacGAN; 10,000 otherwise).
      inception: a ``gans.metrics.inception.InceptionExtractor`` for other image datasets:
        FID, KID, precision and recall on its pool features and the Inception score, beside
        the FID of two real sets of the same size.
      seed: the run's seed (one of several trained together); default ``run.seed``.

    Raises:
      ValueError: a dataset without metrics here (see ``supported``).
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
    if dataset.name == "digits":
        num = num or 360
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        result = digits_classifier.digits_sample_quality(samples)
        result["fid_real_vs_real"] = digits_classifier.digits_fid_floor(dataset.element_shape[0])
        return result
    if dataset.name == "stacked_digits":
        num = num or stacked.NUM_SAMPLES
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        classifier = digits_classifier.load_digits_classifier(dataset.element_shape[0])
        result = stacked.stacked_mode_scores(samples, classifier)
        return {"modes": result["modes"], "kl": result["kl"]}
    if inception is not None and len(dataset.element_shape) == 3:
        num = num or 10_000
        samples, _ = sampling.draw_samples(run.step, state, num, key)
        real = [np.asarray(dataset.batch(i, num, seed + 3)["x"][0]) for i in (0, 1)]
        fake, logits = inception.outputs(samples)
        real_features = [inception.features(images) for images in real]
        size = min(num, 1000)
        return {
            "fid": frechet.frechet_distance(real_features[0], fake),
            "fid_real_vs_real": frechet.frechet_distance(real_features[0], real_features[1]),
            **frechet.kernel_inception_distance(real_features[0], fake, 100, size, 0),
            **manifold.precision_recall(real_features[0], fake, 3),
            **scores.inception_score(logits, num_splits=10 if num >= 10_000 else 1),
        }
    raise ValueError(
        f"no sample-quality metric for {dataset.name} without Inception weights: pass "
        "--inception_weights=FILE (gans/metrics/inception.py says how to make the file)."
    )
