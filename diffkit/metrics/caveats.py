"""How far to trust a small-sample FID/KID/IS, in numbers.

- FID@N (reference M) labels; rank-deficient covariance below 2048 samples.
- Bootstrap 95% intervals for FID and KID (resampling the generated set, reference held fixed).
- FID at subset sizes N/8 .. N, the linear fit in 1/N and its intercept FID-infinity (Chong & Forsyth,
  "Effectively Unbiased FID and Inception Score and where to find them", CVPR 2020), an estimate that
  removes the generated-side 1/N bias only.
- KID subset size min(1000, N, M); when it equals N every subset is the whole set and std = 0.
- IS is an ImageNet-class statistic: a sanity value only for faces.

Every label names its feature space (:data:`SPACES`): ``FID`` is the Fréchet distance in Inception
pool3 features, ``FD_DINOv2`` the same distance in DINOv2 ViT-L/14 features (Stein et al. 2023); the
caveats are computed in whichever space was used, with that space's dimension.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffkit.metrics.fid import FastFrechet
from diffkit.report.render import format_value

FEATURE_DIM = 2048
STANDARD_N = 50_000
SUBSET_POINTS = 15  # as mchong6/FID_IS_infinity score_infinity.py
LOWEST_FRACTION = 1 / 8
MIN_CURVE_N = 80  # the smallest subset (N/8) should hold at least 10 images
# FID vs 1/N is close to a straight line when the estimate means something (Chong & Forsyth's fits
# have R² near 1); below this the intercept is mostly noise.
MIN_FIT_R2 = 0.8
# A 95% percentile interval is read off the 2.5% most extreme replicates on each side: with fewer
# than 200 replicates that is fewer than 5 values per tail, and the interval moves from seed to seed.
MIN_BOOTSTRAP = 200


@dataclass(frozen=True)
class Space:
    """A feature space: the names its distances go by, its dimension and its network."""

    fd: str  # the Fréchet distance's name
    kd: str  # the kernel distance's name
    dims: int
    network: str


SPACES = {
    "inception": Space("FID", "KID", FEATURE_DIM, "Inception-v3 pool3"),
    "dinov2": Space("FD_DINOv2", "KD_DINOv2", 1024, "DINOv2 ViT-L/14"),
}


@dataclass(frozen=True)
class FidCurve:
    sizes: list[int]
    fids: list[float]
    slope: float  # FID_N ~= intercept + slope / N
    intercept: float  # FID-infinity estimate
    r2: float = 1.0  # coefficient of determination of the linear fit

    def problems(self) -> list[str]:
        """Why the intercept cannot be trusted; empty when the fit looks sound."""
        found = []
        if self.slope <= 0:
            found.append(
                "negative slope: FID does not fall as N grows, so the estimate lies above FID@N "
                "(sampling noise dominates the 1/N bias)"
            )
        if self.r2 < MIN_FIT_R2:
            found.append(f"poor linear fit (R² {self.r2:.2f} < {MIN_FIT_R2})")
        return found


def reference_text(m: int | None) -> str:
    """``reference 300``, or for a statistics file of unknown N (pytorch-fid's) what is known."""
    return f"reference {m}" if m else "reference statistics, N unknown"


def fid_label(n: int, m: int | None, space: str = "inception") -> str:
    return f"{SPACES[space].fd}@{n} ({reference_text(m)})"


def weights_status(official: bool) -> str:
    return "official weights" if official else "unofficial weights"


def fid_headline(
    n: int, m: int | None, fid: float | None, engine: str, weights: str, space: str = "inception"
) -> str:
    """``FID@100 31,727.1 (reference 300, torch-fidelity, official weights)``: how every FID is shown.

    ``diffkit eval`` and the evaluation during training both use it, so a number never travels without
    its space, its N, its reference N, its engine (or network) and its weights' status (``weights``:
    :func:`weights_status`).
    """
    value = "—" if fid is None else format_value(fid)
    return f"{SPACES[space].fd}@{n} {value} ({reference_text(m)}, {engine}, {weights})"


def subset_sizes(n: int, points: int = SUBSET_POINTS, lowest: float = LOWEST_FRACTION) -> list[int]:
    low = max(2, int(round(n * lowest)))
    return sorted({int(size) for size in np.linspace(low, n, points).round()})


def fid_curve(
    generated: np.ndarray, frechet: FastFrechet, seed: int, sizes: list[int] | None = None
) -> FidCurve:
    """FID of random generated subsets (fresh shuffle per size, as Chong & Forsyth) and the 1/N fit."""
    rng = np.random.default_rng(seed)
    sizes = sizes or subset_sizes(len(generated))
    fids = [frechet(generated[rng.permutation(len(generated))[:size]]) for size in sizes]
    inverse, values = 1.0 / np.asarray(sizes, dtype=np.float64), np.asarray(fids, dtype=np.float64)
    slope, intercept = np.polyfit(inverse, values, 1)
    return FidCurve(
        list(sizes), fids, float(slope), float(intercept), r_squared(inverse, values, slope, intercept)
    )


def r_squared(x: np.ndarray, y: np.ndarray, slope: float, intercept: float) -> float:
    """1 - SS_res / SS_tot of a line fit (1.0 when every y is the same and the line hits them)."""
    residual = float(np.sum((y - (intercept + slope * x)) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)


def fid_bootstrap(generated: np.ndarray, frechet: FastFrechet, replicates: int, seed: int) -> np.ndarray:
    """FID of bootstrap resamples of the generated set (as multiplicity weights; reference fixed)."""
    rng = np.random.default_rng(seed)
    n = len(generated)
    out = np.empty(replicates)
    for index in range(replicates):
        counts = np.bincount(rng.integers(0, n, n), minlength=n)
        out[index] = frechet(generated, counts.astype(np.float64))
    return out


def percentile_interval(
    values: np.ndarray, level: float = 0.95, centre: float | None = None
) -> tuple[float, float]:
    """Percentile interval of bootstrap ``values``; with ``centre``, the spread is moved onto it.

    Resampling with replacement repeats images, which lowers the effective N and so raises every
    bootstrap FID by the 1/N bias; re-centring on the estimate keeps the spread and drops that shift.
    """
    tail = (1 - level) / 2 * 100
    if centre is not None:
        values = values - np.mean(values) + centre
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def clip_to_range(interval: tuple[float, float], lowest: float = 0.0) -> tuple[tuple[float, float], bool]:
    """The interval cut at the metric's lowest possible value, and whether it was cut.

    A Fréchet distance is never negative; re-centring the bootstrap spread on a small estimate can put
    the lower end below zero, which is not a value the distance can take. The cut end is marked.
    """
    low, high = interval
    if low >= lowest:
        return interval, False
    return (lowest, max(high, lowest)), True


def kid_subset_size(n: int, m: int) -> int:
    return min(1000, n, m)


def fid_caveats(
    n: int,
    m: int | None,
    interval: tuple[float, float] | None,
    curve: FidCurve | None,
    fid: float,
    space: str = "inception",
    clipped: bool = False,
) -> list[str]:
    info = SPACES[space]
    name, label = info.fd, fid_label(n, m, space)
    same = "engine" if space == "inception" else "network and weights"
    notes = [
        f"{name} is {label} in {info.network} features: compare only with values at the same N, the "
        f"same reference set and the same {same}; the usual standard is N = {STANDARD_N:,}."
    ]
    smallest = min(n, m) if m else n
    if smallest < info.dims:
        notes.append(
            f"{smallest} samples < {info.dims} feature dimensions: the covariance is rank-deficient "
            f"(rank <= {smallest - 1}), so {name}@{n} is dominated by sample-size bias."
        )
    if n < 10_000:
        notes.append(
            f"{name} is biased upwards roughly in proportion to 1/N: {name}@{n} is not comparable with "
            f"{name}@{STANDARD_N:,}."
        )
    if interval is not None:
        cut = (
            f" (its lower end fell below 0, which {name} cannot take, and is clipped at 0: the estimate "
            "is within sampling noise of 0)"
            if clipped
            else ""
        )
        notes.append(
            f"{name} bootstrap 95% interval [{interval[0]:.4g}, {interval[1]:.4g}]{cut} (generated set "
            "resampled, reference held fixed, spread centred on the estimate): sampling noise only, "
            "not the 1/N bias."
        )
    if curve is None:
        notes.append(f"No {name}-infinity estimate: it needs N >= {MIN_CURVE_N} generated images.")
    elif curve.problems():
        notes.append(
            f"{name}-infinity estimate {curve.intercept:.4g} cannot be trusted: "
            f"{'; '.join(curve.problems())}. Do not quote it; evaluate more samples."
        )
    else:
        notes.append(
            f"{name}-infinity estimate {curve.intercept:.4g} (intercept of {name} vs 1/N over "
            f"{len(curve.sizes)} subset sizes {curve.sizes[0]}..{curve.sizes[-1]}, Chong & Forsyth 2020); "
            f"an extrapolation that removes only the generated-side bias (the {reference_text(m)} stays)."
        )
    return notes


def bootstrap_caveats(
    metric: str, replicates: int, estimate: float, interval: tuple[float, float] | None
) -> list[str]:
    """Warnings for an interval from too few bootstrap replicates, or one that misses its own estimate."""
    if interval is None:
        return []
    notes = []
    if replicates < MIN_BOOTSTRAP:
        notes.append(
            f"Only {replicates} bootstrap replicates: the {metric} 95% interval rests on "
            f"{replicates * 0.025:.1f} replicates per tail and is rough; "
            f"use --bootstrap {MIN_BOOTSTRAP} or more."
        )
    if not interval[0] <= estimate <= interval[1]:
        notes.append(
            f"The {metric} estimate {estimate:.4g} lies outside its own 95% interval "
            f"[{interval[0]:.4g}, {interval[1]:.4g}]: the interval is not usable "
            f"(too few replicates or a skewed statistic); rerun with --bootstrap {MIN_BOOTSTRAP * 5}."
        )
    return notes


def kid_caveats(
    n: int,
    m: int,
    subset_size: int,
    interval: tuple[float, float] | None,
    max_points: int,
    space: str = "inception",
) -> list[str]:
    name = SPACES[space].kd
    notes = [
        f"{name}@{n} (reference {m}) with {subset_size}-image subsets, in {SPACES[space].network} "
        f"features: {name} is unbiased in N, the fair small-N comparison metric; its std over subsets "
        "is not a confidence interval."
    ]
    if subset_size == n:
        notes.append(
            f"{name} subset size equals N = {n}: every subset holds all generated images, so the "
            "subset std shows only how the reference subsets vary (0 when M = N too), not the "
            "uncertainty; use the bootstrap interval."
        )
    elif subset_size == m:
        notes.append(
            f"{name} subset size equals M = {m} (fewer reference than generated images): every subset "
            "holds all reference images, so the subset std shows only how the generated subsets vary, "
            "not the uncertainty; use the bootstrap interval."
        )
    if interval is not None:
        capped = f" (on at most {max_points} images per set)" if max(n, m) > max_points else ""
        notes.append(f"{name} bootstrap 95% interval [{interval[0]:.4g}, {interval[1]:.4g}]{capped}.")
    return notes


def is_caveats(n: int, splits: int) -> list[str]:
    return [
        f"Inception Score is based on ImageNet classes and is not meaningful for face data; report it "
        f"only as a sanity value. Each of the {splits} splits holds {n // splits} images, which biases "
        "IS low at small N."
    ]
