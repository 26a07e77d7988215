"""bench_dedupe_quality's reading: the two-stage dedupe against hash-only pHash on planted copies."""

from __future__ import annotations

from typing import Any

REPORT = "dedupe_quality"
COMMAND = "python -m benchmarks.bench_dedupe_quality"
PEER = "hash-only pHash at 4 bits (the earlier default)"


def headline(report: dict[str, Any]) -> str:
    s = report["summary"]
    largest = max(s["sizes"])
    size = int(largest)  # a key, not a figure
    return (
        f"{largest:,} eye-aligned faces + 10% planted copies: pair precision "
        f"{s[f'precision_{size}']:.3f}, recall {s[f'recall_{size}']:.3f}, "
        f"{s[f'false_clusters_{size}']} false clusters (also at "
        + ", ".join(f"{other:,}" for other in s["sizes"] if other != largest)
        + ")"
    )
