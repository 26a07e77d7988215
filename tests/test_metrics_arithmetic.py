"""diffkit's FID / KID / IS / PRC arithmetic equals independent numpy/scipy code and torch-fidelity's own
functions on synthetic feature sets; the bootstrap and FID-infinity helpers behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import scipy.stats
import torch
from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric
from torch_fidelity.metric_prc import prc_features_to_metric

from diffkit.metrics.caveats import (
    fid_bootstrap,
    fid_curve,
    kid_caveats,
    kid_subset_size,
    percentile_interval,
    subset_sizes,
)
from diffkit.metrics.fid import FastFrechet, frechet_distance
from diffkit.metrics.inception_score import inception_score
from diffkit.metrics.kid import kernel_distance, kid_bootstrap
from diffkit.metrics.prc import precision_recall

REL = 1e-6


def _features(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(d, d)) / np.sqrt(d)
    # ReLU-like non-negative features with correlated dimensions, like Inception pool3
    return np.abs(rng.normal(size=(n, d)) @ mixing * scale + shift).astype(np.float32)


def _fid_scipy(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook FID with scipy's matrix square root, written independently of diffkit."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = (a - mu_a).T @ (a - mu_a) / (len(a) - 1)
    cov_b = (b - mu_b).T @ (b - mu_b) / (len(b) - 1)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root))


def _tf_fid(a: np.ndarray, b: np.ndarray) -> float:
    stats_a = fid_features_to_statistics(torch.from_numpy(a))
    stats_b = fid_features_to_statistics(torch.from_numpy(b))
    return fid_statistics_to_metric(stats_a, stats_b, False)["frechet_inception_distance"]


@pytest.mark.parametrize(
    ("n", "m", "d"), [(400, 500, 48), (40, 60, 128)], ids=["full-rank", "rank-deficient"]
)
def test_fid_equals_scipy_and_torch_fidelity(n, m, d):
    gen, ref = _features(1, n, d, shift=0.3), _features(2, m, d)
    ours = frechet_distance(gen, ref)
    assert ours > 1.0  # the sets differ: a comparison of ~0 values could not fail
    assert ours == pytest.approx(_fid_scipy(gen, ref), rel=REL)
    assert ours == pytest.approx(_tf_fid(gen, ref), rel=REL)


def test_fast_frechet_matches_exact_including_rank_deficient_and_weights():
    ref = _features(3, 90, 128)  # M < D: rank-deficient reference covariance
    gen = _features(4, 60, 128, shift=0.2)
    fast = FastFrechet(ref)
    assert fast(gen) == pytest.approx(_tf_fid(gen, ref), rel=REL)
    big_ref = _features(5, 400, 64)  # M > D: factor through the symmetric square root
    gen64 = _features(6, 200, 64, shift=0.1)
    assert FastFrechet(big_ref)(gen64) == pytest.approx(_tf_fid(gen64, big_ref), rel=REL)
    counts = np.random.default_rng(0).integers(0, 3, len(gen64)).astype(np.float64)
    repeated = np.repeat(gen64, counts.astype(int), axis=0)  # weights == literal repetition
    assert FastFrechet(big_ref)(gen64, counts) == pytest.approx(_tf_fid(repeated, big_ref), rel=REL)


def _cubic_kernel(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p @ q.T / p.shape[1] + 1.0) ** 3


def _kid_numpy(a: np.ndarray, b: np.ndarray, subsets: int, size: int, seed: int) -> float:
    """Unbiased MMD^2 with explicit off-diagonal masks, the same subset draws as torch-fidelity."""
    rng = np.random.RandomState(seed)
    values = []
    for _ in range(subsets):
        x = a[rng.choice(len(a), size, replace=False)].astype(np.float64)
        y = b[rng.choice(len(b), size, replace=False)].astype(np.float64)
        off = ~np.eye(size, dtype=bool)
        values.append(
            _cubic_kernel(x, x)[off].mean() + _cubic_kernel(y, y)[off].mean() - 2 * _cubic_kernel(x, y).mean()
        )
    return float(np.mean(values))


def test_kid_equals_numpy_and_torch_fidelity():
    gen, ref = _features(7, 150, 32, shift=0.5), _features(8, 180, 32)
    mean, std, values = kernel_distance(gen, ref, subsets=20, subset_size=100, seed=2020)
    assert mean > 1e-3 and len(values) == 20
    assert mean == pytest.approx(_kid_numpy(gen, ref, 20, 100, 2020), rel=REL)
    theirs = kid_features_to_metric(
        torch.from_numpy(gen), torch.from_numpy(ref), kid_subsets=20, kid_subset_size=100, verbose=False
    )
    assert mean == pytest.approx(theirs["kernel_inception_distance_mean"], rel=REL)
    assert std == pytest.approx(theirs["kernel_inception_distance_std"], rel=REL)


def test_inception_score_equals_scipy_and_torch_fidelity():
    logits = np.random.default_rng(9).normal(scale=3.0, size=(200, 1008)).astype(np.float32)
    mean, std = inception_score(logits)
    order = np.random.RandomState(2020).permutation(len(logits))
    p = scipy.special.softmax(logits[order].astype(np.float64), axis=1)
    scores = [
        np.exp(np.mean(scipy.stats.entropy(chunk.T, chunk.mean(0)[:, None]))) for chunk in np.split(p, 10)
    ]
    assert mean > 2.0
    assert mean == pytest.approx(np.mean(scores), rel=REL)
    assert std == pytest.approx(np.std(scores), rel=REL)
    theirs = isc_features_to_metric(torch.from_numpy(logits))
    assert mean == pytest.approx(theirs["inception_score_mean"], rel=REL)
    assert std == pytest.approx(theirs["inception_score_std"], rel=REL)


def test_precision_recall_equals_torch_fidelity():
    gen, ref = _features(10, 120, 16, shift=0.6), _features(11, 150, 16)
    precision, recall = precision_recall(gen, ref, k=3, chunk=37)  # odd chunk: the chunking must not matter
    theirs = prc_features_to_metric(
        torch.from_numpy(gen),
        torch.from_numpy(ref),
        prc_neighborhood=3,
        prc_batch_size=10000,
        save_cpu_ram=False,
        verbose=False,
    )
    assert 0.0 < precision < 1.0 and 0.0 < recall < 1.0
    assert precision == pytest.approx(theirs["precision"], rel=REL)
    assert recall == pytest.approx(theirs["recall"], rel=REL)


def test_kid_bootstrap_is_unbiased_reweighting():
    gen, ref = _features(12, 120, 16, shift=0.3), _features(13, 140, 16)
    boot = kid_bootstrap(gen, ref, replicates=400, seed=0)
    # the replicates scatter around the full-set estimate instead of being pushed up by repeated images
    full_set = _kid_full(gen, ref)
    assert abs(boot.mean() - full_set) < 0.25 * boot.std()
    assert boot.std() > 0


def _kid_full(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    kaa, kbb = _cubic_kernel(a, a), _cubic_kernel(b, b)
    off_a, off_b = ~np.eye(len(a), dtype=bool), ~np.eye(len(b), dtype=bool)
    return float(kaa[off_a].mean() + kbb[off_b].mean() - 2 * _cubic_kernel(a, b).mean())


def test_fid_infinity_is_closer_to_the_true_frechet_distance_than_fid_at_1000():
    rng = np.random.default_rng(1)
    d = 64
    a, b = rng.normal(size=(d, d)) / np.sqrt(d), rng.normal(size=(d, d)) / np.sqrt(d)
    cov1, cov2 = a @ a.T + 0.5 * np.eye(d), b @ b.T + 0.5 * np.eye(d)
    mu1, mu2 = np.zeros(d), np.full(d, 0.05)
    truth = float(
        ((mu1 - mu2) ** 2).sum()
        + np.trace(cov1)
        + np.trace(cov2)
        - 2 * np.trace(scipy.linalg.sqrtm(cov1 @ cov2)).real
    )
    reference = rng.multivariate_normal(mu2, cov2, size=50_000)
    generated = rng.multivariate_normal(mu1, cov1, size=1000)
    fid_1000 = frechet_distance(generated, reference)
    curve = fid_curve(generated, FastFrechet(reference), seed=0)
    assert curve.sizes[0] == 125 and curve.sizes[-1] == 1000 and len(curve.sizes) == 15
    assert fid_1000 - truth > 0.5  # the 1/N bias this test is about is really there
    assert abs(curve.intercept - truth) < abs(fid_1000 - truth)
    assert curve.slope > 0


def _coverage_setup(d: int = 6, n: int = 100, m: int = 400, shift: float = 0.2) -> dict:
    """Generated ~ N(shift, I) in ``d`` dimensions against one fixed reference sample of N(0, I).

    The laws differ (as generated and real faces do): for equal laws MMD and FID are degenerate
    statistics, where any plain bootstrap is known to misjudge the spread.

    What the intervals claim (see the caveats): sampling noise of the generated side at this N, with the
    reference held fixed. So the truth for FID is E[FID@N | reference] (Monte Carlo over 2000 generated
    sets); for KID, which is unbiased in N, its expectation given the reference (exact kernel means on
    the reference, 40,000 generated points for the generated-side terms).
    """
    reference = np.random.default_rng(0).normal(size=(m, d))
    frechet = FastFrechet(reference)
    fids = [frechet(np.random.default_rng([1, i]).normal(shift, size=(n, d))) for i in range(2000)]
    kids = [
        _kid_full(np.random.default_rng([3, i]).normal(shift, size=(n, d)), reference) for i in range(1000)
    ]
    big = np.random.default_rng(5).normal(shift, size=(40_000, d))
    k_yy = _cubic_kernel(reference, reference)
    yy = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    xx = np.mean(((big[:20_000] * big[20_000:]).sum(axis=1) / d + 1) ** 3)  # independent pairs
    kid_truth = xx + yy - 2 * _cubic_kernel(big, reference).mean()
    return {"d": d, "n": n, "shift": shift, "reference": reference, "frechet": frechet,
            "fid_truth": float(np.mean(fids)), "kid_truth": float(kid_truth),
            "fid_range": _range95(fids), "kid_range": _range95(kids)}  # fmt: skip


def _range95(values: list[float]) -> float:
    return float(np.percentile(values, 97.5) - np.percentile(values, 2.5))


def test_bootstrap_95_intervals_cover_the_true_value_about_95_percent_of_the_time():
    setup = _coverage_setup()
    draws, replicates = 150, 100
    covered = {"fid": 0, "kid": 0}
    widths: dict[str, list[float]] = {"fid": [], "kid": []}
    for draw in range(draws):
        generated = np.random.default_rng([2, draw]).normal(setup["shift"], size=(setup["n"], setup["d"]))
        estimate = setup["frechet"](generated)
        boot = fid_bootstrap(generated, setup["frechet"], replicates, seed=draw)
        low, high = percentile_interval(boot, centre=estimate)  # exactly as diffkit eval forms it
        covered["fid"] += low <= setup["fid_truth"] <= high
        widths["fid"].append(high - low)
        low, high = percentile_interval(kid_bootstrap(generated, setup["reference"], replicates, seed=draw))
        covered["kid"] += low <= setup["kid_truth"] <= high
        widths["kid"].append(high - low)
    # 95% of 150 is 142.5 with a binomial sd of 2.7: 134 is 3 sd below (both cover 140 here). Swapped
    # percentiles cover nothing; the uncentred FID replicates (pushed up by the duplicate-image bias)
    # cover 116.
    assert covered["fid"] >= 134 and covered["kid"] >= 134, covered
    # an interval that covers by being too wide fails here: its width must be near the real 95% range of
    # the estimate over generated sets (1.09x for FID, 0.95x for KID here)
    for metric in ("fid", "kid"):
        ratio = np.mean(widths[metric]) / setup[f"{metric}_range"]
        assert 0.8 < ratio < 1.25, (metric, ratio)


def test_subset_sizes_span_n_over_8_to_n():
    assert subset_sizes(80) == sorted(set(subset_sizes(80)))
    assert subset_sizes(80)[0] == 10 and subset_sizes(80)[-1] == 80
    assert subset_sizes(10_000)[0] == 1250


def test_kid_subset_size_is_min_1000_n_m_and_whole_set_subsets_are_flagged():
    sizes = (kid_subset_size(5000, 3000), kid_subset_size(500, 3000), kid_subset_size(5000, 300))
    assert sizes == (1000, 500, 300)
    assert not any("equals" in note for note in kid_caveats(5000, 3000, 1000, (0.001, 0.002), 4000))
    assert any("equals N = 500" in note for note in kid_caveats(500, 3000, 500, None, 4000))
    assert any("equals M = 300" in note for note in kid_caveats(5000, 300, 300, None, 4000))
    capped = kid_caveats(5000, 3000, 1000, (0.001, 0.002), 4000)[-1]
    assert "[0.001, 0.002]" in capped and "at most 4000 images per set" in capped


def test_fid_at_full_inception_width_equals_torch_fidelity():
    """N >= 2048 at D = 2048 (Inception's pool width): the symmetric trace route equals torch-fidelity's
    non-symmetric eigvals to 1e-4 relative, including a near-singular covariance (correlated features)."""
    rng = np.random.default_rng(11)
    d, n = 2048, 2100
    mixing = np.eye(d) + 0.05 * rng.standard_normal((d, d))
    gen = (rng.standard_normal((n, d)) @ mixing).astype(np.float32) + 0.02
    ref = (rng.standard_normal((n, d)) * 1.05).astype(np.float32)
    ours = frechet_distance(gen, ref)
    assert ours > 10.0
    assert ours == pytest.approx(_tf_fid(gen, ref), rel=1e-4)


def test_trace_sqrt_product_falls_back_for_a_singular_covariance():
    from diffkit.metrics.fid import trace_sqrt_product

    rng = np.random.default_rng(12)
    low_rank = rng.standard_normal((20, 64))  # 20 samples in 64 dimensions: singular covariance
    full = rng.standard_normal((400, 64))
    s1, s2 = np.cov(low_rank, rowvar=False), np.cov(full, rowvar=False)
    expected = np.sqrt(np.linalg.eigvals(s1 @ s2).astype(np.complex128)).real.sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(expected, rel=1e-6)
