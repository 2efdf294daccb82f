"""The tables' statistics against closed forms: normal-theory intervals, and best-of-k by brute force."""

import itertools
import math
import warnings

import numpy as np
import pytest

from gans import statistics


def test_the_interval_of_a_normal_sample_covers_mu_with_the_normal_theory_width():
    mu, sigma, n = 3.0, 2.0, 200
    values = np.random.default_rng(1).normal(mu, sigma, n)
    summary = statistics.summarize(values)
    assert summary.low < mu < summary.high
    assert summary.mean == pytest.approx(values.mean())
    assert summary.std == pytest.approx(values.std(ddof=1))
    width = summary.high - summary.low
    # The bootstrap means have std s / sqrt(n) (s with ddof 0), so the percentile interval is
    # 2 * 1.96 * s / sqrt(n) wide up to the Monte-Carlo error of its two quantiles: about 1 %
    # of the width at 10,000 resamples (sqrt(p (1 - p) / B) / phi(1.96) = 0.027 bootstrap stds
    # per quantile), and less from the sample's skewness at n = 200: 5 % is ~4 such errors.
    assert width == pytest.approx(2 * 1.96 * values.std() / math.sqrt(n), rel=0.05)
    # Against the true sigma, s / sigma itself varies by 1 / sqrt(2 n) = 5 %: 15 % is 3 of those.
    assert width == pytest.approx(2 * 1.96 * sigma / math.sqrt(n), rel=0.15)


def test_the_interval_covers_the_true_mean_about_as_often_as_its_confidence():
    # 400 samples of 50 normal values: the percentile interval of the mean covers mu with
    # probability P(|t_49| < 1.96 sqrt(49 / 50)) = 0.942 (it is the z-interval with s of ddof 0),
    # and 400 repetitions estimate that to 1.2 % (one std): [0.91, 0.98] is about 3 stds wide.
    rng = np.random.default_rng(2)
    samples = rng.normal(-1.0, 0.5, (400, 50))
    summaries = [statistics.summarize(s, resamples=2000, seed=k) for k, s in enumerate(samples)]
    covered = [summary.low < -1.0 < summary.high for summary in summaries]
    assert 0.91 <= np.mean(covered) <= 0.98


def test_a_seed_reproduces_the_interval_and_another_seed_draws_other_resamples():
    values = [7.1, 6.5, 7.9, 7.4]
    assert statistics.summarize(values, seed=3) == statistics.summarize(values, seed=3)
    # Four values have few distinct resample means, so two seeds often agree; thirty do not.
    many = np.random.default_rng(0).normal(size=30)
    assert statistics.summarize(many, seed=3) == statistics.summarize(many, seed=3)
    assert statistics.summarize(many, seed=3).low != statistics.summarize(many, seed=4).low
    narrow = statistics.summarize(values, confidence=0.5)
    wide = statistics.summarize(values, confidence=0.99)
    assert wide.low <= narrow.low < narrow.high <= wide.high
    assert min(values) <= wide.low and wide.high <= max(values)


def test_format_gives_mean_std_and_interval_scaled_and_dropped_values_counted():
    summary = statistics.Summary(mean=7.24, std=0.41, low=6.8, high=7.63, n=4)
    assert summary.format() == "7.2 ± 0.4 [6.8, 7.6]"
    assert summary.format(digits=2, scale=10.0) == "72.40 ± 4.10 [68.00, 76.30]"
    dropped = statistics.summarize([1.0, 2.0, np.inf, 3.0, np.nan, -np.inf])
    assert (dropped.n, dropped.infinite, dropped.nans, dropped.missing) == (3, 2, 1, 3)
    assert dropped.mean == 2.0 and dropped.std == 1.0
    assert dropped.format().endswith(" (2 inf, 1 nan)")
    assert statistics.summarize([5.0, np.inf]).format() == "5.0 ± 0.0 [5.0, 5.0] (1 inf)"


def test_degenerate_inputs_give_the_value_itself_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        single = statistics.summarize([4.25])
        equal = statistics.summarize([0.1, 0.1, 0.1])
        infinite = statistics.summarize([np.inf, np.inf])
        undefined = statistics.summarize([np.inf, -np.inf, np.nan])
    assert single == statistics.Summary(4.25, 0.0, 4.25, 4.25, 1)
    assert equal == statistics.Summary(0.1, 0.0, 0.1, 0.1, 3)
    assert (infinite.n, infinite.infinite, infinite.format()) == (0, 2, "inf")
    assert (undefined.n, undefined.missing, undefined.format(digits=2)) == (0, 3, "nan")


def test_invalid_arguments_are_refused_with_what_to_give():
    with pytest.raises(ValueError, match="values is empty"):
        statistics.summarize([])
    with pytest.raises(ValueError, match="1-D sequence"):
        statistics.summarize([[1.0, 2.0]])
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\)"):
        statistics.summarize([1.0, 2.0], confidence=95)
    with pytest.raises(ValueError, match="resamples must be >= 1"):
        statistics.summarize([1.0, 2.0], resamples=0)


def _brute_force_best_of_k(values, k, lower_is_better):
    pick = min if lower_is_better else max
    subsets = list(itertools.combinations(values, k))
    return sum(pick(subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("lower_is_better", [True, False])
def test_best_of_k_is_the_mean_of_the_best_over_every_subset(lower_is_better):
    rng = np.random.default_rng(0)
    for n in range(1, 8):
        values = rng.normal(50.0, 20.0, n).round(1)
        if n > 3:
            values[1] = values[3]  # A tie.
        expected = statistics.best_of_k(values, lower_is_better=lower_is_better)
        assert list(expected) == list(range(1, n + 1))
        for k, value in expected.items():
            assert value == pytest.approx(_brute_force_best_of_k(values, k, lower_is_better))
        best = values.min() if lower_is_better else values.max()
        assert expected[1] == pytest.approx(values.mean()) and expected[n] == best
        # A larger budget can only do better.
        steps = np.diff(list(expected.values()))
        assert np.all(steps <= 1e-12) if lower_is_better else np.all(steps >= -1e-12)


def test_best_of_k_takes_chosen_budgets_and_a_diverged_run_as_the_worst():
    assert statistics.best_of_k([3.0, 1.0, 2.0], [3, 1]) == {3: 1.0, 1: 2.0}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        diverged = statistics.best_of_k([1.0, 2.0, np.inf])
    assert diverged == {1: np.inf, 2: pytest.approx(4 / 3), 3: 1.0}
    assert diverged[2] == pytest.approx(_brute_force_best_of_k([1.0, 2.0, np.inf], 2, True))


def test_best_of_k_refuses_nan_empty_input_and_budgets_beyond_the_runs():
    with pytest.raises(ValueError, match="1 nan; the best of k is undefined"):
        statistics.best_of_k([1.0, np.nan])
    with pytest.raises(ValueError, match="values is empty"):
        statistics.best_of_k([])
    with pytest.raises(ValueError, match=r"every k must be in \[1, n\] = \[1, 2\], got 3"):
        statistics.best_of_k([1.0, 2.0], [1, 3])
