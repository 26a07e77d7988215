"""What a scrape returns and reports: counts by reason, duplicate rate, throughput over time."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from diffkit.console import printable, shown
from diffkit.dataset.redact import redact
from diffkit.scrape.storage import ReconcileReport, Store

CONTACT_SHEET_SIZE = 36
THUMBNAIL_PX = 128


def estimate_pool(kept_before: int, valid: int, duplicates: int) -> float | None:
    """Capture-recapture: how many distinct images the source draws from, if it draws uniformly.

    The i-th valid image of this run is a duplicate with probability (kept_before + i) / pool, so
    duplicates ~ (kept_before * valid + valid**2 / 2) / pool; a fresh folder gives valid**2 / (2 * dups).
    """
    if duplicates <= 0:
        return None
    return (kept_before * valid + valid**2 / 2) / duplicates


@dataclass
class ScrapeResult:
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
    interrupted: bool
    manifest: str
    metadata: str
    timeline: list[tuple[float, str]] = field(default_factory=list, repr=False)
    rate_history: list[tuple[float, float]] = field(default_factory=list, repr=False)
    report_html: str | None = None
    report_json: str | None = None
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
            probe=[step.to_dict() for step in run.probe.steps] if run.probe else [],
            stopped=redact(stopped),
            interrupted=run.interrupted,
            manifest=printable(store.manifest_path),
            metadata=printable(store.metadata_path),
            timeline=run.events,
            rate_history=[(t - run.started, rate) for t, rate in run.limiter.history],
        )

    @property
    def kept(self) -> int:
        return self.kept_total

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("timeline")
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
        if self.estimated_pool is not None and self.duplicates_exact + self.duplicates_near >= 10:
            # below ~10 duplicates the estimate is off by more than a third: not worth a line
            lines.append(f"the source seems to hold about {self.estimated_pool:,.0f} distinct images")
        if self.interrupted:
            lines.append("[yellow]interrupted[/]: rerun the same command to resume")
        if self.report_html:
            lines.append(f"report: {shown(self.report_html)}")
        lines.extend(f"[yellow]warning:[/] {shown(warning)}" for warning in self.warnings)
        return lines


def _binned(timeline: list[tuple[float, str]], duration: float) -> dict[str, list[float]]:
    """Per-interval rates for the plots: ~40 bins over the run."""
    width = max(duration / 40, 1.0)
    bins = max(1, int(duration // width) + 1)
    counts = {kind: [0] * bins for kind in ("kept", "duplicate", "rejected")}
    for moment, kind in timeline:
        counts[kind][min(int(moment // width), bins - 1)] += 1
    centres = [(index + 0.5) * width for index in range(bins)]
    valid = [k + d for k, d in zip(counts["kept"], counts["duplicate"], strict=True)]
    return {
        "t": centres,
        "kept_per_s": [k / width for k in counts["kept"]],
        "requests_per_s": [(k + d + r) / width for k, d, r in
                           zip(counts["kept"], counts["duplicate"], counts["rejected"], strict=True)],
        "duplicate_rate": [d / v if v else 0.0 for d, v in zip(counts["duplicate"], valid, strict=True)],
    }


def reason_table(this_run: dict[str, int], all_runs: dict[str, int]) -> list[dict[str, object]]:
    """One row per rejection or duplicate reason seen in any run, with its count now and over all runs."""
    seen = {*this_run, *all_runs}
    reasons = sorted(reason for reason in seen if this_run.get(reason) or all_runs.get(reason))
    return [{"reason": reason, "this run": this_run.get(reason, 0),
             "all runs": max(all_runs.get(reason, 0), this_run.get(reason, 0))} for reason in reasons]


def _thumbnail(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))
        picture = image.convert("RGB")
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return picture


def write_scrape_report(result: ScrapeResult, store: Store, kept_new: list[str], path: Path | None) -> Any:
    from diffkit.report import ReportImage, Section, line_plot, write_report
    from diffkit.report.model import Report

    bins = _binned(result.timeline, result.duration_s)
    this_run = {**result.rejections, "duplicate_exact": result.duplicates_exact,
                "duplicate_near": result.duplicates_near}
    table = reason_table(this_run, result.counts_all_runs)
    last = kept_new[-CONTACT_SHEET_SIZE:] or [row["file_name"] for row in store.rows()[-CONTACT_SHEET_SIZE:]]
    images = [ReportImage(_thumbnail(store.root / name), Path(name).stem[:12]) for name in last]
    sections = [
        Section(heading="Rejections and duplicates by reason",
                table=table or [{"reason": "none", "this run": 0, "all runs": 0}]),
        Section(heading="Throughput", figure=line_plot(
            {"requests/s": (bins["t"], bins["requests_per_s"]), "kept/s": (bins["t"], bins["kept_per_s"])},
            xlabel="seconds since start", ylabel="per second")),
        Section(heading="Duplicate rate", figure=line_plot(
            {"duplicates / valid images": (bins["t"], bins["duplicate_rate"])},
            xlabel="seconds since start", ylabel="fraction")),
        Section(heading="Request rate limit (adaptive)", figure=line_plot(
            {"limit": ([t for t, _ in result.rate_history] + [result.duration_s],
                       [r for _, r in result.rate_history] + [result.final_rate])},
            xlabel="seconds since start", ylabel="requests/s")),
        Section(heading="Contact sheet", text="The newest kept images. Look for watermarks and odd crops.",
                images=images),
        Section(heading="Caveats", text=(
            "thispersondoesnotexist.com publishes no licence for its images; check before you share a "
            "dataset or model. Duplicates are judged by sha256 and a 64-bit pHash; near-duplicates beyond "
            "the threshold and transformed copies are not caught here (see diffkit dedupe)."
        )),
    ]
    summary = {
        "kept": result.kept_total, "target": result.target, "kept this run": result.kept_new,
        "requests": result.requests, "duplicate rate": result.duplicate_rate,
        "requests/s": result.requests_per_s, "kept/s": result.kept_per_s,
        "rejected": sum(result.rejections.values()), "stopped": result.stopped, "url": result.url,
    }
    report = Report(title=f"Scrape {result.out}", command="scrape", summary=summary, sections=sections,
                    data={**result.to_dict(), "timeline_binned": bins})
    return write_report(report, path)
