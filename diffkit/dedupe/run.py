"""``dedupe(config) -> DedupeResult``: scan, hash, search, cluster, act, report."""

from __future__ import annotations

import contextlib
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

from diffkit.console import printable, shown
from diffkit.dedupe.actions import (
    Outcome,
    Removal,
    delete_duplicates,
    finish_interrupted_moves,
    manifest_fetch_times,
    move_duplicates,
    update_manifest,
)
from diffkit.dedupe.clusters import Candidate, connected_groups, keeper_order
from diffkit.dedupe.config import DedupeConfig
from diffkit.dedupe.hashing import HashCache, HashRecord, hash_images, scan_folder
from diffkit.dedupe.movelog import MoveLog
from diffkit.dedupe.search import SearchResult, popcount64, search_pairs
from diffkit.errors import DiffkitError
from diffkit.lock import folder_lock

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
    # Symlinks (to files, or to folders: ending in "/") are not images of the folder: never hashed, kept,
    # moved or deleted, so a link can never be "kept" while the real file goes.
    symlinks_skipped: list[str] = field(default_factory=list)
    n_symlinks_skipped: int = 0
    # Duplicates this run would not touch (unsafe path, no longer a regular file, keeper gone): {"path",
    # "reason"}. n_removed counts only what was actually moved or deleted.
    left_alone: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; file names with undecodable bytes shown as \\xNN (the JSON stays UTF-8)."""
        return _printable_tree(asdict(self))

    def summary_lines(self) -> list[str]:
        """Rich markup lines; every piece of user text (paths, messages) is escaped."""
        lines = [
            f"[bold]{self.n_images}[/] images in {shown(self.directory)} ({self.hash_kind}, threshold "
            f"{self.threshold}, {self.n_hashed} hashed, {self.n_cached} from cache, "
            f"{self.seconds.get('total', 0):.1f} s)",
            f"[bold]{self.n_clusters}[/] duplicate clusters, [bold]{self.n_duplicates}[/] duplicates "
            f"({self.n_exact_duplicates} byte-identical)",
        ]
        for cluster, distances in list(zip(self.clusters, self.cluster_distances, strict=True))[:10]:
            others = ", ".join(f"{shown(p)} ({d})" for p, d in zip(cluster[1:], distances[1:], strict=True))
            lines.append(f"  keep {shown(cluster[0])}  <-  {others}")
        if self.n_clusters > 10:
            lines.append(f"  ... {self.n_clusters - 10} more clusters (see the report or --json)")
        if self.unreadable:
            lines.append(f"[yellow]{len(self.unreadable)} unreadable file(s) skipped[/]:")
            lines.extend(f"  {shown(u['path'])}: {shown(u['error'])}" for u in self.unreadable[:10])
        lines.extend(f"note: {shown(n)}" for n in self.notes)
        lines.extend(self._action_lines())
        lines.extend(f"[yellow]warning:[/] {shown(w)}" for w in self.warnings)
        if self.report_html:
            lines.append(f"report: {shown(self.report_html)}")
        return lines

    def _action_lines(self) -> list[str]:
        if self.action == "report":
            lines = ["nothing changed; --action move puts the duplicates into a quarantine folder"]
            lines = lines if self.n_duplicates else []
        elif self.action == "move":
            lines = [f"moved {self.n_removed} file(s) to {shown(self.quarantine)}"]
        else:
            lines = [f"deleted {self.n_removed} file(s)"]
        if self.left_alone:
            lines.append(f"[yellow]{len(self.left_alone)} duplicate(s) left alone[/]:")
            lines.extend(f"  {shown(x['path'])}: {shown(x['reason'])}" for x in self.left_alone[:10])
        if self.manifest_rows_updated:
            lines.append(
                f"scrape manifest: {self.manifest_rows_updated} row(s) moved to table dedupe_removed"
            )
        return lines


def _printable_tree(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {key: _printable_tree(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_printable_tree(item) for item in value]
    return value


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields ``start(label, total) -> advance(n)``; a rich bar on stderr (stdout stays clean for --json)."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_stderr,
        disable=not enabled,
        transient=False,
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
    """Find exact and near-duplicate images in ``config.directory`` and act on them.

    ``--action move|delete`` holds the folder's lock (and the quarantine's) for the whole run, so two
    runs never decide on and remove the same files; a second run fails at once naming the holder."""
    config.validate()
    root = config.directory.resolve()
    if config.action == "report":
        return _dedupe(config, root, None)
    with folder_lock(root, "dedupe"), contextlib.ExitStack() as stack:
        moves = _Moves(config.effective_quarantine, stack) if config.action == "move" else None
        return _dedupe(config, root, moves)


class _Moves:
    """The quarantine side of a move run: lock and log, opened when the quarantine exists or is needed."""

    def __init__(self, quarantine: Path, stack: contextlib.ExitStack) -> None:
        self.quarantine = quarantine
        self._stack = stack
        self.log: MoveLog | None = None

    def existing(self) -> MoveLog | None:
        """The log of a quarantine that already exists (an earlier run may have left open intents)."""
        return self.ensure() if self.log is not None or self.quarantine.is_dir() else None

    def ensure(self) -> MoveLog:
        if self.log is None:
            try:
                self.quarantine.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DiffkitError(
                    f"cannot create quarantine folder {printable(self.quarantine)} ({exc.strerror}); pass"
                    " --to a writable folder"
                ) from None
            self._stack.enter_context(folder_lock(self.quarantine, "dedupe"))
            self.log = self._stack.enter_context(MoveLog(self.quarantine))
        return self.log


def _dedupe(config: DedupeConfig, root: Path, moves: _Moves | None) -> DedupeResult:
    started = time.perf_counter()
    threshold = config.effective_threshold
    quarantine = config.effective_quarantine
    seconds: dict[str, float] = {}
    warnings: list[str] = []
    recovered = Outcome()
    log = moves.existing() if moves is not None else None
    if log is not None:  # finish what a killed run left, before the scan looks at the folder
        recovered = finish_interrupted_moves(root, quarantine, log)
        warnings.extend(recovered.warnings)

    with _progress(config.progress) as start:
        scan = scan_folder(root, skip=[quarantine])
        files = scan.files
        cache = HashCache(root, enabled=config.use_cache)
        try:
            t0 = time.perf_counter()
            records, n_hashed = hash_images(
                files,
                config.hash_kind,
                config.decode,
                config.effective_workers,
                cache,
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
        found = search_pairs(
            hashes, threshold, advance=start("comparing", len(readable)), workers=config.effective_workers
        )
        seconds["search"] = time.perf_counter() - t0

    clusters, distances, removals, n_exact = _clusters(root, readable, hashes, found)

    outcome = Outcome()
    if config.action == "move" and moves is not None and removals:
        outcome = move_duplicates(root, quarantine, removals, moves.ensure())
    elif config.action == "delete":
        outcome = delete_duplicates(root, removals)
    outcome.done = recovered.done + outcome.done
    outcome.moved_to = {**recovered.moved_to, **outcome.moved_to}
    rows = update_manifest(root, outcome, config.action) if outcome.done else 0
    warnings.extend(outcome.warnings)

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
        n_removed=len(outcome.done) - len(recovered.done),
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
        symlinks_skipped=scan.symlinks,
        n_symlinks_skipped=len(scan.symlinks),
        left_alone=recovered.left_alone + outcome.left_alone,
        notes=_symlink_notes(scan.symlinks),
    )
    seconds["total"] = time.perf_counter() - started
    if config.write_report:
        _write_report(result, root, config.report_path)
    return result


def _symlink_notes(symlinks: list[str]) -> list[str]:
    if not symlinks:
        return []
    shown_names = ", ".join(symlinks[:5]) + (f" and {len(symlinks) - 5} more" if len(symlinks) > 5 else "")
    return [
        f"{len(symlinks)} symlink(s) skipped, not images of this folder (never kept, moved or deleted;"
        f" linked folders are not searched): {shown_names}"
    ]


def _write_report(result: DedupeResult, root: Path, path: Path | None) -> None:
    from diffkit.dedupe.report import write_dedupe_report

    try:
        paths = write_dedupe_report(result, root, path)
        result.report_html, result.report_json = str(paths.html), str(paths.json)
    except (OSError, UnicodeError) as exc:  # the files were already handled: say so rather than fail
        result.warnings.append(f"report not written ({printable(exc)}); pass --report to a writable path")


def _clusters(
    root: Path, readable: list[HashRecord], hashes: np.ndarray, found: SearchResult
) -> tuple[list[list[str]], list[list[int]], list[Removal], int]:
    """Clusters sorted by keeper path (keeper first), distances to the keeper, the removals in that
    order, and how many removals are byte-identical to their keeper."""
    fetched = manifest_fetch_times(root)
    ordered_groups: list[list[int]] = []
    for group in connected_groups(len(readable), found.pairs_i, found.pairs_j):
        candidates = [
            Candidate(
                readable[k].rel,
                readable[k].width,
                readable[k].height,
                _earliest_ns(readable[k], fetched.get(readable[k].rel)),
            )
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
