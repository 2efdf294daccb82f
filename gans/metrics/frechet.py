"""Distances between two sets of features: Frechet distance (FID) and kernel distance (KID).

Both compare a real and a generated sample through a fixed feature extractor (Inception-v3's
pool3 for standard datasets, `gans.metrics.digits_classifier` for the digits). They are plain
numpy/scipy functions of ``[N, D]`` feature arrays, computed in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg

# Eigenvalues of a covariance below -this x its largest are not round-off: not PSD.
_NEGATIVE_TOLERANCE = 1e-8


def feature_moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (ddof 1) of ``[N, D]`` features."""
    features = as_features(features, "features")
    if len(features) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {len(features)}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance_from_moments(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)),

    the squared Wasserstein-2 distance between the two Gaussians (Dowson and Landau, 1982), used
    as FID by Heusel et al. (2017), "GANs trained by a two time-scale update rule converge to a
    local Nash equilibrium". The trace of the square root is computed as

        Tr (sigma1 sigma2)^(1/2) = sum_i sqrt(lambda_i(sigma1^(1/2) sigma2 sigma1^(1/2))),

    since ``sigma1 sigma2`` and the symmetric PSD ``sigma1^(1/2) sigma2 sigma1^(1/2)`` share their
    non-zero eigenvalues, with ``scipy.linalg.eigh`` in float64. Where pytorch-fid's
    ``scipy.linalg.sqrtm(sigma1 @ sigma2)`` is accurate (full-rank covariances) the two agree to
    round-off; with fewer samples than feature dimensions (singular covariances) ``sqrtm``
    leaves imaginary parts that depend on the BLAS build, and this form stays exact.

    Args:
      mu1: Mean of the first set, ``[D]``.
      sigma1: Covariance of the first set, ``[D, D]``.
      mu2: Mean of the second set, ``[D]``.
      sigma2: Covariance of the second set, ``[D, D]``.

    Returns:
      The squared distance d^2 (what papers report as FID), a float >= 0 up to round-off.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"means must be two [D] vectors, got shapes {mu1.shape} and {mu2.shape}.")
    dim = mu1.shape[0]
    if sigma1.shape != (dim, dim) or sigma2.shape != (dim, dim):
        raise ValueError(
            f"covariances must be [{dim}, {dim}] to match the means, got {sigma1.shape} and "
            f"{sigma2.shape}."
        )
    values, vectors = _psd_eigh(sigma1, "sigma1")
    _psd_eigh(sigma2, "sigma2")
    root1 = (vectors * np.sqrt(values)) @ vectors.T
    product = scipy.linalg.eigh(root1 @ sigma2 @ root1, eigvals_only=True)
    trace_covmean = np.sqrt(np.clip(product, 0.0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_covmean)


def _psd_eigh(sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (round-off negatives set to 0) and eigenvectors of a covariance.

    Raises:
      ValueError: ``sigma`` is not symmetric positive semi-definite.
    """
    if not np.allclose(sigma, sigma.T, rtol=1e-8, atol=1e-12):
        raise ValueError(f"{name} must be a symmetric covariance matrix.")
    values, vectors = scipy.linalg.eigh(sigma)
    if values.min(initial=0.0) < -_NEGATIVE_TOLERANCE * max(values.max(initial=0.0), 1e-300):
        raise ValueError(
            f"{name} has a negative eigenvalue ({values.min():.3g}): a covariance must be "
            "positive semi-definite."
        )
    return np.clip(values, 0.0, None), vectors


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID-style Frechet distance between two feature sets, from their means and covariances.

    Each set is summarised by a Gaussian with its sample mean and unbiased covariance, then
    d^2 = ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) (Heusel et al., 2017); see
    `frechet_distance_from_moments`. The estimate is biased upwards for finite N (the bias
    grows like D / N), so compare only values computed with the same sample sizes.

    Args:
      features_a: ``[N_a, D]`` features, e.g. of real images.
      features_b: ``[N_b, D]`` features, e.g. of generated images.

    Returns:
      The squared Frechet distance, a float.
    """
    mu_a, sigma_a = feature_moments(features_a)
    mu_b, sigma_b = feature_moments(features_b)
    return frechet_distance_from_moments(mu_a, sigma_a, mu_b, sigma_b)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x.y / D + 1)^3 between rows of ``[N, D]`` and ``[M, D]``."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 with `polynomial_kernel` (the U-statistic of Gretton et al.).

    MMD^2_u = sum_{i != j} k(a_i, a_j) / (m (m - 1)) + sum_{i != j} k(b_i, b_j) / (n (n - 1))
              - 2 sum_{i, j} k(a_i, b_j) / (m n).

    It may be negative when the two distributions are equal.
    """
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    m, n = len(a), len(b)
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}.")
    k_aa, k_bb, k_ab = polynomial_kernel(a, a), polynomial_kernel(b, b), polynomial_kernel(a, b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def kernel_inception_distance(
    features_a: np.ndarray,
    features_b: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Kernel Inception Distance (Binkowski et al., 2018, "Demystifying MMD GANs").

    The unbiased MMD^2 (`mmd2_unbiased`) with the cubic polynomial kernel
    k(x, y) = (x.y / D + 1)^3, averaged over ``num_subsets`` pairs of random subsets of
    ``subset_size`` examples, each drawn without replacement from its set (the protocol of the
    paper's code and of torch-fidelity). Unlike FID the estimate is unbiased, so its expected
    value is 0 when both sets come from one distribution, and single subsets can be negative.

    Args:
      features_a: ``[N_a, D]`` features.
      features_b: ``[N_b, D]`` features.
      num_subsets: Number of subset pairs to average over.
      subset_size: Examples per subset; at most min(N_a, N_b).
      seed: Seed of the numpy generator that draws the subsets.

    Returns:
      ``kid_mean`` and ``kid_std``, the mean and standard deviation of MMD^2 over subsets.
    """
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature sizes differ: {a.shape[1]} and {b.shape[1]}.")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}.")
    if not 2 <= subset_size <= min(len(a), len(b)):
        raise ValueError(
            f"subset_size must be in [2, min(N_a, N_b)] = [2, {min(len(a), len(b))}], "
            f"got {subset_size}."
        )
    rng = np.random.default_rng(seed)
    values = np.array(
        [
            mmd2_unbiased(
                a[rng.choice(len(a), subset_size, replace=False)],
                b[rng.choice(len(b), subset_size, replace=False)],
            )
            for _ in range(num_subsets)
        ]
    )
    return {"kid_mean": float(values.mean()), "kid_std": float(values.std())}


def as_features(features: np.ndarray, name: str = "features") -> np.ndarray:
    """``features`` as a finite float64 ``[N, D]`` array; raises ``ValueError`` otherwise."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be [N, D], got shape {features.shape}.")
    if not np.isfinite(features).all():
        raise ValueError(f"{name} holds non-finite values.")
    return features
