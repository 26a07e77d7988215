"""Exact Hamming search over 64-bit hashes: all pairs in vectorised blocks, or multi-index hashing.

All pairs (numpy XOR + popcount in blocks): n = 100k is 5e9 pair distances, 35 s on one busy core, with
memory bounded by the block size (8 MiB per thread); the same pass yields every image's nearest-neighbour
distance (for the threshold histogram) and the closest pairs just above the threshold. Beyond 40k hashes
multi-index hashing (Norouzi, Punjani and Fleet, CVPR 2012) finds the same pairs from sorted band keys:
1M random hashes at 8 bits in ~18 s on the 2-core test machine (benchmarks/bench_dedupe.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

_ROW_BLOCK = 256
_COL_BLOCK = 4096  # 256 x 4096 uint64 = 8 MiB of XOR per block: stays in cache, measured fastest
_NO_NEIGHBOUR = 255

if hasattr(np, "bitwise_count"):  # numpy >= 2.0

    def popcount64(values: np.ndarray) -> np.ndarray:
        """Set bits per uint64 element, as uint8."""
        return np.bitwise_count(values)

else:  # pragma: no cover - numpy 1.x
    _BYTE_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)

    def popcount64(values: np.ndarray) -> np.ndarray:
        as_bytes = np.ascontiguousarray(values).view(np.uint8).reshape(*values.shape, 8)
        return _BYTE_POPCOUNT[as_bytes].sum(axis=-1, dtype=np.uint8)


@dataclass
class SearchResult:
    pairs_i: np.ndarray  # int64, i < j, sorted by (i, j): every pair with distance <= threshold
    pairs_j: np.ndarray
    distances: np.ndarray  # uint8
    nearest: np.ndarray  # uint8 per image: distance to its nearest other image (255 when n == 1)
    near_miss_i: np.ndarray  # the closest pairs with threshold < distance <= threshold + margin
    near_miss_j: np.ndarray
    near_miss_distances: np.ndarray


def _smallest(i: np.ndarray, j: np.ndarray, d: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    order = np.lexsort((j, i, d))[:k]
    return i[order], j[order], d[order]


@dataclass
class _BlockResult:
    found: tuple[np.ndarray, np.ndarray, np.ndarray]
    misses: tuple[np.ndarray, np.ndarray, np.ndarray]
    row_nearest: np.ndarray  # rows r0:r1
    col_nearest: np.ndarray  # columns r0:n (the block's rows see only columns j > i)


def _empty_triple() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint8)


def _search_rows(
    hashes: np.ndarray, r0: int, threshold: int, miss_top: int, near_miss_limit: int
) -> _BlockResult:
    """Compare rows r0:r0+_ROW_BLOCK with every later hash (upper triangle only)."""
    n = hashes.shape[0]
    r1 = min(n, r0 + _ROW_BLOCK)
    rows = hashes[r0:r1, None]
    row_nearest = np.full(r1 - r0, _NO_NEIGHBOUR, dtype=np.uint8)
    col_nearest = np.full(n - r0, _NO_NEIGHBOUR, dtype=np.uint8)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    miss_i, miss_j, miss_d = _empty_triple()
    for c0 in range(r0, n, _COL_BLOCK):
        c1 = min(n, c0 + _COL_BLOCK)
        dist = popcount64(rows ^ hashes[None, c0:c1])
        if c0 == r0:  # the diagonal block: mask j <= i (self-distance and the lower triangle)
            dist[np.arange(c0, c1)[None, :] <= np.arange(r0, r1)[:, None]] = _NO_NEIGHBOUR
        # Nearest neighbours: the block serves its rows and, by symmetry, its columns.
        np.minimum(row_nearest, dist.min(axis=1), out=row_nearest)
        col_nearest[c0 - r0 : c1 - r0] = dist.min(axis=0)
        if miss_top < 0 or dist.min() > miss_top:
            continue
        bi, bj = np.nonzero(dist <= miss_top)
        bd = dist[bi, bj]
        hit = bd <= threshold
        if hit.any():
            found.append((bi[hit] + r0, bj[hit] + c0, bd[hit]))
        miss = ~hit
        if near_miss_limit > 0 and miss.any():
            miss_i = np.concatenate([miss_i, bi[miss] + r0])
            miss_j = np.concatenate([miss_j, bj[miss] + c0])
            miss_d = np.concatenate([miss_d, bd[miss]])
            if miss_d.size > 20 * near_miss_limit:
                miss_i, miss_j, miss_d = _smallest(miss_i, miss_j, miss_d, near_miss_limit)
    pairs = tuple(np.concatenate(column) for column in zip(*found, strict=True)) if found else _empty_triple()
    return _BlockResult(pairs, (miss_i, miss_j, miss_d), row_nearest, col_nearest)  # type: ignore[arg-type]


def search_pairs(
    hashes: np.ndarray,
    threshold: int,
    near_miss_margin: int = 4,
    near_miss_limit: int = 50,
    advance: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> SearchResult:
    """All pairs (i < j) with Hamming distance <= ``threshold``, exactly.

    Up to 40,000 hashes: all pairs in O(n^2 / block) numpy calls, with every nearest-neighbour distance
    and the closest pairs above the threshold. Above that: multi-index hashing (:func:`mih_pairs`), the
    same pairs in sub-quadratic time, but nearest distances only up to the threshold (255 beyond) and no
    near misses; hashes that cluster too much for the bands fall back to all pairs.

    Row blocks run on ``workers`` threads (numpy releases the GIL in these ufuncs; default: all cores);
    results are merged in block order, so the output does not depend on ``workers``.
    ``advance(rows)`` is called after each block of rows, for a progress bar.
    """
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = int(hashes.shape[0])
    if n > _BRUTE_MAX:
        banded = _banded_search(hashes, threshold, advance)
        if banded is not None:
            return banded
    nearest = np.full(n, _NO_NEIGHBOUR, dtype=np.uint8)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    miss_i, miss_j, miss_d = _empty_triple()
    miss_top = threshold + near_miss_margin
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))

    def task(r0: int) -> _BlockResult:
        return _search_rows(hashes, r0, threshold, miss_top, near_miss_limit)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for r0, block in zip(range(0, n, _ROW_BLOCK), pool.map(task, range(0, n, _ROW_BLOCK)), strict=True):
            r1 = r0 + block.row_nearest.size
            np.minimum(nearest[r0:r1], block.row_nearest, out=nearest[r0:r1])
            np.minimum(nearest[r0:], block.col_nearest, out=nearest[r0:])
            if block.found[0].size:
                found.append(block.found)
            if block.misses[0].size:
                miss_i = np.concatenate([miss_i, block.misses[0]])
                miss_j = np.concatenate([miss_j, block.misses[1]])
                miss_d = np.concatenate([miss_d, block.misses[2]])
                if miss_d.size > 20 * near_miss_limit:
                    miss_i, miss_j, miss_d = _smallest(miss_i, miss_j, miss_d, near_miss_limit)
            if advance is not None:
                advance(r1 - r0)

    if found:
        pi, pj, pd = (np.concatenate(column) for column in zip(*found, strict=True))
        order = np.lexsort((pj, pi))
        pi, pj, pd = pi[order].astype(np.int64), pj[order].astype(np.int64), pd[order]
    else:
        pi, pj, pd = _empty_triple()
    miss_i, miss_j, miss_d = _smallest(miss_i, miss_j, miss_d, max(0, near_miss_limit))
    return SearchResult(pi, pj, pd, nearest, miss_i.astype(np.int64), miss_j.astype(np.int64), miss_d)


# -- multi-index hashing: sub-quadratic and still exact, for folders too large for all pairs -----------

_BRUTE_MAX = 40_000  # up to here all pairs take ~2 s and give every nearest distance; above, bands
_MAX_BAND_BITS = 32  # a band key and an index share one uint64 when sorted


@dataclass(frozen=True)
class BandPlan:
    """How multi-index hashing splits the 64 bits: ``bands`` contiguous bit ranges, each hash entered
    with every variant of its band key that flips at most ``flips`` bits.

    Pigeonhole: if two hashes differ in at most ``radius`` bits, some band differs in at most
    ``radius // bands`` bits. With ``flips = 0`` and ``bands = radius + 1`` that band matches exactly;
    with ``flips = 1`` and ``bands > radius / 3`` it differs in at most 2 bits, so a variant of one key
    (one bit flipped, or none) equals a variant of the other. Either way no pair within ``radius`` is
    missed; every candidate is then checked on all 64 bits, so none outside it is reported."""

    bands: int
    flips: int

    def widths(self) -> list[int]:
        base, extra = divmod(64, self.bands)
        return [base + (k < extra) for k in range(self.bands)]

    def expected_work(self, n: int) -> float:
        """Sorted entries plus candidate pairs, for uniform hashes (used to choose a plan)."""
        work = 0.0
        for width in self.widths():
            entries = n * (1 + self.flips * width)
            work += entries * 4 + entries * entries / 2 / 2.0**width
        return work


def band_plan(n: int, radius: int) -> BandPlan:
    """The cheaper exact plan for ``n`` uniform hashes at ``radius``, with every band <= 32 bits."""
    plans = [BandPlan(max(2, radius + 1), 0), BandPlan(max(2, radius // 3 + 1), 1)]
    plans = [p for p in plans if p.bands <= 64 and max(p.widths()) <= _MAX_BAND_BITS]
    return min(plans, key=lambda p: p.expected_work(n))


def _band_entries(hashes: np.ndarray, shift: int, width: int, flips: int) -> np.ndarray:
    """Sorted uint64 ``key << 32 | index`` for every hash's band key and its one-bit-flipped variants."""
    keys = (hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)
    index = np.arange(hashes.size, dtype=np.uint64)
    variants = [keys] + ([keys ^ np.uint64(1 << bit) for bit in range(width)] if flips else [])
    packed = np.concatenate([(v << np.uint64(32)) | index for v in variants])
    packed.sort()
    return packed


