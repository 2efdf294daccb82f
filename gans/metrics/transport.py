"""Exact Wasserstein-1 distance between two equal-size sample sets, by optimal transport."""

from __future__ import annotations

import numpy as np
import scipy.optimize
import scipy.spatial.distance


def wasserstein_1(a: np.ndarray, b: np.ndarray) -> float:
    """Exact W1 between the empirical distributions of two ``[N, D]`` sets of N points each.

    W1(a, b) = min_{pi in Pi(a, b)} sum_ij pi_ij ||a_i - b_j||. With uniform weights 1/N on both
    sides, the transport polytope's vertices are permutation matrices divided by N (Birkhoff-von
    Neumann), so the optimum is an assignment:

        W1 = (1 / N) min_sigma sum_i ||a_i - b_sigma(i)||,

    solved exactly by ``scipy.optimize.linear_sum_assignment`` on the Euclidean cost matrix in
    O(N^3) time (half a second for N = 2,000 on a CPU). It is the quantity a WGAN critic estimates
    (Arjovsky et al., 2017), here without a critic, for 2-D toy distributions.

    Args:
      a: ``[N, D]`` points, e.g. real samples.
      b: ``[N, D]`` points, e.g. generated samples.

    Returns:
      The distance, a float >= 0.
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.ndim != 2 or a.shape != b.shape or len(a) == 0:
        raise ValueError(
            f"a and b must be non-empty [N, D] arrays of one shape, got {a.shape} and {b.shape}."
        )
    cost = scipy.spatial.distance.cdist(a, b)
    rows, cols = scipy.optimize.linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())
