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
    row = next(row for row in report["data"]["overall"] if row["faces"] == largest)
    return (
        f"{largest:,} eye-aligned faces + {row['copies'] / row['faces']:.0%} planted copies: pair precision "
        f"{s[f'precision_{size}']:.3f}, recall {s[f'recall_{size}']:.3f}, "
        f"{s[f'false_clusters_{size}']} false clusters (also at "
        + ", ".join(f"{other:,}" for other in s["sizes"] if other != largest)
        + ")"
    )


def prose(report: dict[str, Any]) -> dict[str, str]:
    """The figures docs quote in prose (dedupe.md, scrape.md): at the largest size, the old hash-only test
    against the two stages."""
    largest = max(report["summary"]["sizes"])
    rows = [row for row in report["data"]["overall"] if row["faces"] == largest]
    hash_only = next(row for row in rows if row["test"].startswith("hash only"))
    two_stage = next(row for row in rows if row["test"].startswith("two-stage"))
    return {
        "faces": f"{two_stage['faces']:,}",
        "copies": f"{two_stage['copies']:,}",
        "hash_only_precision": f"{hash_only['pair_precision']:.4f}",
        "hash_only_false_clusters": f"{hash_only['false_clusters']:,}",
        "hash_only_most_distinct_faces": f"{hash_only['most_distinct_faces_in_a_cluster']:,}",
        "precision": f"{two_stage['pair_precision']:.3f}",
        "recall": f"{two_stage['recall']:.3f}",
    }
