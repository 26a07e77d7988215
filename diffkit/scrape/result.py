"""What a scrape returns: counts by reason, duplicate rate, throughput, and how the run stopped."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, no_report_line, printable, shown
from diffkit.dataset.redact import redact
from diffkit.scrape.storage import ReconcileReport, Store


def estimate_pool(kept_before: int, valid: int, duplicates: int) -> float | None:
    """Capture-recapture: how many distinct images the source draws from, if it draws uniformly.

    The i-th valid image of this run is a duplicate with probability (kept_before + i) / pool, so
    duplicates ~ (kept_before * valid + valid**2 / 2) / pool; a fresh folder gives valid**2 / (2 * dups).
    """
    if duplicates <= 0:
        return None
    return (kept_before * valid + valid**2 / 2) / duplicates


def list_lines(urls: dict[str, Any]) -> list[str]:
    """The summary of a --urls run: the list, then one line per host (at most 20)."""
    rejected = ", ".join(f"{reason} {count}" for reason, count in urls["rejected"].items()) or "none"
    lines = [
        f"list {shown(urls['file'])}: {urls['listed']} URLs listed ({urls['repeats']} repeats, fetched "
        f"once), {urls['bad_lines']} bad lines, {urls['already_done']} done before; this run fetched "
        f"{urls['fetched']}: kept {urls['kept']}, duplicates {urls['duplicates']}, rejected "
        f"{urls['rejected_total']} ({shown(rejected)}), failed {urls['failed_total']}; "
        f"not fetched {urls['not_fetched']}",
    ]
    lines.extend(
        f"  bad line {bad['line']}: {shown(bad['text'])} ({bad['reason']})" for bad in urls["bad"][:10]
    )
    for host, row in list(urls["hosts"].items())[:20]:
        lines.append(
            f"  {shown(host)}: {row['urls']} URLs, fetched {row['fetched']} in {row['requests']} requests, "
            f"kept {row['kept']}, duplicates {row['duplicates']}, rejected {row['rejected_total']}, "
            f"failed {row['failed_total']}, Retry-After pauses {row['retry_after_pauses']}"
            + (f" [yellow]{shown(row['given_up'])}[/]" if row["given_up"] else "")
        )
    return lines


@dataclass
class ScrapeResult(CommandResult):
    out: str
    url: str
    target: int
    kept_total: int
    kept_new: int
    requests: int
    duplicates_exact: int
    duplicates_near: int
    duplicate_rate: float  # duplicates / valid images received this run
    rejections: dict[str, int]  # this run, by reason
    counts_all_runs: dict[str, int]  # from the manifest: rejections and duplicates of every run
    surplus: int  # valid new images that arrived after the target was reached (not saved)
    duration_s: float
    requests_per_s: float
    kept_per_s: float
    final_rate: float  # the adaptive limiter's rate at the end (requests/s)
    estimated_pool: float | None  # capture-recapture: distinct images the source can serve
    reconcile: dict[str, Any]
    probe: list[dict[str, str]]
    stopped: str  # "complete", "interrupted" or the stop message
    manifest: str
    metadata: str
    interrupted: bool = False
    timeline: list[tuple[float, str]] = field(default_factory=list, repr=False)
    rate_history: list[tuple[float, float]] = field(default_factory=list, repr=False)
    urls: dict[str, Any] | None = None  # --urls: listed, fetched, kept, rejected by reason, per host...
    report_html: str | None = None
    report_json: str | None = None
    # Why no report was written though reports are on: the run fetched nothing (docs/reports.md).
    report_skipped: str | None = None
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_run(cls, run: Any, reconcile: ReconcileReport, store: Store) -> ScrapeResult:
        duration = time.monotonic() - run.started
        duplicates = sum(run.duplicates.values())
        valid = len(run.kept_new) + duplicates
        if run.interrupted:
            stopped = "interrupted"
        elif run.stop_message is not None:
            stopped = run.stop_message
        else:
            stopped = "complete"
        return cls(
            out=printable(store.root),
            url=redact(run.url),
            target=run.config.n,
            kept_total=store.kept_count(),
            kept_new=len(run.kept_new),
            requests=run.requests,
            duplicates_exact=run.duplicates["duplicate_exact"],
            duplicates_near=run.duplicates["duplicate_near"],
            duplicate_rate=duplicates / valid if valid else 0.0,
            rejections=dict(sorted(run.rejections.items())),
            counts_all_runs=store.counts(),
            surplus=run.surplus,
            duration_s=duration,
            requests_per_s=run.requests / duration if duration > 0 else 0.0,
            kept_per_s=len(run.kept_new) / duration if duration > 0 else 0.0,
            final_rate=run.limiter.rate,
            estimated_pool=estimate_pool(store.kept_count() - len(run.kept_new), valid, duplicates),
            reconcile=asdict(reconcile),
            probe=run.probe_steps(),
            stopped=redact(stopped),
            interrupted=run.interrupted,
            manifest=printable(store.manifest_path),
            metadata=printable(store.metadata_path),
            timeline=run.events,
            rate_history=[(t - run.started, rate) for t, rate in run.limiter.history],
            urls=run.list_summary(),
        )

    @property
    def kept(self) -> int:
        return self.kept_total

    def report_paths(self) -> list[Path]:
        return [Path(path) for path in (self.report_html, self.report_json) if path]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timeline")  # per-event data: the report's sidecar holds it binned
        data.pop("rate_history")
        return data

    def summary_lines(self) -> list[str]:
        rejected = ", ".join(f"{reason} {count}" for reason, count in self.rejections.items()) or "none"
        colour = "green" if self.kept_total >= self.target else "yellow"
        lines = [
            f"[bold {colour}]kept {self.kept_total}/{self.target}[/] images in {shown(self.out)} "
            f"(+{self.kept_new} this run) from {shown(self.url or '-')}",
            f"requests {self.requests} in {self.duration_s:.1f} s ({self.requests_per_s:.2f}/s), "
            f"duplicates {self.duplicates_exact} exact + {self.duplicates_near} near "
            f"({self.duplicate_rate:.1%} of valid images)",
            f"rejected: {shown(rejected)}",
        ]
        if self.urls is not None:
            lines.extend(list_lines(self.urls))
        if self.estimated_pool is not None and self.duplicates_exact + self.duplicates_near >= 10:
            # below ~10 duplicates the estimate is off by more than a third: not worth a line
            lines.append(f"the source seems to hold about {self.estimated_pool:,.0f} distinct images")
        if self.interrupted:
            lines.append("[yellow]interrupted[/]: rerun the same command to resume")
        if self.report_html:
            lines.append(f"report: {shown(self.report_html)}")
        if self.report_skipped:
            lines.append(no_report_line(self.report_skipped))
        lines.extend(f"[yellow]warning:[/] {shown(warning)}" for warning in self.warnings)
        return lines