def _band_pairs(
    hashes: np.ndarray, packed: np.ndarray, radius: int, budget: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Pairs (i < j, distance <= radius) among entries with equal keys; None once more than ``budget``
    candidates would have to be checked (the caller then compares all pairs instead)."""
    keys = packed >> np.uint64(32)
    ids = (packed & np.uint64(0xFFFF_FFFF)).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    runs = np.diff(np.r_[starts, keys.size])
    if float((runs * (runs - 1) // 2).sum()) > budget:
        return None
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for offset in range(1, int(runs.max(initial=1))):
        same = np.flatnonzero(keys[offset:] == keys[:-offset])
        if same.size == 0:
            break
        a, b = ids[same], ids[same + offset]
        distance = popcount64(hashes[a] ^ hashes[b])
        keep = (distance <= radius) & (a != b)
        if keep.any():
            a, b = a[keep], b[keep]
            found.append((np.minimum(a, b), np.maximum(a, b), distance[keep]))
    return tuple(np.concatenate(c) for c in zip(*found, strict=True)) if found else _empty_triple()  # type: ignore[return-value]


def mih_pairs(
    hashes: np.ndarray, radius: int, plan: BandPlan | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Every pair (i < j, sorted) within ``radius`` bits, by multi-index hashing; None when the hashes
    cluster so much that the bands would check more candidates than all pairs (use brute force)."""
    hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
    n = hashes.size
    plan = plan or band_plan(n, radius)
    budget = n * (n - 1) / 2 / 8  # all pairs cost ~8x less per pair than a band candidate
    found = []
    shift = 64
    for width in plan.widths():
        shift -= width
        band = _band_pairs(hashes, _band_entries(hashes, shift, width, plan.flips), radius, budget)
        if band is None:
            return None
        found.append(band)
    pi, pj, pd = (np.concatenate(c) for c in zip(*found, strict=True))
    key = pi * n + pj
    key, first = np.unique(key, return_index=True)  # a pair is met in several bands and variants
    return key // n, key % n, pd[first].astype(np.uint8)


def _banded_search(
    hashes: np.ndarray, threshold: int, advance: Callable[[int], None] | None
) -> SearchResult | None:
    found = mih_pairs(hashes, threshold)
    if found is None:
        return None
    pi, pj, pd = found
    nearest = np.full(hashes.size, _NO_NEIGHBOUR, dtype=np.uint8)
    np.minimum.at(nearest, pi, pd)
    np.minimum.at(nearest, pj, pd)
    if advance is not None:
        advance(int(hashes.size))
    empty_i, empty_j, empty_d = _empty_triple()
    return SearchResult(pi, pj, pd, nearest, empty_i, empty_j, empty_d)
