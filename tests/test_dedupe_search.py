"""Vectorised Hamming search against a pure-Python reference; union-find and the keeper rule."""

from __future__ import annotations

import numpy as np
import pytest

from diffkit.dedupe import search
from diffkit.dedupe.clusters import Candidate, connected_groups, keeper_order
from diffkit.dedupe.hashing import bits_to_uint64


def brute_force(hashes: list[int], threshold: int) -> tuple[list[tuple[int, int, int]], list[int]]:
    """All pairs within ``threshold`` and every nearest-neighbour distance, by two Python loops."""
    pairs, nearest = [], [255] * len(hashes)
    for i, a in enumerate(hashes):
        for j in range(i + 1, len(hashes)):
            d = bin(a ^ hashes[j]).count("1")
            nearest[i], nearest[j] = min(nearest[i], d), min(nearest[j], d)
            if d <= threshold:
                pairs.append((i, j, d))
    return pairs, nearest


def clustered_hashes(n: int, seed: int) -> np.ndarray:
    """Random 64-bit hashes where half are copies of others with 0-12 bits flipped, so every distance
    near a threshold occurs (uniform random hashes alone almost never come within 12 bits)."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64, size=n, dtype=np.uint64, endpoint=False)
    for k in range(n // 2, n):
        source = int(values[rng.integers(0, n // 2)])
        for bit in rng.choice(64, size=int(rng.integers(0, 13)), replace=False):
            source ^= 1 << int(bit)
        values[k] = source
    return values


@pytest.mark.parametrize(("threshold", "workers"), [(0, 1), (3, 3), (6, 2), (10, 1)])
def test_vectorised_search_equals_brute_force(monkeypatch: pytest.MonkeyPatch, threshold: int,
                                              workers: int) -> None:
    # Small blocks so that the 700 hashes cross row blocks, column blocks and diagonal blocks.
    monkeypatch.setattr(search, "_ROW_BLOCK", 96)
    monkeypatch.setattr(search, "_COL_BLOCK", 160)
    hashes = clustered_hashes(700, seed=threshold)
    expected_pairs, expected_nearest = brute_force([int(h) for h in hashes], threshold + 4)

    result = search.search_pairs(hashes, threshold, near_miss_margin=4, near_miss_limit=25, workers=workers)

    within = [p for p in expected_pairs if p[2] <= threshold]
    assert len(within) >= 20  # the test means something only if there are many hits
    got = list(zip(result.pairs_i.tolist(), result.pairs_j.tolist(), result.distances.tolist(), strict=True))
    assert got == within  # same pairs, same distances, sorted by (i, j)
    assert result.nearest.tolist() == expected_nearest
    above = sorted((p for p in expected_pairs if p[2] > threshold), key=lambda p: (p[2], p[0], p[1]))[:25]
    near = list(zip(result.near_miss_i.tolist(), result.near_miss_j.tolist(),
                    result.near_miss_distances.tolist(), strict=True))
    assert near == above


def test_search_edge_cases() -> None:
    empty = search.search_pairs(np.empty(0, np.uint64), 4)
    assert empty.pairs_i.size == 0 and empty.nearest.size == 0
    one = search.search_pairs(np.array([7], np.uint64), 4)
    assert one.pairs_i.size == 0 and one.nearest.tolist() == [255]
    extremes = np.array([0, 2**64 - 1, 2**64 - 1, 1], dtype=np.uint64)
    result = search.search_pairs(extremes, 64)
    pairs = zip(result.pairs_i.tolist(), result.pairs_j.tolist(), result.distances.tolist(), strict=True)
    assert list(pairs) == [(0, 1, 64), (0, 2, 64), (0, 3, 1), (1, 2, 0), (1, 3, 63), (2, 3, 63)]


def test_popcount_and_bit_packing() -> None:
    values = np.array([0, 1, 2**63, 2**64 - 1, 0x0F0F], dtype=np.uint64)
    assert search.popcount64(values).tolist() == [0, 1, 1, 64, 8]
    bits = np.zeros((8, 8), dtype=bool)
    bits[0, 0] = True  # imagehash's first bit is the most significant, as in str(ImageHash)
    bits[7, 7] = True
    assert bits_to_uint64(bits) == (1 << 63) | 1


def test_union_find_groups_are_transitive_and_order_free() -> None:
    pairs = [(5, 6), (0, 3), (3, 9), (6, 8), (1, 1)]
    forward = connected_groups(10, [a for a, _ in pairs], [b for _, b in pairs])
    backward = connected_groups(10, [b for _, b in reversed(pairs)], [a for a, _ in reversed(pairs)])
    assert forward == backward == [[0, 3, 9], [5, 6, 8]]


def test_keeper_is_largest_then_earliest_then_path_order() -> None:
    small_early = Candidate("a.jpg", 512, 512, earliest_ns=1)
    big_late = Candidate("z.jpg", 1024, 1024, earliest_ns=9)
    big_early = Candidate("y.jpg", 1024, 1024, earliest_ns=5)
    big_early_twin = Candidate("x.jpg", 1024, 1024, earliest_ns=5)
    assert keeper_order([small_early, big_late]) == [1, 0]
    assert keeper_order([small_early, big_late, big_early]) == [2, 0, 1]  # then the rest by path
    assert keeper_order([big_early, big_early_twin, small_early]) == [1, 2, 0]
