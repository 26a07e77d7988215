"""The scraper's inline de-duplication: everything kept so far, and whether a new image repeats one.

The test is dedupe's two stages (:mod:`diffkit.dataset.verify`): kept images within ``threshold`` bits
of the new pHash are candidates, and a candidate is the same picture only when the thumbnails'
similarity reaches ``min_similarity``. A kept image whose file is gone (removed by ``diffkit dedupe``)
is judged by its hash alone at the strict ``HASH_ONLY_BITS``.

Why the bound: a source of look-alike faces gives every new image more candidates the more are kept
(the 30,000-face rehearsal's scrape spent more CPU per image the later it was, linearly, in this
check). So each kept thumbnail is summarised once, as it is kept, by the few floats of
:func:`diffkit.dataset.verify.upper_bounds`; a new image is set against all its candidates in one
vectorised pass, and only candidates whose bound reaches ``min_similarity`` get the exact similarity.
The answer is the one the exact test gives for every candidate (a skipped one provably cannot reach it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffkit.dataset.verify import (
    BOUND_MARGIN,
    DEFAULT_MIN_SIMILARITY,
    HASH_ONLY_BITS,
    BoundFeatures,
    bound_features,
    open_for_hash_and_thumbnail,
    similarities,
    upper_bounds,
)

__all__ = ["KeptIndex"]

# Set bits of every byte value: a popcount that works on numpy 1.x too (np.bitwise_count is 2.x only).
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


class KeptIndex:
    """Everything kept so far: the sha256 set, a growing uint64 pHash array, where each kept file lies
    and, per kept image with a thumbnail, its thumbnail and bound features. Thumbnails of files kept by
    an earlier run are decoded when first needed (few images are ever candidates) and remembered."""

    def __init__(self) -> None:
        self.sha256: set[str] = set()
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._count = 0
        self._paths: list[Path | None] = []
        self._thumbs: dict[int, bytes | None] = {}  # None: its file is gone or unreadable
        self._features = bound_features(np.zeros((1024, 768), dtype=np.uint8))  # rows valid once described
        self._described = np.zeros(1024, dtype=bool)

    def __len__(self) -> int:
        return self._count

    def add(self, sha256: str, phash: int, path: Path | None = None, thumb: bytes | None = None) -> None:
        if self._count == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
            self._features = BoundFeatures(*(np.concatenate([f, np.zeros_like(f)]) for f in self._features))
            self._described = np.concatenate([self._described, np.zeros_like(self._described)])
        self._hashes[self._count] = np.uint64(phash)
        self._paths.append(path)
        if thumb is not None:
            self._describe(self._count, thumb)
        self._count += 1
        self.sha256.add(sha256)

    def _describe(self, k: int, thumb: bytes | None) -> None:
        self._thumbs[k] = thumb
        if thumb is not None:
            for column, value in zip(
                self._features, bound_features(np.frombuffer(thumb, np.uint8)), strict=True
            ):
                column[k] = value[0]
            self._described[k] = True

    def _distances(self, phash: int) -> np.ndarray:
        xor = np.bitwise_xor(self._hashes[: self._count], np.uint64(phash))
        count = getattr(np, "bitwise_count", None)  # numpy 2: one ufunc pass, 50x less than the table
        if count is not None:
            return count(xor)
        return _POPCOUNT[xor.view(np.uint8)].reshape(self._count, 8).sum(axis=1, dtype=np.uint16)

    def nearest_distance(self, phash: int) -> int | None:
        """Smallest Hamming distance from ``phash`` to any kept hash (None when nothing is kept)."""
        if self._count == 0:
            return None
        return int(self._distances(phash).min())

    def _load_thumb(self, k: int) -> None:
        path = self._paths[k]
        try:
            thumb = None if path is None else open_for_hash_and_thumbnail(path.read_bytes())[1]
        except Exception:  # gone or unreadable: judged by the hash alone
            thumb = None
        self._describe(k, thumb)

    def near_duplicate(
        self,
        phash: int,
        data: bytes,
        threshold: int,
        min_similarity: float = DEFAULT_MIN_SIMILARITY,
        thumb: bytes | None = None,
    ) -> bool:
        """Whether image ``data`` (pHash ``phash``, thumbnail ``thumb`` when the caller has it) is a near
        copy of a kept image, by the two stages."""
        if self._count == 0:
            return False
        distances = self._distances(phash)
        candidates = np.flatnonzero(distances <= threshold)
        if candidates.size == 0:
            return False
        for k in candidates.tolist():
            if k not in self._thumbs:
                self._load_thumb(k)
        verifiable = candidates[self._described[candidates]]
        gone = candidates[~self._described[candidates]]
        if (distances[gone] <= min(threshold, HASH_ONLY_BITS)).any():
            return True
        if verifiable.size == 0:
            return False
        if thumb is None:
            thumb = open_for_hash_and_thumbnail(data)[1]
        ours = np.frombuffer(thumb, dtype=np.uint8)[None, :]
        bounds = upper_bounds(bound_features(ours), self._features.take(verifiable))
        close = verifiable[bounds >= min_similarity - BOUND_MARGIN]
        if close.size == 0:
            return False
        theirs = np.stack([np.frombuffer(self._thumbs[k], dtype=np.uint8) for k in close.tolist()])  # type: ignore[arg-type]
        ours = ours.repeat(len(close), axis=0)
        return bool((similarities(ours, theirs) >= min_similarity).any())
