"""Duplicate pairs -> clusters (union-find) -> one keeper per cluster, chosen deterministically."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class UnionFind:
    """Disjoint sets over 0..n-1. The smaller index becomes the root, so results never depend on the
    order in which pairs arrive."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps trees shallow
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            if rb < ra:
                ra, rb = rb, ra
            self.parent[rb] = ra


def connected_groups(
    n: int, pairs_i: Sequence[int] | np.ndarray, pairs_j: Sequence[int] | np.ndarray
) -> list[list[int]]:
    """Groups of >= 2 indices joined by the pairs; members ascending, groups by first member."""
    sets = UnionFind(n)
    for a, b in zip(np.asarray(pairs_i).tolist(), np.asarray(pairs_j).tolist(), strict=True):
        sets.union(a, b)
    groups: dict[int, list[int]] = {}
    for index in range(n):
        groups.setdefault(sets.find(index), []).append(index)
    return sorted((g for g in groups.values() if len(g) >= 2), key=lambda g: g[0])


@dataclass(frozen=True)
class Candidate:
    """What the keeper rule looks at for one image."""

    rel: str
    width: int
    height: int
    earliest_ns: int  # scrape manifest fetched_at when known, else file mtime


def keeper_order(candidates: Sequence[Candidate]) -> list[int]:
    """Indices into ``candidates``: the keeper first (largest resolution, then earliest, then path
    order), then the others in path order."""

    def rank(k: int) -> tuple[int, int, str]:
        c = candidates[k]
        return -c.width * c.height, c.earliest_ns, c.rel

    ranked = sorted(range(len(candidates)), key=rank)
    keeper = ranked[0]
    rest = sorted((k for k in range(len(candidates)) if k != keeper), key=lambda k: candidates[k].rel)
    return [keeper, *rest]
