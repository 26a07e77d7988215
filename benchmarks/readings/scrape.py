"""bench_scrape's reading: diffkit's scraper against a competent user's threaded ``httpx`` loop."""

from __future__ import annotations

from typing import Any

from benchmarks.readings.figures import table

REPORT = "scrape"
COMMAND = "python -m benchmarks.bench_scrape"
PEER = "8 threads, one shared `httpx.Client`, sleeping on Retry-After"


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    return (
        f"at a {s['R (req/s cap)']:g} req/s cap and {s['L (s)']:g} s latency: "
        f"{s['diffkit kept/s']:.1f} kept/s vs {s['peer kept/s']:.1f} "
        f"({s['diffkit 429s']:g} vs {s['peer 429s']:g} 429s); client CPU per kept "
        f"image {s['diffkit CPU ms/kept']:.1f} ms vs {s['peer CPU ms/kept']:.1f} ms "
        f"({s['CPU ratio diffkit/peer (median of rounds)']:.1f}x; validating each image is "
        f"{s['validation now ms/image']:.1f} ms of it)"
    )


def block(report: dict[str, Any]) -> str:
    s = report["summary"]
    setup = (
        f"Setup: N = {s['N']}, cap R = {s['R (req/s cap)']:g} req/s, latency L = {s['L (s)']:g} s, "
        f"{s['image px']} px JPEGs, concurrency {s['concurrency']}; report created {report['created']}."
    )
    rows = [
        [
            row["contender"],
            str(row["kept"]),
            str(row["requests"]),
            f"{row['seconds']:.1f}",
            str(row["http_429"]),
            f"{row['kept_per_s']:.2f}",
            f"{row['fraction_of_cap']:.0%}",
            f"{row['cpu_ms_per_kept']:.1f}",
        ]
        for row in report["data"]["rows"]
    ]
    header = ["contender", "kept", "requests", "s", "429s", "kept/s", "of R", "client CPU ms per kept image"]
    return setup + "\n\n" + table(header, rows)


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figure docs/benchmarks.md quotes in its prose: the CPU goal the report checks."""
    return {"goal": f"{report['summary']['goal CPU ratio']:g}"}
