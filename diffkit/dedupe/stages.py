"""Stage 2 of dedupe: verify each hash candidate pair by its thumbnails, and keep the evidence.

Stage 1 (:mod:`diffkit.dedupe.search`) proposes every pair within the hash threshold; here a pair is
accepted when its files are byte-identical or its thumbnails' similarity reaches ``min_similarity``
(:mod:`diffkit.dataset.verify`). What the report needs to judge both thresholds is kept too: a histogram
of candidate similarities and the borderline pairs on either side of ``min_similarity``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffkit.dataset.verify import THUMB_BYTES, pair_similarities
from diffkit.dedupe.hashing import HashRecord
from diffkit.dedupe.search import SearchResult

__all__ = ["SIMILARITY_BINS", "Verified", "identical", "verify_candidates"]

SIMILARITY_BINS = np.round(np.arange(0.50, 1.0001, 0.01), 2)  # histogram edges; below 0.5 in the first bin
_BORDERLINE = 25  # pairs shown on each side of the similarity threshold


@dataclass
class Verified:
    pairs_i: np.ndarray  # accepted pairs (i < j), the candidates' order
    pairs_j: np.ndarray
    distances: np.ndarray
    similarity: np.ndarray  # of the accepted pairs
    n_candidates: int
    n_rejected: int
    histogram: list[int]  # candidate similarities per SIMILARITY_BINS bin (len(bins) - 1)
    borderline: list[dict[str, object]]


def thumbnails(records: list[HashRecord]) -> np.ndarray:
    """(n, 768) uint8 thumbnails; an image without one (cannot happen for readable files) is zeros."""
    out = np.zeros((len(records), THUMB_BYTES), dtype=np.uint8)
    for k, record in enumerate(records):
        if record.thumb is not None and len(record.thumb) == THUMB_BYTES:
            out[k] = np.frombuffer(record.thumb, dtype=np.uint8)
    return out


def identical(a: HashRecord, b: HashRecord) -> bool:
    """Byte-identical: the same sha256. A file without one had no other file of its size (lazy sha256 in
    :func:`diffkit.dedupe.hashing.hash_images`), so it is identical to none."""
    return a.sha256 is not None and a.sha256 == b.sha256


def _content_ids(records: list[HashRecord]) -> np.ndarray:
    """One integer per distinct sha256 (-1: none), so that byte-identity of millions of candidate pairs
    is one array comparison rather than a Python call per pair."""
    ids: dict[str, int] = {}
    return np.array(
        [-1 if r.sha256 is None else ids.setdefault(r.sha256, len(ids)) for r in records], dtype=np.int64
    )


def verify_candidates(
    records: list[HashRecord], thumbs: np.ndarray, found: SearchResult, min_similarity: float, verify: bool
) -> Verified:
    pi, pj, pd = found.pairs_i, found.pairs_j, found.distances
    # Below the histogram's first edge and the threshold a similarity changes nothing shown or decided,
    # so those pairs are only bounded (-inf), not computed; unverified runs show every pair's value.
    floor = min(min_similarity, float(SIMILARITY_BINS[0])) if verify else None
    sims = pair_similarities(thumbs, pi, pj, at_least=floor) if pi.size else np.empty(0, np.float32)
    content = _content_ids(records)
    exact = (content[pi] == content[pj]) & (content[pi] >= 0)  # identical() for every pair at once
    accept = exact | (sims >= min_similarity) if verify else np.ones(pi.size, dtype=bool)
    # Values still owed: accepted byte-identical pairs' (reported), and every one when fewer close calls
    # than the borderline table shows were computed (the table then reaches below the floor).
    unbounded = ~np.isfinite(sims)
    if floor is not None and int((~accept & (sims >= floor)).sum()) >= _BORDERLINE:
        unbounded &= accept
    unbounded = np.flatnonzero(unbounded)
    if unbounded.size:  # only the thumbnails these pairs use are standardised again, not the folder's
        used, where = np.unique(np.r_[pi[unbounded], pj[unbounded]], return_inverse=True)
        sims[unbounded] = pair_similarities(thumbs[used], where[: unbounded.size], where[unbounded.size :])
    histogram, _ = np.histogram(np.clip(sims, SIMILARITY_BINS[0], SIMILARITY_BINS[-1]), bins=SIMILARITY_BINS)
    return Verified(
        pi[accept],
        pj[accept],
        pd[accept],
        sims[accept],
        int(pi.size),
        int((~accept).sum()),
        histogram.tolist(),
        _borderline(records, pi, pj, pd, sims, accept, exact) if verify else [],
    )


def _borderline(
    records: list[HashRecord],
    pi: np.ndarray,
    pj: np.ndarray,
    pd: np.ndarray,
    sims: np.ndarray,
    accepted: np.ndarray,
    exact: np.ndarray,
) -> list[dict[str, object]]:
    """The most similar rejected pairs and the least similar accepted ones. Byte-identical pairs are
    accepted whatever their thumbnails say; they are listed (as accepted, ``exact``) only where their
    similarity makes them the closest call, never among the rejected."""
    rejected = np.flatnonzero(~accepted)
    rejected = rejected[np.argsort(-sims[rejected], kind="stable")[:_BORDERLINE]]
    kept = np.flatnonzero(accepted)
    kept = kept[np.argsort(sims[kept], kind="stable")[:_BORDERLINE]]
    return [
        {
            "a": records[int(pi[k])].rel,
            "b": records[int(pj[k])].rel,
            "distance": int(pd[k]),
            "similarity": round(float(sims[k]), 4),
            "accepted": bool(accepted[k]),
            "exact": bool(exact[k]),
        }
        for k in np.r_[rejected, kept].tolist()
    ]
