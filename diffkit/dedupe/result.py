"""What ``diffkit dedupe`` returns: the clusters, what was done to them, and the numbers for the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, no_report_line, printable, shown


@dataclass
class DedupeResult(CommandResult):
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
    n_hashed: int  # files hashed (decoded) this run; the rest came from the cache or the scrape manifest
    n_cached: int
    nearest_histogram: list[int]  # [count of images whose nearest neighbour is at distance d, d = 0..64]
    near_misses: list[dict[str, Any]]  # closest pairs just above the threshold: {"a", "b", "distance"}
    seconds: dict[str, float]
    # Stage 2 (thumbnail verifier): None when off (--no-verify); candidates are the hash pairs, rejected
    # those the verifier turned down; the histogram counts candidate similarities per 0.01 from 0.50
    # (below 0.50 in the first bin); borderline: the closest calls on either side of min_similarity.
    min_similarity: float | None = None
    n_candidates: int = 0
    n_rejected: int = 0
    similarity_histogram: list[int] = field(default_factory=list)
    borderline: list[dict[str, Any]] = field(default_factory=list)
    # --against REF: images of the folder that duplicate a reference image {"path", "reference",
    # "distance", "similarity"}; reference paths are relative to ``against``.
    against: str | None = None
    leaks: list[dict[str, Any]] = field(default_factory=list)
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
    # Of n_cached: files whose pHash and thumbnail a scrape recorded in the manifest, checked unchanged
    # (size, mtime, sha256) and not decoded again.
    n_from_scrape: int = 0
    # sha256 of what the report says and of the files as the hash cache keys them; a run that moved and
    # deleted nothing and matches the newest report of the folder writes none: report_skipped says why.
    fingerprint: str | None = None
    report_skipped: str | None = None

    def report_paths(self) -> list[Path]:
        return [Path(path) for path in (self.report_html, self.report_json) if path]

    def to_dict(self) -> dict[str, Any]:
        """Plain data; file names with undecodable bytes shown as \\xNN (the JSON stays UTF-8)."""
        return _printable_tree(asdict(self))

    def summary_lines(self) -> list[str]:
        """Rich markup lines; every piece of user text (paths, messages) is escaped."""
        lines = [
            f"[bold]{self.n_images}[/] images in {shown(self.directory)} ({self.hash_kind}, threshold "
            f"{self.threshold}, {self.n_hashed} hashed, {self.n_cached} from cache"
            + (f" ({self.n_from_scrape} recorded by the scrape)" if self.n_from_scrape else "")
            + ", "
            f"{self.seconds.get('total', 0):.1f} s)",
            f"[bold]{self.n_clusters}[/] duplicate clusters, [bold]{self.n_duplicates}[/] duplicates "
            f"({self.n_exact_duplicates} byte-identical)",
        ]
        if self.min_similarity is not None:
            lines.append(
                f"{self.n_candidates} candidate pairs within {self.threshold} bits, {self.n_rejected} turned"
                f" down by the thumbnail check (similarity < {self.min_similarity})"
            )
        if self.against is not None:
            lines[1] = f"[bold]{len(self.leaks)}[/] image(s) duplicate an image of {shown(self.against)}"
            lines.extend(
                f"  {shown(x['path'])}  =  {shown(x['reference'])} ({x['distance']} bits)"
                for x in self.leaks[:10]
            )
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
        if self.report_skipped:
            lines.append(no_report_line(self.report_skipped))
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
