"""bench_scrape's reading: diffkit's scraper against a competent user's threaded ``httpx`` loop, and
against its floor (that loop plus validation and a durable write)."""

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
        f"{s['validation now ms/image']:.1f} ms of it), "
        f"{s['CPU ratio diffkit/floor']:.2f}x the floor of "
        f"{s['floor CPU ms/kept (peer + validation + durable write)']:.1f} ms (the peer plus validation "
        f"and a durable write; goal {s['goal floor ratio']:g}x) and "
        f"{s['CPU ratio diffkit/measured floor (median of rounds)']:.2f}x that floor run as a "
        f"contender in the same rounds ({s['measured floor CPU ms/kept (same rounds)']:.1f} ms)"
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
    floor = (
        f"Floor (the peer's CPU plus validation and a durable write, from the cost sections): "
        f"{s['floor CPU ms/kept (peer + validation + durable write)']:.1f} ms per kept image; diffkit is "
        f"{s['CPU ratio diffkit/floor']:.2f}x it (goal {s['goal floor ratio']:g}x). Run as a contender "
        f"in the same rounds (same contention): {s['measured floor CPU ms/kept (same rounds)']:.1f} ms; "
        f"diffkit is {s['CPU ratio diffkit/measured floor (median of rounds)']:.2f}x it."
    )
    parts = [[row["part"], f"{row['cpu_ms_per_kept']:.2f}"] for row in report["data"]["breakdown"]]
    breakdown = table(["where diffkit's CPU goes (one more run, instrumented)", "ms per kept image"], parts)
    above = [
        [row["part"], f"{row['cpu_ms_per_kept']:.2f}", f"{row['of the floor']:.0%}"]
        for row in report["data"]["above_floor"]
    ]
    remains = table(["what diffkit spends above the floor", "ms per kept image", "of the floor"], above)
    return setup + "\n\n" + "\n\n".join([table(header, rows), floor, breakdown, remains])


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figures docs/benchmarks.md quotes in its prose: the CPU goals the report checks."""
    s = report["summary"]
    return {"goal": f"{s['goal CPU ratio']:g}", "floor_goal": f"{s['goal floor ratio']:g}"}
