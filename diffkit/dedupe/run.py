"""``dedupe(config) -> DedupeResult``: scan, hash, search, cluster, act, report."""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import numpy as np

from diffkit.atomic import check_writable_dir
from diffkit.console import Bar, printable
from diffkit.dedupe.actions import (
    ActionStopped,
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
from diffkit.dedupe.hashing import HashCache, HashRecord, hash_images, scan_folder, scrape_records
from diffkit.dedupe.movelog import MoveLog
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.search import popcount64, search_pairs
from diffkit.dedupe.stages import Verified, identical, thumbnails, verify_candidates
from diffkit.errors import DiffkitError
from diffkit.lock import folder_lock


@contextmanager
def _phase(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """One bar on stderr for one phase (hashing, comparing); yields ``advance(n)``."""
    with Bar(label, total, enabled) as bar:
        yield lambda n: bar.update(advance=n)


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
    root = config.directory.resolve()
    if config.write_report:  # an unwritable --report fails before any work
        from diffkit.report.render import DEFAULT_REPORTS_DIR

        folder = config.report_path.parent if config.report_path else DEFAULT_REPORTS_DIR
        check_writable_dir(folder, "the report (--report)")
    if config.against is not None:
        from diffkit.dedupe.against import dedupe_against

        result = dedupe_against(config, root)
        _report_unless_unchanged(result, root, config, acted=False, records=None)  # the leaks decide
        return result
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

    scan = scan_folder(root, skip=[quarantine])
    files = scan.files
    cache = HashCache(root, enabled=config.use_cache)
    try:
        t0 = time.perf_counter()
        recorded = scrape_records(root, config.hash_kind, config.decode, config.use_cache)
        with _phase("hashing", len(files), config.progress) as advance:
            records, n_hashed, n_recorded = hash_images(
                files,
                config.hash_kind,
                config.decode,
                config.effective_workers,
                cache,
                advance,
                recorded,
                lazy_sha256=True,  # exact duplicates are found among the files of one size
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
    with _phase("comparing", len(readable), config.progress) as advance:
        found = search_pairs(hashes, threshold, advance=advance, workers=config.effective_workers)
    seconds["search"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    thumbs = thumbnails(readable)
    verified = verify_candidates(readable, thumbs, found, config.min_similarity, config.verify)
    seconds["verify"] = time.perf_counter() - t0

    clusters, distances, removals, n_exact = _clusters(root, readable, hashes, verified)

    try:
        outcome = Outcome()
        if config.action == "move" and moves is not None and removals:
            outcome = move_duplicates(root, quarantine, removals, moves.ensure())
        elif config.action == "delete":
            outcome = delete_duplicates(root, removals)
    except ActionStopped as stopped:  # the files already removed leave the scrape manifest all the same
        _record_partial(root, recovered, stopped, config.action)
        raise
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
        n_from_scrape=n_recorded,
        nearest_histogram=np.bincount(nearest, minlength=65).tolist(),
        near_misses=[
            {"a": readable[i].rel, "b": readable[j].rel, "distance": int(d)}
            for i, j, d in zip(found.near_miss_i, found.near_miss_j, found.near_miss_distances, strict=True)
        ],
        seconds=seconds,
        min_similarity=config.min_similarity if config.verify else None,
        n_candidates=verified.n_candidates,
        n_rejected=verified.n_rejected,
        similarity_histogram=verified.histogram,
        borderline=verified.borderline,
        warnings=warnings,
        symlinks_skipped=scan.symlinks,
        n_symlinks_skipped=len(scan.symlinks),
        left_alone=recovered.left_alone + outcome.left_alone,
        notes=_symlink_notes(scan.symlinks),
    )
    seconds["total"] = time.perf_counter() - started
    acted = bool(outcome.done or rows or recovered.done)
    _report_unless_unchanged(result, root, config, acted=acted, records=records)
    return result


def _record_partial(root: Path, recovered: Outcome, stopped: ActionStopped, action: str) -> None:
    """Move the manifest rows of the files removed before an action stopped; the stop stays the error."""
    done = Outcome(
        done=recovered.done + stopped.outcome.done,
        moved_to={**recovered.moved_to, **stopped.outcome.moved_to},
    )
    if done.done:
        try:
            update_manifest(root, done, action)
        except DiffkitError as exc:
            raise DiffkitError(f"{stopped} ({exc})") from None


def _symlink_notes(symlinks: list[str]) -> list[str]:
    if not symlinks:
        return []
    shown_names = ", ".join(symlinks[:5]) + (f" and {len(symlinks) - 5} more" if len(symlinks) > 5 else "")
    return [
        f"{len(symlinks)} symlink(s) skipped, not images of this folder (never kept, moved or deleted;"
        f" linked folders are not searched): {shown_names}"
    ]


# Counters that differ between two runs over the same folder (timings, what the cache spared): left out of
# the fingerprint that decides whether a run's report would only repeat the last one (docs/reports.md).
_VOLATILE = ("seconds", "n_hashed", "n_cached", "n_from_scrape", "report_html", "report_json")
_VOLATILE += ("report_skipped", "fingerprint")


def _fingerprint(result: DedupeResult, records: list[HashRecord] | None) -> str:
    """sha256 of what the report says (options, findings, action) and of the files as the hash cache
    keys them (path, size, mtime, hash): equal fingerprints, the same report."""
    said = {key: value for key, value in result.to_dict().items() if key not in _VOLATILE}
    files = [[r.rel, r.size, r.mtime_ns, r.hash] for r in records or []]
    text = json.dumps([said, files], sort_keys=True, default=str)  # ASCII: odd bytes of names escaped
    return hashlib.sha256(text.encode()).hexdigest()


def _last_report(directory: str, reports_dir: Path) -> tuple[Path, str | None] | None:
    """The newest dedupe report of ``directory`` in ``reports_dir`` (its page, its fingerprint), read as
    the index reads sidecars (regular files, size cap); unreadable ones are passed over."""
    from diffkit.report.sidecars import (
        SCHEMA,
        SIDECAR_MAX_BYTES,
        UnreadableFile,
        parse_sidecar,
        read_regular_file,
    )

    found: list[tuple[str, int, Path, str | None]] = []
    for path in reports_dir.glob("dedupe-*.json") if reports_dir.is_dir() else []:
        if not path.with_suffix(".html").is_file():  # a sidecar without its page is no report (as the index)
            continue
        try:
            content = parse_sidecar(read_regular_file(path, SIDECAR_MAX_BYTES))
            mtime = path.stat().st_mtime_ns
        except (UnreadableFile, OSError):
            continue
        data = content.get("data") if isinstance(content, dict) else None
        if isinstance(data, dict) and content.get("schema") == SCHEMA and data.get("directory") == directory:
            found.append((str(content.get("created", "")), mtime, path, data.get("fingerprint")))
    if not found:
        return None
    _created, _mtime, path, fingerprint = max(found, key=lambda item: item[:2])
    return path.with_suffix(".html"), fingerprint if isinstance(fingerprint, str) else None


def _report_unless_unchanged(
    result: DedupeResult, root: Path, config: DedupeConfig, acted: bool, records: list[HashRecord] | None
) -> None:
    """Write the report, unless this run moved, deleted and repaired nothing (``acted``) and would repeat
    the newest report of the same folder. An explicit --report is always written."""
    if not config.write_report:
        return
    result.fingerprint = _fingerprint(result, records)
    if not acted and config.report_path is None:
        from diffkit.report.render import DEFAULT_REPORTS_DIR

        last = _last_report(printable(result.directory), DEFAULT_REPORTS_DIR)
        if last is not None and last[1] == result.fingerprint:
            result.report_skipped = (
                f"nothing changed since {last[0]} (the same images, options and findings; nothing moved "
                "or deleted)"
            )
            return
    _write_report(result, root, config.report_path)


def _write_report(result: DedupeResult, root: Path, path: Path | None) -> None:
    from diffkit.dedupe.report import write_dedupe_report

    try:
        paths = write_dedupe_report(result, root, path)
        result.report_html, result.report_json = str(paths.html), str(paths.json)
    except (OSError, UnicodeError) as exc:  # checked writable at the start; the files are handled: say so
        result.warnings.append(f"report not written ({printable(exc)}); pass --report to a writable path")


def _clusters(
    root: Path, readable: list[HashRecord], hashes: np.ndarray, found: Verified
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
            n_exact += identical(readable[k], readable[keeper])
    return clusters, distances, removals, n_exact
