"""``diffkit dedupe DIR --against REF``: images of DIR that duplicate an image of REF (the leak check
between a training set and an FID reference set). Same two stages as a folder's own dedupe. REF is
read-only input: nothing is written into it (it may be a read-only mount or someone else's folder), so
its hashes and thumbnails are cached in DIR, one file per reference
(``DIR/.diffkit-hashcache-ref-<digest of REF's path>.sqlite``); a rerun against the same REF hashes only
REF's new or changed files. No image of either folder is changed."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import numpy as np

from diffkit.dedupe.config import CACHE_NAME, DedupeConfig
from diffkit.dedupe.hashing import HashCache, HashRecord, hash_images, scan_folder, scrape_records
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.search import search_pairs
from diffkit.dedupe.stages import identical, thumbnails, verify_candidates

__all__ = ["dedupe_against"]


def reference_cache(root: Path, reference: Path) -> Path:
    """Where REF's hash cache lives: in DIR, named after REF's resolved path (REF itself is never
    written)."""
    digest = hashlib.sha256(os.fsencode(reference.resolve())).hexdigest()[:16]
    return root / f"{CACHE_NAME.removesuffix('.sqlite')}-ref-{digest}.sqlite"


def _hashed(
    config: DedupeConfig, folder: Path, warnings: list[str], cache_path: Path | None = None
) -> tuple[list[HashRecord], int, int]:
    """Readable records of ``folder`` (cached at ``cache_path``, by default in the folder), files found,
    files hashed this run."""
    files = scan_folder(folder).files
    cache = HashCache(folder, enabled=config.use_cache, path=cache_path)
    try:
        # DIR as a scrape folder needs no decoding (its manifest's recorded hashes, checked). REF's
        # manifest is not opened: even a read-only SQLite open of a WAL database leaves -wal and -shm
        # files behind, and REF must stay untouched.
        reading = config.use_cache and cache_path is None
        recorded = scrape_records(folder, config.hash_kind, config.decode, reading)
        records, n_hashed, _ = hash_images(
            files, config.hash_kind, config.decode, config.effective_workers, cache, recorded=recorded
        )
        cache.prune({f.rel for f in files})  # the cache stays the size of the folder it describes
    finally:
        cache.close()
    if cache.warning:
        warnings.append(cache.warning)
    return records, len(files), n_hashed


def dedupe_against(config: DedupeConfig, root: Path) -> DedupeResult:
    assert config.against is not None
    started = time.perf_counter()
    reference = config.against.resolve()
    warnings: list[str] = []
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    ours, n_files, n_hashed = _hashed(config, root, warnings)
    theirs, _, _ = _hashed(config, reference, warnings, reference_cache(root, reference))
    seconds["hash"] = time.perf_counter() - t0
    unreadable = [{"path": r.rel, "error": r.error or ""} for r in ours if r.error is not None]
    ours = [r for r in ours if r.error is None]
    records = ours + [r for r in theirs if r.error is None]
    hashes = np.array([r.hash for r in records], dtype=np.uint64)
    t0 = time.perf_counter()
    found = search_pairs(
        hashes, config.effective_threshold, near_miss_limit=0, workers=config.effective_workers
    )
    cross = (found.pairs_i < len(ours)) & (found.pairs_j >= len(ours))  # i < j: i ours, j the reference's
    found.pairs_i, found.pairs_j, found.distances = (
        found.pairs_i[cross],
        found.pairs_j[cross],
        found.distances[cross],
    )
    seconds["search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    verified = verify_candidates(records, thumbnails(records), found, config.min_similarity, config.verify)
    seconds["verify"] = time.perf_counter() - t0
    leaks = [
        {
            "path": records[i].rel,
            "reference": records[j].rel,
            "distance": int(d),
            "similarity": round(float(s), 4),
        }
        for i, j, d, s in zip(
            verified.pairs_i.tolist(),
            verified.pairs_j.tolist(),
            verified.distances.tolist(),
            verified.similarity.tolist(),
            strict=True,
        )
    ]
    seconds["total"] = time.perf_counter() - started
    return DedupeResult(
        directory=str(root),
        hash_kind=config.hash_kind,
        decode=config.decode,
        threshold=config.effective_threshold,
        n_files=n_files,
        n_images=len(ours),
        clusters=[],
        cluster_distances=[],
        n_clusters=0,
        n_duplicates=len({leak["path"] for leak in leaks}),
        n_exact_duplicates=sum(
            identical(records[i], records[j])
            for i, j in zip(verified.pairs_i.tolist(), verified.pairs_j.tolist(), strict=True)
        ),
        unreadable=unreadable,
        action="report",
        quarantine=None,
        n_removed=0,
        manifest_rows_updated=0,
        n_hashed=n_hashed,
        n_cached=n_files - n_hashed,
        nearest_histogram=[0] * 65,
        near_misses=[],
        seconds=seconds,
        min_similarity=config.min_similarity if config.verify else None,
        n_candidates=verified.n_candidates,
        n_rejected=verified.n_rejected,
        similarity_histogram=verified.histogram,
        borderline=verified.borderline,
        against=str(reference),
        leaks=leaks,
        warnings=warnings,
    )
