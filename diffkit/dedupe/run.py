"""``dedupe(config) -> DedupeResult``: scan, hash, search, cluster, act, report."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diffkit.dedupe.actions import (
    Removal,
    delete_duplicates,
    manifest_fetch_times,
    move_duplicates,
    update_manifest,
)
from diffkit.dedupe.clusters import Candidate, connected_groups, keeper_order
from diffkit.dedupe.config import DedupeConfig
from diffkit.dedupe.hashing import HashCache, HashRecord, hash_images, list_images
from diffkit.dedupe.search import SearchResult, popcount64, search_pairs

_stderr = Console(stderr=True)


@dataclass
class DedupeResult:
    directory: str
    hash_kind: str
    decode: str
    threshold: int
    n_files: int  # image files found (readable or not)
    n_images: int  # images hashed and compared
    clusters: list[list[str]]  # relative paths, keeper first; only clusters of >= 2
    cluster_distances: list[list[int]]  # per cluster member: Hamming distance to the keeper (keeper: 0)
    n_clusters: int
    n_duplicates: int  # files that are not keepers
    n_exact_duplicates: int  # of those, byte-identical to their keeper
    unreadable: list[dict[str, str]]  # {"path", "error"}: skipped
    action: str
    quarantine: str | None
    n_removed: int  # files moved or deleted by this run
    manifest_rows_updated: int
    n_hashed: int  # files hashed this run; the rest came from the cache
    n_cached: int
    nearest_histogram: list[int]  # [count of images whose nearest neighbour is at distance d, d = 0..64]
    near_misses: list[dict[str, Any]]  # closest pairs just above the threshold: {"a", "b", "distance"}
    seconds: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    report_html: str | None = None
    report_json: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_lines(self) -> list[str]:
        lines = [
            f"[bold]{self.n_images}[/] images in {self.directory} ({self.hash_kind}, threshold "
            f"{self.threshold}, {self.n_hashed} hashed, {self.n_cached} from cache, "
            f"{self.seconds.get('total', 0):.1f} s)",
            f"[bold]{self.n_clusters}[/] duplicate clusters, [bold]{self.n_duplicates}[/] duplicates "
            f"({self.n_exact_duplicates} byte-identical)",
        ]
        for cluster, distances in list(zip(self.clusters, self.cluster_distances, strict=True))[:10]:
            others = ", ".join(f"{p} ({d})" for p, d in zip(cluster[1:], distances[1:], strict=True))
            lines.append(f"  keep {cluster[0]}  <-  {others}")
        if self.n_clusters > 10:
            lines.append(f"  ... {self.n_clusters - 10} more clusters (see the report or --json)")
        if self.unreadable:
            lines.append(f"[yellow]{len(self.unreadable)} unreadable file(s) skipped[/]:")
            lines.extend(f"  {u['path']}: {u['error']}" for u in self.unreadable[:10])
        if self.action == "report":
            if self.n_duplicates:
                lines.append("nothing changed; --action move puts the duplicates into a quarantine folder")
        elif self.action == "move":
            lines.append(f"moved {self.n_removed} file(s) to {self.quarantine}")
        else:
            lines.append(f"deleted {self.n_removed} file(s)")
        if self.manifest_rows_updated:
            lines.append(
                f"scrape manifest: {self.manifest_rows_updated} row(s) moved to table dedupe_removed"
            )
        lines.extend(f"[yellow]warning:[/] {w}" for w in self.warnings)
        if self.report_html:
            lines.append(f"report: {self.report_html}")
        return lines


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields ``start(label, total) -> advance(n)``; a rich bar on stderr (stdout stays clean for --json)."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=_stderr, disable=not enabled, transient=False,
    ) as progress:

        def start(label: str, total: int) -> Callable[[int], None]:
            task = progress.add_task(label, total=total)
            return lambda n: progress.advance(task, n)

        yield start


def _earliest_ns(record: HashRecord, fetched_at: str | None) -> int:
    if fetched_at:
        try:
            return int(datetime.fromisoformat(fetched_at).timestamp() * 1e9)
        except ValueError:
            pass
    return record.mtime_ns


def dedupe(config: DedupeConfig) -> DedupeResult:
    """Find exact and near-duplicate images in ``config.directory`` and act on them."""
    config.validate()
    started = time.perf_counter()
    root = config.directory.resolve()
    threshold = config.effective_threshold
    quarantine = config.effective_quarantine
    seconds: dict[str, float] = {}
    warnings: list[str] = []

    with _progress(config.progress) as start:
        files = list_images(root, skip=[quarantine])
        cache = HashCache(root, enabled=config.use_cache)
        try:
            t0 = time.perf_counter()
            records, n_hashed = hash_images(
                files, config.hash_kind, config.decode, config.effective_workers, cache,
                start("hashing", len(files)),
            )
            cache.prune({f.rel for f in files})
            seconds["hash"] = time.perf_counter() - t0
        finally:
            cache.close()
        if cache.warning:
            warnings.append(cache.warning)

        readable = [r for r in records if r.error is None]
        unreadable = [{"path": r.rel, "error": r.error or ""} for r in records if r.error is not None]
        hashes = np.array([r.hash for r in readable], dtype=np.uint64)
        t0 = time.perf_counter()
        found = search_pairs(hashes, threshold, advance=start("comparing", len(readable)),
                             workers=config.effective_workers)
        seconds["search"] = time.perf_counter() - t0

    clusters, distances, removals, n_exact = _clusters(root, readable, hashes, found)

    done: list[str] = []
    if config.action == "move":
        done = move_duplicates(root, quarantine, removals)
    elif config.action == "delete":
        done = delete_duplicates(root, removals)
    rows = update_manifest(root, removals, done, config.action, quarantine) if done else 0

    nearest = found.nearest[found.nearest <= 64]
    result = DedupeResult(
        directory=str(root),
        hash_kind=config.hash_kind,
        decode=config.decode,
        threshold=threshold,
        n_files=len(files),
        n_images=len(readable),
        clusters=clusters,
        cluster_distances=distances,
        n_clusters=len(clusters),
        n_duplicates=len(removals),
        n_exact_duplicates=n_exact,
        unreadable=unreadable,
        action=config.action,
        quarantine=str(quarantine) if config.action == "move" else None,
        n_removed=len(done),
        manifest_rows_updated=rows,
        n_hashed=n_hashed,
        n_cached=len(files) - n_hashed,
        nearest_histogram=np.bincount(nearest, minlength=65).tolist(),
        near_misses=[
            {"a": readable[i].rel, "b": readable[j].rel, "distance": int(d)}
            for i, j, d in zip(found.near_miss_i, found.near_miss_j, found.near_miss_distances, strict=True)
        ],
        seconds=seconds,
        warnings=warnings,
    )
    seconds["total"] = time.perf_counter() - started
    if config.write_report:
        from diffkit.dedupe.report import write_dedupe_report

        try:
            paths = write_dedupe_report(result, root, config.report_path)
            result.report_html, result.report_json = str(paths.html), str(paths.json)
        except OSError as exc:  # the files were already handled: say so rather than fail
            result.warnings.append(f"report not written ({exc}); pass --report to a writable path")
    return result


def _clusters(root: Path, readable: list[HashRecord], hashes: np.ndarray, found: SearchResult
              ) -> tuple[list[list[str]], list[list[int]], list[Removal], int]:
    """Clusters sorted by keeper path (keeper first), distances to the keeper, the removals in that
    order, and how many removals are byte-identical to their keeper."""
    fetched = manifest_fetch_times(root)
    ordered_groups: list[list[int]] = []
    for group in connected_groups(len(readable), found.pairs_i, found.pairs_j):
        candidates = [
            Candidate(readable[k].rel, readable[k].width, readable[k].height,
                      _earliest_ns(readable[k], fetched.get(readable[k].rel)))
            for k in group
        ]
        ordered_groups.append([group[k] for k in keeper_order(candidates)])
    ordered_groups.sort(key=lambda g: readable[g[0]].rel)

    clusters: list[list[str]] = []
    distances: list[list[int]] = []
    removals: list[Removal] = []
    n_exact = 0
    for ordered in ordered_groups:
        keeper = ordered[0]
        to_keeper = popcount64(hashes[ordered] ^ hashes[keeper]).astype(int).tolist()
        clusters.append([readable[k].rel for k in ordered])
        distances.append(to_keeper)
        for k, d in zip(ordered[1:], to_keeper[1:], strict=True):
            removals.append(Removal(readable[k].rel, readable[keeper].rel, d))
            n_exact += readable[k].sha256 == readable[keeper].sha256
    return clusters, distances, removals, n_exact
