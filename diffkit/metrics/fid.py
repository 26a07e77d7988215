"""Fréchet distance between two feature sets.

:func:`frechet_distance_from_stats` is torch-fidelity's ``metric_fid.py`` formula (float64 covariance,
no scipy ``sqrtm``, no eps) with ``tr sqrt(sigma1 sigma2)`` computed from symmetric eigenproblems
(:func:`trace_sqrt_product`) instead of the non-symmetric ``eigvals``: the same number to float
rounding, about 10x faster at 2048 features.

The bootstrap and the subset curve need dozens of FIDs; :class:`FastFrechet` computes the same
quantity through factors: with ``sigma = F F^T``, ``tr sqrt(sigma1 sigma2)`` is the nuclear norm of
``F2^T F1``, which for N < 2048 is a small N x N problem instead of a 2048 x 2048 eigenproblem.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GaussianStats:
    mu: np.ndarray
    sigma: np.ndarray
    n: int


def feature_statistics(features: np.ndarray) -> GaussianStats:
    """Mean and unbiased covariance (rows are samples), as torch-fidelity's fid_features_to_statistics."""
    features = np.asarray(features)
    return GaussianStats(np.mean(features, axis=0), np.cov(features, rowvar=False), len(features))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(sigma1 sigma2)`` for covariance matrices, through symmetric problems only.

    With ``sigma1 = L L^T``, ``sigma1 sigma2`` is similar to ``L^T sigma2 L`` (symmetric, PSD), so its
    eigenvalues, and their square roots' sum, are those of a symmetric matrix: one Cholesky factor and
    one ``eigvalsh`` instead of torch-fidelity's non-symmetric ``eigvals`` (about 10x faster at
    D = 2048; equal to float rounding). A singular ``sigma1`` (fewer samples than dimensions) has no
    Cholesky factor; its symmetric square root from ``eigh`` plays the role of ``L``.
    """
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    try:
        factor = np.linalg.cholesky(sigma1)
    except np.linalg.LinAlgError:
        values, vectors = np.linalg.eigh(sigma1)
        factor = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = factor.T @ sigma2 @ factor
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrise away rounding asymmetry
    return float(np.sqrt(np.clip(eigenvalues, 0, None)).sum())


def frechet_distance_from_stats(stats1: GaussianStats, stats2: GaussianStats) -> float:
    """torch-fidelity's FID formula; the trace term through :func:`trace_sqrt_product`."""
    diff = stats1.mu - stats2.mu
    tr_covmean = trace_sqrt_product(stats1.sigma, stats2.sigma)
    return float(diff.dot(diff) + np.trace(stats1.sigma) + np.trace(stats2.sigma) - 2 * tr_covmean)


def frechet_distance(
    features1: np.ndarray, features2: np.ndarray, reference: FastFrechet | None = None
) -> float:
    """FID between two (N, D) feature arrays.

    ``reference``: ``FastFrechet(features2)``, made once by a caller that compares many generated sets
    with one reference (evaluation during training), so its factor is not recomputed on every call.

    With more than D samples on both sides this is torch-fidelity 0.4.0's formula with the symmetric
    trace (:func:`trace_sqrt_product`).
    With fewer (a rank-deficient covariance, the usual case below 2048 images) the D x D eigenproblem
    is mostly numerical zeros: the factored route gives the same value (the tests hold it to 1e-6 of
    torch-fidelity) without them, in a fraction of a second instead of 10-40 s on a CPU.
    """
    if min(len(features1), len(features2)) <= np.shape(features1)[1]:
        # the mean term exactly as torch-fidelity forms it (mean in the features' own dtype)
        diff = np.mean(features1, axis=0) - np.mean(features2, axis=0)
        frechet = reference if reference is not None else FastFrechet(features2)
        return float(diff.dot(diff)) + frechet.covariance_terms(features1)
    return frechet_distance_from_stats(feature_statistics(features1), feature_statistics(features2))


def frechet_distance_to_stats(
    features: np.ndarray, stats: GaussianStats, reference: FastFrechet | None = None
) -> float:
    """FID between (N, D) features and a reference known only by its statistics.

    The same routes as :func:`frechet_distance` with the reference's features: so a statistics file
    gives the FID its folder gives (``tests/test_eval_stats.py`` holds them to 1e-6).
    """
    if len(features) <= np.shape(features)[1]:
        diff = np.mean(features, axis=0) - stats.mu
        frechet = reference if reference is not None else FastFrechet.from_stats(stats)
        return float(diff.dot(diff)) + frechet.covariance_terms(features)
    return frechet_distance_from_stats(feature_statistics(features), stats)


def covariance_factor(
    features: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(mean, F) with ``cov = F @ F.T`` (unbiased); ``weights`` are bootstrap multiplicities.

    F has one column per distinct sample when there are at most D of them; otherwise it is the
    symmetric square root of the D x D covariance (via eigh), so it never has more than D columns.
    """
    x = np.asarray(features, dtype=np.float64)
    if weights is None:
        weights = np.ones(len(x))
    keep = weights > 0
    x, w = x[keep], weights[keep].astype(np.float64)
    n = w.sum()
    mu = (w[:, None] * x).sum(axis=0) / n
    centred = (x - mu) * np.sqrt(w / (n - 1))[:, None]
    if centred.shape[0] <= centred.shape[1]:
        return mu, centred.T
    sigma = centred.T @ centred
    values, vectors = np.linalg.eigh(sigma)
    return mu, (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def _nuclear_norm(matrix: np.ndarray) -> float:
    small = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(small), 0, None)).sum())


class FastFrechet:
    """Many FIDs of generated (sub)sets against one fixed reference set (its features or its statistics)."""

    def __init__(self, reference: np.ndarray):
        self.mu_ref, self.factor_ref = covariance_factor(reference)
        self.trace_ref = float((self.factor_ref**2).sum())

    @classmethod
    def from_stats(cls, stats: GaussianStats) -> FastFrechet:
        """The reference as a mean and covariance only (a statistics file), no features.

        ``F = V sqrt(L)`` over the covariance's eigenpairs gives ``F F^T = sigma``; the nuclear norm of
        ``F^T G`` equals that of the features' own centred factor, so FIDs agree with the folder's.
        Eigenvalues that are rounding noise (a rank-deficient covariance) are dropped: each would add
        a spurious square root.
        """
        sigma = np.asarray(stats.sigma, dtype=np.float64)
        values, vectors = np.linalg.eigh((sigma + sigma.T) / 2)
        keep = values > max(float(values[-1]), 0.0) * len(values) * np.finfo(np.float64).eps
        self = cls.__new__(cls)
        self.mu_ref = np.asarray(stats.mu, dtype=np.float64)
        self.factor_ref = vectors[:, keep] * np.sqrt(values[keep])
        self.trace_ref = float(np.trace(sigma))
        return self

    def __call__(self, generated: np.ndarray, weights: np.ndarray | None = None) -> float:
        mu, factor = covariance_factor(generated, weights)
        diff = mu - self.mu_ref
        return float(diff @ diff) + self._covariance_terms(factor)

    def covariance_terms(self, generated: np.ndarray) -> float:
        """``tr(sigma1) + tr(sigma2) - 2 tr sqrt(sigma1 sigma2)``: FID without the mean term."""
        return self._covariance_terms(covariance_factor(generated)[1])

    def _covariance_terms(self, factor: np.ndarray) -> float:
        cross = _nuclear_norm(self.factor_ref.T @ factor)
        return float((factor**2).sum() + self.trace_ref - 2 * cross)
