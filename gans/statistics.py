"""Statistics over seeds for the reproduction tables: a summary with an interval, and best-of-k.

Every table of ``experiments/paper/`` reports a score (digits-FID, modes captured...) measured
once per seed. `summarize` turns those few values into the mean, the sample standard deviation
and a percentile-bootstrap confidence interval of the mean, reproducible from a seed;
`best_of_k` gives the expected best score of a budget of k runs (Lucic et al., 2018, "Are GANs
Created Equal? A Large-Scale Study"), exactly, from the n runs measured. Both are plain numpy /
scipy functions of a 1-D array of per-run values, computed in float64.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

# Elements of one batch of bootstrap resamples, so a long input does not hold all of them at once.
_BATCH_ELEMENTS = 2**22


@dataclasses.dataclass(frozen=True)
class Summary:
    """The statistics of one table cell: n finite values, and how many non-finite were dropped.

    Attributes:
      mean: Mean of the finite values; of all values (inf or nan) when none is finite.
      std: Sample standard deviation (ddof 1) of the finite values; 0 for a single one.
      low: Lower bound of the bootstrap confidence interval of the mean.
      high: Upper bound of that interval.
      n: Number of finite values the statistics are of.
      infinite: Number of values dropped as +inf or -inf (e.g. a diverged run's FID).
      nans: Number of values dropped as nan.
    """

    mean: float
    std: float
    low: float
    high: float
    n: int
    infinite: int = 0
    nans: int = 0

    @property
    def missing(self) -> int:
        """Number of non-finite values dropped."""
        return self.infinite + self.nans

    def format(self, digits: int = 1, scale: float = 1.0) -> str:
        """``"mean ± std [low, high]"``, e.g. ``"7.2 ± 0.4 [6.8, 7.6]"``, values times ``scale``.

        Dropped values follow in parentheses, ``"7.2 ± 0.4 [6.8, 7.6] (1 inf)"``; with no finite
        value the text is the mean of them all, ``"inf"`` or ``"nan"``.
        """
        if digits < 0:
            raise ValueError(f"digits must be >= 0, got {digits}.")
        if self.n == 0:
            return f"{self.mean * scale:.{digits}f}"
        low, high = sorted((self.low * scale, self.high * scale))
        text = (
            f"{self.mean * scale:.{digits}f} ± {self.std * abs(scale):.{digits}f} "
            f"[{low:.{digits}f}, {high:.{digits}f}]"
        )
        counts = ((self.infinite, "inf"), (self.nans, "nan"))
        dropped = [f"{count} {kind}" for count, kind in counts if count]
        return text + (f" ({', '.join(dropped)})" if dropped else "")


def summarize(
    values: ArrayLike, *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Summary:
    """Mean, sample std and a percentile-bootstrap confidence interval of the mean of ``values``.

    The interval is the percentile bootstrap (Efron and Tibshirani, 1993, ch. 13): the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the means of ``resamples``
    resamples of the values drawn with replacement, by ``scipy.stats.bootstrap`` with the
    generator ``np.random.default_rng(seed)``, so a table redrawn from the same values shows the
    same interval. Percentile rather than scipy's default BCa: BCa's acceleration is a jackknife
    estimate that is unstable, or undefined (nan, with a warning), for the 3 to 5 seeds these
    tables have. With so few values any bootstrap interval is narrow (it cannot reach beyond the
    smallest and largest value, and covers the mean less often than ``confidence``): read it as
    a guide to the seed-to-seed uncertainty, not an exact interval.

    The std is the sample standard deviation sqrt(sum_i (x_i - mean)^2 / (n - 1)) (ddof 1), an
    estimate of the spread of the runs one would get from new seeds; ddof 0 describes the n runs
    themselves and understates that spread by sqrt((n - 1) / n), 18 % at n = 3.

    Degenerate inputs: non-finite values (a diverged run) are dropped and counted in
    ``infinite`` and ``nans``; a single finite value, or all equal, has std 0 and the value
    itself as both bounds (where scipy would return nan and warn); with no finite value, every
    statistic is the mean of all values (inf or nan) and ``n`` is 0.

    Args:
      values: One value per run, a 1-D sequence.
      confidence: Confidence level of the interval, in (0, 1).
      resamples: Number of bootstrap resamples, >= 1.
      seed: Seed of the numpy generator that draws the resamples.

    Returns:
      The `Summary`.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-D sequence, one value per run, got {values.shape}.")
    if not len(values):
        raise ValueError("values is empty: give at least one value to summarize.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence}.")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}; the tables use 10,000.")
    finite = values[np.isfinite(values)]
    infinite, nans = int(np.isinf(values).sum()), int(np.isnan(values).sum())
    if not len(finite):
        with np.errstate(invalid="ignore"):  # inf and -inf together: their mean is nan.
            everything = float(np.mean(values))
        return Summary(everything, float("nan"), everything, everything, 0, infinite, nans)
    if np.all(finite == finite[0]):
        value = float(finite[0])
        return Summary(value, 0.0, value, value, len(finite), infinite, nans)
    result = scipy.stats.bootstrap(
        (finite,),
        np.mean,
        n_resamples=resamples,
        batch=max(1, _BATCH_ELEMENTS // len(finite)),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        # `random_state` takes a Generator on every scipy the project admits (>= 1.13); `rng`,
        # its newer name, appeared in 1.15.
        random_state=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return Summary(
        float(finite.mean()),
        float(finite.std(ddof=1)),
        float(interval.low),
        float(interval.high),
        len(finite),
        infinite,
        nans,
    )


def best_of_k(
    values: ArrayLike, k_values: Sequence[int] | None = None, *, lower_is_better: bool = True
) -> dict[int, float]:
    """Expected best value of k runs drawn without replacement from the n runs measured.

    Lucic et al. (2018), "Are GANs Created Equal?", Fig. 4: the best FID one can expect from a
    budget of k runs. With the values sorted best first, v_(1) <= ... <= v_(n) (>= when higher
    is better), the best of a uniformly drawn k-subset is v_(i) when the subset holds run i and
    k - 1 of the n - i runs worse than it, so

        E[best of k] = sum_{i=1}^{n} v_(i) C(n - i, k - 1) / C(n, k),

    exact, the mean over all C(n, k) subsets, with no resampling. k = 1 gives the mean of the
    values, k = n the best one. Ties do not matter (tied runs have one value). An infinite value
    (a diverged run's FID) counts as the worst (or best) value it is: it makes the expectation
    infinite wherever it can be the best of a subset, and has weight 0 elsewhere.

    Args:
      values: One value per run, a 1-D sequence of n values, none nan.
      k_values: Budgets k to evaluate, each in [1, n]; default every k from 1 to n.
      lower_is_better: Whether the best value is the smallest (FID) or the largest (modes).

    Returns:
      The expected best value of each k, by k in the order given.
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be a 1-D sequence, one value per run, got {values.shape}.")
    n = len(values)
    if not n:
        raise ValueError("values is empty: give at least one run's value.")
    if np.isnan(values).any():
        raise ValueError(
            f"values holds {int(np.isnan(values).sum())} nan; the best of k is undefined where a "
            "run has no value: drop those runs, or give a diverged run inf (the worst FID)."
        )
    ks = list(range(1, n + 1)) if k_values is None else [int(k) for k in k_values]
    outside = [k for k in ks if not 1 <= k <= n]
    if outside:
        raise ValueError(f"every k must be in [1, n] = [1, {n}], got {outside[0]}.")
    ordered = np.sort(values) if lower_is_better else np.sort(values)[::-1]
    expected = {}
    for k in ks:
        total = math.comb(n, k)
        # Python integers, so C(n, k) is exact for any n; skipping weight-0 terms keeps an
        # infinite value that can never be the best from turning the sum into inf * 0 = nan.
        expected[k] = float(
            sum(
                value * (math.comb(n - i, k - 1) / total)
                for i, value in enumerate(ordered.tolist(), start=1)
                if math.comb(n - i, k - 1)
            )
        )
    return expected
