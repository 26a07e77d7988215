"""Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets.

:func:`kernel_distance` follows torch-fidelity's ``metric_kid.py`` (kernel ``(x.y/d + 1)^3``,
``np.random.RandomState(seed)`` drawing the two subsets in the same order), so both agree exactly on
the same features. :func:`kid_bootstrap` resamples the generated set with weights instead of copies
and leaves pairs of a sample with itself out, which keeps the estimator unbiased under resampling.
"""

from __future__ import annotations

import numpy as np

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000
TORCH_FIDELITY_SEED = 2020


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (np.matmul(x, y.T) * (1.0 / x.shape[1]) + 1) ** 3


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    kt_xx_sum = (k_xx.sum(axis=1) - np.diagonal(k_xx)).sum()
    kt_yy_sum = (k_yy.sum(axis=1) - np.diagonal(k_yy)).sum()
    k_xy_sum = k_xy.sum(axis=0).sum()
    return float((kt_xx_sum + kt_yy_sum) / (m * (m - 1)) - 2 * k_xy_sum / (m * m))


def kernel_distance(
    features1: np.ndarray,
    features2: np.ndarray,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = TORCH_FIDELITY_SEED,
) -> tuple[float, float, np.ndarray]:
    """(mean, std, per-subset values) of KID; ``subset_size`` must not exceed either set."""
    n1, n2 = len(features1), len(features2)
    if subset_size > min(n1, n2):
        raise ValueError(f"KID subset size {subset_size} is larger than a feature set ({n1}, {n2})")
    rng = np.random.RandomState(seed)
    values = np.zeros(subsets)
    for index in range(subsets):
        x = features1[rng.choice(n1, subset_size, replace=False)]
        y = features2[rng.choice(n2, subset_size, replace=False)]
        values[index] = mmd2_unbiased(
            polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y)
        )
    return float(np.mean(values)), float(np.std(values)), values


def kid_bootstrap(
    generated: np.ndarray, reference: np.ndarray, replicates: int, seed: int, max_points: int = 4000
) -> np.ndarray:
    """Bootstrap replicates of the full-set unbiased MMD^2, resampling the generated set.

    Kernel matrices are built once (on at most ``max_points`` images per side); each replicate only
    reweights them with multiplicities ``c``: sum over pairs of distinct draws that are not the same
    image = ``c K c - sum c_i^2 K_ii``.
    """
    rng = np.random.default_rng(seed)
    x = generated.astype(np.float64)
    y = reference.astype(np.float64)
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    if len(y) > max_points:
        y = y[rng.choice(len(y), max_points, replace=False)]
    k_xx, k_xy = polynomial_kernel(x, x), polynomial_kernel(x, y)
    k_yy = polynomial_kernel(y, y)
    m = len(y)
    yy_term = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    xy_row = k_xy.mean(axis=1)  # mean kernel of each generated sample against the reference
    diag_xx = np.diagonal(k_xx)
    n = len(x)
    out = np.empty(replicates)
    for index in range(replicates):
        counts = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        pairs = counts.sum() ** 2 - (counts**2).sum()
        xx_term = (counts @ k_xx @ counts - (counts**2 * diag_xx).sum()) / pairs
        out[index] = xx_term + yy_term - 2 * (counts @ xy_row) / counts.sum()
    return out
