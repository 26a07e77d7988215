"""The HTML report of a scrape: rejections by reason, throughput, duplicate rate, a contact sheet."""

from __future__ import annotations

import math
from pathlib import Path
from urllib.parse import urlsplit

from PIL import Image

from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.plots import line_plot
from diffkit.report.render import format_value, write_report
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


def pool_range(estimate: float, duplicates: int) -> tuple[float, float] | None:
    """A rough 95% range of the capture-recapture estimate: the duplicate count taken as Poisson.

    The estimate is inversely proportional to the number of duplicates seen, so the range of that
    count (d ± 1.96 √d) maps to the range of the estimate; with fewer than 4 duplicates it is unbounded.
    """
    spread = 1.96 * math.sqrt(duplicates)
    if duplicates - spread <= 0:
        return None
    return estimate * duplicates / (duplicates + spread), estimate * duplicates / (duplicates - spread)


def pool_section(result: ScrapeResult) -> Section:
    """The capture-recapture estimate of how many distinct images the source can serve."""
    duplicates = result.duplicates_exact + result.duplicates_near
    valid = result.kept_new + duplicates
    if result.estimated_pool is None:
        text = (
            f"No duplicates among the {valid} valid images of this run, so no estimate yet: the source "
            "holds many more distinct images than were fetched."
        )
        return Section(heading="Distinct images at the source (estimate)", text=text)
    bounds = pool_range(result.estimated_pool, duplicates)
    span = (
        f" (rough 95% range {format_value(round(bounds[0]))} to {format_value(round(bounds[1]))})"
        if bounds
        else " (too few duplicates for a range)"
    )
    text = (
        f"About {format_value(round(result.estimated_pool))} distinct images{span}: capture-recapture from "
        f"{duplicates} duplicates among {valid} valid images of this run, on top of the "
        f"{result.kept_total - result.kept_new} kept before it. It assumes the source draws uniformly "
        "from a fixed pool; a scrape asking for more images than the pool holds will mostly get duplicates."
    )
    badges = ["rough: fewer than 10 duplicates"] if duplicates < 10 else []
    return Section(heading="Distinct images at the source (estimate)", text=text, badges=badges)


def list_sections(result: ScrapeResult) -> list[Section]:
    """A --urls run: what became of the list, host by host, and its bad lines (none for one URL)."""
    urls = result.urls
    if urls is None:
        return []
    text = (
        f"{urls['file']}: {urls['listed']} URLs listed, {urls['unique']} distinct ({urls['repeats']} repeats "
        f"fetched once), {urls['bad_lines']} bad lines, {urls['already_done']} done by an earlier run. "
        f"This run settled {urls['fetched']}: kept {urls['kept']}, duplicates {urls['duplicates']}, "
        f"rejected {urls['rejected_total']}, failed {urls['failed_total']} (fetched again by a rerun); "
        f"{urls['not_fetched']} not fetched. Each host has its own rate limiter and Retry-After pause."
    )
    hosts = [
        {
            "host": host,
            "URLs": row["urls"],
            "requests": row["requests"],
            "kept": row["kept"],
            "duplicates": row["duplicates"],
            "rejected": ", ".join(f"{reason} {count}" for reason, count in row["rejected"].items()) or "0",
            "failed": ", ".join(f"{reason} {count}" for reason, count in row["failed"].items()) or "0",
            "Retry-After pauses": row["retry_after_pauses"],
            "not fetched": row["not_fetched"],
            "note": row["given_up"],
        }
        for host, row in urls["hosts"].items()
    ]
    sections = [Section(heading="URL list, per host", text=text, table=hosts or None)]
    if urls["bad"]:
        shown = len(urls["bad"])
        sections.append(
            Section(
                heading="Bad lines of the list",
                text=f"{urls['bad_lines']} lines are not http(s) URLs"
                + (f" (the first {shown})" if shown < urls["bad_lines"] else ""),
                table=urls["bad"],
            )
        )
    return sections


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
        pool_section(result),
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
        *list_sections(result),
        Section(
            heading="Contact sheet",
            text="The newest kept images. Look for watermarks and odd crops.",
            images=images,
        ),
        Section(
            heading="Caveats",
            text=(
                # the host actually scraped (never a password in the URL), not one fixed site
                f"{urlsplit(str(result.url or '')).hostname or 'The source site'} publishes no licence "
                "for its images that diffkit knows of; check its terms before you share "
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
        "duplicate rate": round(result.duplicate_rate, 4),
        "requests/s": round(result.requests_per_s, 2),
        "kept/s": round(result.kept_per_s, 2),
        "rejected": sum(result.rejections.values()),
        "distinct images at the source (estimate)": (
            None if result.estimated_pool is None else round(result.estimated_pool)
        ),
        "stopped": result.stopped,
        "url": result.url,
    }
    pool = (
        ""
        if result.estimated_pool is None
        else f"; the source holds ≈ {round(result.estimated_pool):,} images"
    )
    report = Report(
        title=f"Scrape {result.out}",
        headline=f"kept {result.kept_total:,}/{result.target:,} images, {result.requests:,} requests{pool}",
        command="scrape",
        summary=summary,
        sections=sections,
        data={**result.to_dict(), "timeline_binned": bins},
    )
    return write_report(report, path)
