"""The HTML report of a scrape: rejections by reason, throughput, duplicate rate, a contact sheet."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from diffkit.report import ReportImage, ReportPaths, Section, line_plot, write_report
from diffkit.report.model import Report
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.storage import Store

CONTACT_SHEET_SIZE = 36
THUMBNAIL_PX = 128


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
        "requests_per_s": [
            (k + d + r) / width
            for k, d, r in zip(counts["kept"], counts["duplicate"], counts["rejected"], strict=True)
        ],
        "duplicate_rate": [d / v if v else 0.0 for d, v in zip(counts["duplicate"], valid, strict=True)],
    }


def reason_table(this_run: dict[str, int], all_runs: dict[str, int]) -> list[dict[str, object]]:
    """One row per rejection or duplicate reason seen in any run, with its count now and over all runs."""
    seen = {*this_run, *all_runs}
    reasons = sorted(reason for reason in seen if this_run.get(reason) or all_runs.get(reason))
    return [
        {
            "reason": reason,
            "this run": this_run.get(reason, 0),
            "all runs": max(all_runs.get(reason, 0), this_run.get(reason, 0)),
        }
        for reason in reasons
    ]


def _thumbnail(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.draft("RGB", (THUMBNAIL_PX, THUMBNAIL_PX))
        picture = image.convert("RGB")
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    return picture


def write_scrape_report(
    result: ScrapeResult, store: Store, kept_new: list[str], path: Path | None
) -> ReportPaths:
    bins = _binned(result.timeline, result.duration_s)
    this_run = {
        **result.rejections,
        "duplicate_exact": result.duplicates_exact,
        "duplicate_near": result.duplicates_near,
    }
    table = reason_table(this_run, result.counts_all_runs)
    last = kept_new[-CONTACT_SHEET_SIZE:] or [row["file_name"] for row in store.rows()[-CONTACT_SHEET_SIZE:]]
    images = [ReportImage(_thumbnail(store.root / name), Path(name).stem[:12]) for name in last]
    sections = [
        Section(
            heading="Rejections and duplicates by reason",
            table=table or [{"reason": "none", "this run": 0, "all runs": 0}],
        ),
        Section(
            heading="Throughput",
            figure=line_plot(
                {
                    "requests/s": (bins["t"], bins["requests_per_s"]),
                    "kept/s": (bins["t"], bins["kept_per_s"]),
                },
                xlabel="seconds since start",
                ylabel="per second",
            ),
        ),
        Section(
            heading="Duplicate rate",
            figure=line_plot(
                {"duplicates / valid images": (bins["t"], bins["duplicate_rate"])},
                xlabel="seconds since start",
                ylabel="fraction",
            ),
        ),
        Section(
            heading="Request rate limit (adaptive)",
            figure=line_plot(
                {
                    "limit": (
                        [t for t, _ in result.rate_history] + [result.duration_s],
                        [r for _, r in result.rate_history] + [result.final_rate],
                    )
                },
                xlabel="seconds since start",
                ylabel="requests/s",
            ),
        ),
        Section(
            heading="Contact sheet",
            text="The newest kept images. Look for watermarks and odd crops.",
            images=images,
        ),
        Section(
            heading="Caveats",
            text=(
                "thispersondoesnotexist.com publishes no licence for its images; check before you share "
                "a dataset or model. Duplicates are judged by sha256 and a 64-bit pHash; near-duplicates "
                "beyond the threshold and transformed copies are not caught here (see diffkit dedupe)."
            ),
        ),
    ]
    summary = {
        "kept": result.kept_total,
        "target": result.target,
        "kept this run": result.kept_new,
        "requests": result.requests,
        "duplicate rate": result.duplicate_rate,
        "requests/s": result.requests_per_s,
        "kept/s": result.kept_per_s,
        "rejected": sum(result.rejections.values()),
        "stopped": result.stopped,
        "url": result.url,
    }
    report = Report(
        title=f"Scrape {result.out}",
        command="scrape",
        summary=summary,
        sections=sections,
        data={**result.to_dict(), "timeline_binned": bins},
    )
    return write_report(report, path)
