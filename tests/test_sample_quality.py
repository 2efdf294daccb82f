"""Feature-space metrics against closed forms, brute force and hand-built sets with known answers."""

import itertools
import math

import numpy as np
import scipy.linalg
import pytest

from gans.metrics import frechet, manifold, scores, transport


def rotation(dim: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


def diagonal_gaussian_fd(mu1, var1, mu2, var2):
    return np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2.0 * np.sqrt(var1 * var2))


def test_frechet_distance_of_two_diagonal_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    var1, var2 = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    value = frechet.frechet_distance_from_moments(mu1, np.diag(var1), mu2, np.diag(var2))
    assert value == pytest.approx(diagonal_gaussian_fd(mu1, var1, mu2, var2), rel=1e-10)


def test_frechet_distance_is_invariant_under_a_common_rotation():
    # Rotated diagonal covariances no longer are diagonal, but commute: the same closed form.
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(5), rng.standard_normal(5)
    var1, var2 = rng.uniform(0.1, 3.0, 5), rng.uniform(0.1, 3.0, 5)
    r = rotation(5, seed=2)
    value = frechet.frechet_distance_from_moments(
        r @ mu1, r @ np.diag(var1) @ r.T, r @ mu2, r @ np.diag(var2) @ r.T
    )
    assert value == pytest.approx(diagonal_gaussian_fd(mu1, var1, mu2, var2), rel=1e-8)


def test_frechet_distance_in_one_dimension_is_mean_and_std_gaps_squared():
    value = frechet.frechet_distance_from_moments([1.0], [[4.0]], [-2.0], [[9.0]])
    assert value == pytest.approx(3.0**2 + (2.0 - 3.0) ** 2)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    features = np.random.default_rng(3).standard_normal((400, 16)) @ rotation(16, seed=4)
    assert abs(frechet.frechet_distance(features, features)) < 1e-8


def test_frechet_distance_with_singular_covariances_stays_real():
    # Fewer samples than dimensions: rank-deficient covariances, as with small generated sets.
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((20, 32)), rng.standard_normal((20, 32)) + 1.0
    value = frechet.frechet_distance(a, b)
    assert math.isfinite(value) and value > 32 * 0.9  # The mean gap alone is 32.
    assert abs(frechet.frechet_distance(a, a)) < 1e-4


def test_frechet_distance_equals_the_sqrtm_form_on_full_rank_covariances():
    # pytorch-fid's Tr sqrtm(S1 S2), where sqrtm is accurate: more samples than dimensions.
    rng = np.random.default_rng(8)
    a, b = (
        rng.standard_normal((400, 16)),
        rng.standard_normal((400, 16)) @ rng.normal(size=(16, 16)),
    )
    mu_a, s_a = frechet.feature_moments(a)
    mu_b, s_b = frechet.feature_moments(b)
    sqrtm_form = (
        np.sum((mu_a - mu_b) ** 2)
        + np.trace(s_a + s_b)
        - 2 * np.trace(scipy.linalg.sqrtm(s_a @ s_b).real)
    )
    assert frechet.frechet_distance(a, b) == pytest.approx(sqrtm_form, rel=1e-9)


def test_frechet_distance_refuses_a_matrix_that_is_not_a_covariance():
    with pytest.raises(ValueError, match="negative eigenvalue"):
        frechet.frechet_distance_from_moments(np.zeros(2), -np.eye(2), np.zeros(2), np.eye(2))


def test_frechet_distance_from_samples_approaches_the_population_value():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((20000, 3)) * [1.0, 2.0, 0.5]
    b = rng.standard_normal((20000, 3)) * [2.0, 1.0, 0.5] + [1.0, 0.0, 0.0]
    exact = diagonal_gaussian_fd(
        np.zeros(3), np.array([1.0, 4.0, 0.25]), np.array([1.0, 0, 0]), np.array([4.0, 1.0, 0.25])
    )
    assert frechet.frechet_distance(a, b) == pytest.approx(exact, rel=0.05)


def test_frechet_distance_rejects_mismatched_moments():
    with pytest.raises(ValueError, match="covariances"):
        frechet.frechet_distance_from_moments(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))


def test_mmd2_unbiased_matches_a_double_loop():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((5, 3)), rng.standard_normal((4, 3)) + 0.5

    def k(x, y):
        return (x @ y / 3 + 1.0) ** 3

    m, n = len(a), len(b)
    aa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    bb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ab = sum(k(x, y) for x in a for y in b) / (m * n)
    assert frechet.mmd2_unbiased(a, b) == pytest.approx(aa + bb - 2.0 * ab)


def test_kid_is_unbiased_on_identical_distributions():
    # Mean over many independent small draws: zero within its standard error, while the biased
    # V-statistic (diagonals kept) sits many standard errors above zero on the same draws.
    rng = np.random.default_rng(8)
    unbiased, biased = [], []
    for _ in range(300):
        a, b = rng.standard_normal((10, 4)), rng.standard_normal((10, 4))
        unbiased.append(frechet.mmd2_unbiased(a, b))
        k = frechet.polynomial_kernel
        biased.append(k(a, a).mean() + k(b, b).mean() - 2.0 * k(a, b).mean())
    unbiased, biased = np.array(unbiased), np.array(biased)
    error = unbiased.std() / np.sqrt(len(unbiased))
    assert abs(unbiased.mean()) < 3.0 * error
    assert biased.mean() > 10.0 * error
    assert (unbiased < 0).any()


