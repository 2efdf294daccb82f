"""Mode coverage on hand-built sample sets with known answers."""

import math

import numpy as np
import pytest

from gans.metrics.mixture import mode_coverage
from gans.metrics.scores import inception_score

CENTRES = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
SIGMA = 0.01


def at_modes(counts, offset=0.0):
    return np.concatenate([np.tile(c + offset, (n, 1)) for c, n in zip(CENTRES, counts) if n])


def test_all_modes_evenly_covered():
    result = mode_coverage(at_modes([25, 25, 25, 25]), CENTRES, SIGMA)
    assert result == {"modes": 4, "high_quality": 1.0, "reverse_kl": pytest.approx(0.0)}


def test_collapse_onto_one_mode_has_reverse_kl_log_k():
    result = mode_coverage(at_modes([100, 0, 0, 0]), CENTRES, SIGMA)
    assert result["modes"] == 1
    assert result["reverse_kl"] == pytest.approx(math.log(4))


def test_samples_beyond_three_sigma_are_not_high_quality():
    inside = at_modes([30, 30, 30, 30], offset=np.array([2.9 * SIGMA, 0.0]))
    outside = at_modes([30, 30, 0, 0], offset=np.array([0.0, 3.1 * SIGMA]))
    result = mode_coverage(np.concatenate([inside, outside]), CENTRES, SIGMA)
    assert result["modes"] == 4
    assert result["high_quality"] == pytest.approx(120 / 180)


def test_a_mode_needs_min_count_samples():
    samples = at_modes([50, 50, 50, 19])
    assert mode_coverage(samples, CENTRES, SIGMA)["modes"] == 3
    assert mode_coverage(samples, CENTRES, SIGMA, min_count=19)["modes"] == 4


def test_no_high_quality_sample_gives_infinite_reverse_kl():
    result = mode_coverage(np.full((10, 2), 0.5), CENTRES, SIGMA)
    assert result["modes"] == 0 and result["high_quality"] == 0.0
    assert math.isinf(result["reverse_kl"])


def test_nearest_neighbour_labels_and_category_purity():
    from gans.metrics.classes import category_purity, nearest_neighbour_labels

    real = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = nearest_neighbour_labels(
        np.array([[1.0, 1.0], [9.0, 1.0], [1.0, 8.0]]), real, np.array([7, 3, 5])
    )
    assert labels.tolist() == [7, 3, 5]
    # Category 0 holds 7, 7; category 1 holds 3, 3, 5, 3: 2 + 3 of 6 samples match.
    result = category_purity(np.array([0, 0, 1, 1, 1, 1]), np.array([7, 7, 3, 3, 5, 3]), 10)
    assert result["mapping"] == {0: 7, 1: 3}
    assert result["purity"] == pytest.approx(5 / 6)
    assert result["distinct"] == 2


def test_inception_score_splits_as_the_reference_code_when_n_is_not_a_multiple():
    # Split i holds samples [i N // s, (i + 1) N // s): for N = 7 and s = 3, samples 0-1, 2-3
    # and 4-6 (np.array_split would take 0-2, 3-4 and 5-6).
    probs = np.eye(2)[[0, 1, 0, 0, 0, 1, 1]]
    # By hand, one-hot rows: split 0-1 has p(y) = (1/2, 1/2) and KL log 2 per sample; 2-3 has
    # p(y) = (1, 0) and KL 0; 4-6 has p(y) = (1/3, 2/3), KL log 3 for the first sample and
    # log 3/2 for the other two.
    expected = [2.0, 1.0, math.exp((math.log(3) + 2 * math.log(1.5)) / 3)]
    result = inception_score(probs, num_splits=3, from_logits=False)
    assert result["is_mean"] == pytest.approx(np.mean(expected), rel=1e-12)
    assert result["is_std"] == pytest.approx(np.std(expected), rel=1e-12)
    array_split = [math.exp((2 * math.log(1.5) + math.log(3)) / 3), 1.0, 1.0]
    assert result["is_mean"] != pytest.approx(np.mean(array_split))


def test_inception_score_equals_the_improved_gan_loop():
    # openai/improved-gan, inception_score/model.py, on strictly positive predictions.
    preds = np.random.default_rng(0).dirichlet(np.ones(5), size=23)
    reference = []
    for i in range(4):
        part = preds[(i * preds.shape[0] // 4) : ((i + 1) * preds.shape[0] // 4), :]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        reference.append(np.exp(np.mean(np.sum(kl, 1))))
    result = inception_score(preds, num_splits=4, from_logits=False)
    assert result["is_mean"] == pytest.approx(np.mean(reference), rel=1e-12)
    assert result["is_std"] == pytest.approx(np.std(reference), rel=1e-12)