def test_kid_over_subsets_separates_equal_from_shifted_distributions():
    rng = np.random.default_rng(9)
    a, b = rng.standard_normal((500, 8)), rng.standard_normal((500, 8))
    same = frechet.kernel_inception_distance(a, b, num_subsets=50, subset_size=100, seed=0)
    shifted = frechet.kernel_inception_distance(a, b + 1.0, num_subsets=50, subset_size=100)
    assert abs(same["kid_mean"]) < 3.0 * same["kid_std"] / np.sqrt(50) + 1e-3
    assert shifted["kid_mean"] > 20.0 * same["kid_std"]
    again = frechet.kernel_inception_distance(a, b, num_subsets=50, subset_size=100, seed=0)
    assert again == same  # The seed fixes the subsets.
    with pytest.raises(ValueError, match="subset_size"):
        frechet.kernel_inception_distance(a, b[:50], subset_size=100)


REAL = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])  # k=1 radii: all 1.


def test_precision_recall_on_a_hand_built_set():
    # Two fakes within radius 1 of a real point, two far away; the fakes' k=1 radii are ~3.03
    # for the first two (each other's neighbour), so every real point is covered.
    fake = np.array([[0.0, 0.5], [3.0, 0.9], [10.0, 0.0], [10.0, 1.0]])
    assert manifold.knn_radii(REAL, k=1) == pytest.approx([1.0, 1.0, 1.0, 1.0])
    result = manifold.precision_recall(REAL, fake, k=1)
    assert result == {"precision": 0.5, "recall": 1.0}
    # Just outside every real ball: precision drops, recall is unchanged.
    fake[1] = [3.0, 1.1]
    assert manifold.precision_recall(REAL, fake, k=1)["precision"] == 0.25


def test_precision_recall_of_identical_and_of_disjoint_sets():
    points = np.random.default_rng(10).standard_normal((50, 3))
    assert manifold.precision_recall(points, points.copy()) == {"precision": 1.0, "recall": 1.0}
    assert manifold.precision_recall(points, points + 100.0) == {"precision": 0.0, "recall": 0.0}


def test_mode_collapse_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(11)
    real = np.concatenate([rng.normal(c, 0.1, (100, 2)) for c in ([0, 0], [5, 0], [0, 5])])
    fake = rng.normal([0, 0], 0.1, (300, 2))  # Every fake on one of the three modes.
    result = manifold.precision_recall(real, fake, k=3)
    assert result["precision"] > 0.9
    assert result["recall"] == pytest.approx(1 / 3, abs=0.05)


def test_precision_recall_in_blocks_equals_one_block(monkeypatch):
    rng = np.random.default_rng(12)
    real, fake = rng.standard_normal((40, 4)), rng.standard_normal((30, 4)) + 0.3
    whole = manifold.precision_recall(real, fake, k=3)
    monkeypatch.setattr(manifold, "_BLOCK", 7)
    assert manifold.precision_recall(real, fake, k=3) == whole


def test_inception_score_extremes_and_splits():
    assert scores.inception_score(np.full((20, 5), 0.2), 2, from_logits=False)["is_mean"] == (
        pytest.approx(1.0)
    )
    confident = np.eye(5)[np.arange(20) % 5]  # Sure predictions, each class equally often.
    result = scores.inception_score(confident, num_splits=4, from_logits=False)
    assert result == {"is_mean": pytest.approx(5.0), "is_std": pytest.approx(0.0, abs=1e-12)}
    # Split one holds only class 0 (score 1), split two all five classes (score 5).
    skewed = np.concatenate([np.eye(5)[[0] * 5], np.eye(5)[np.arange(5)]])
    result = scores.inception_score(skewed, num_splits=2, from_logits=False)
    assert result == {"is_mean": pytest.approx(3.0), "is_std": pytest.approx(2.0)}


def test_inception_score_from_logits_equals_from_probabilities():
    logits = np.random.default_rng(13).standard_normal((30, 7)) * 3.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert scores.inception_score(logits, 3) == pytest.approx(
        scores.inception_score(probs, 3, from_logits=False)
    )
    with pytest.raises(ValueError, match="from_logits"):
        scores.inception_score(logits, 3, from_logits=False)


def test_class_coverage_on_known_histograms():
    balanced = scores.class_coverage(np.arange(100) % 10, 10)
    assert balanced == {"classes": 10, "kl_from_uniform": pytest.approx(0.0)}
    collapsed = scores.class_coverage(np.full(50, 3), 10)
    assert collapsed == {"classes": 1, "kl_from_uniform": pytest.approx(math.log(10))}
    half = scores.class_coverage(np.array([0, 0, 1, 1]), 4)  # p = (1/2, 1/2, 0, 0).
    assert half == {"classes": 2, "kl_from_uniform": pytest.approx(math.log(2))}
    sparse = np.array([0] * 30 + [1] * 30 + [2] * 2)
    assert scores.class_coverage(sparse, 3, min_count=5)["classes"] == 2
    with pytest.raises(ValueError, match="lie in"):
        scores.class_coverage(np.array([0, 10]), 10)


@pytest.mark.parametrize("n, seed", [(2, 0), (5, 1), (7, 2), (7, 3)])
def test_wasserstein_1_equals_brute_force_over_permutations(n, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal((n, 2)), rng.standard_normal((n, 2)) * 2.0 + 0.5
    cost = np.linalg.norm(a[:, None] - b[None], axis=-1)
    perms = np.array(list(itertools.permutations(range(n))))
    brute = cost[np.arange(n), perms].sum(axis=1).min() / n
    assert transport.wasserstein_1(a, b) == pytest.approx(brute, rel=1e-12)


def test_wasserstein_1_of_a_translate_is_the_shift_length():
    a = np.random.default_rng(14).standard_normal((200, 2))
    shift = np.array([0.3, -0.4])
    assert transport.wasserstein_1(a, a + shift) == pytest.approx(0.5, rel=1e-9)
    assert transport.wasserstein_1(a, a[::-1]) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="one shape"):
        transport.wasserstein_1(a, a[:10])
