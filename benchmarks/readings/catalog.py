"""Every reading in the order the docs show it, and the command docs/generate.py runs to get them.

    .venv/bin/python -m benchmarks.readings.catalog [--reports DIR]

prints one JSON object: ``blocks``, for the README's ``bench-table`` and each ``bench-*`` block of
docs/benchmarks.md, the block's text and its figures (``figures.collect``); ``prose``, each figure the docs
quote in prose by name (``REPORT.NAME``) with its source; all read from ``DIR/bench_*.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.readings import (
    dedupe,
    dedupe_quality,
    eval,
    quality,
    rehearsal,
    sample,
    scrape,
    train,
    train_profile,
)
from benchmarks.readings.figures import REPORTS, collect, load, report_stem, table


@dataclass(frozen=True)
class Row:
    """One line of the README's benchmark table: the report, how to rerun it, the peer, the headline."""

    report: str
    command: str
    peer: str
    headline: Callable[[dict[str, Any]], str]


README_ROWS = (
    Row(scrape.REPORT, scrape.COMMAND, scrape.PEER, scrape.headline),
    Row(dedupe.REPORT, dedupe.COMMAND, dedupe.PEER, dedupe.headline),
    Row(dedupe_quality.REPORT, dedupe_quality.COMMAND, dedupe_quality.PEER, dedupe_quality.headline),
    Row(train.REPORT, train.COMMAND, train.PEER, train.headline),
    Row(eval.REPORT, eval.COMMAND, eval.PEER, eval.headline),
    Row(sample.REPORT, sample.COMMAND, sample.PEER, sample.headline),
    Row(quality.REPORT, quality.COMMAND, quality.PEER, quality.headline),
    *(
        Row(
            name,
            command,
            quality.SMALL_ALIGNED_PEER if "small" in name else quality.LEVERS_PEER,
            quality.levers_headline,
        )
        for name, command in quality.LEVER_COMMANDS.items()
    ),  # fmt: skip
    *(
        Row(name, command, quality.SWEEP_PEERS[name], quality.levers_headline)
        for name, command in quality.SWEEP_COMMANDS.items()
    ),
    Row(train_profile.REPORT, train_profile.COMMAND, train_profile.PEER, train_profile.headline),
    Row(rehearsal.REPORT, rehearsal.COMMAND, rehearsal.PEER, rehearsal.headline),
)

# Marker name in docs/benchmarks.md -> (its report, the reading that writes the block).
DOC_BLOCKS: dict[str, tuple[str, Callable[[dict[str, Any]], str]]] = {
    "bench-scrape": (scrape.REPORT, scrape.block),
    "bench-dedupe": (dedupe.REPORT, dedupe.block),
    "bench-train": (train.REPORT, train.block),
    "bench-eval": (eval.REPORT, eval.block),
    "bench-train-profile": (train_profile.REPORT, train_profile.block),
    "bench-quality": (quality.REPORT, quality.block),
    "bench-rehearsal": (rehearsal.REPORT, rehearsal.block),
    "bench-quality-levers": ("quality_levers", quality.levers_block),
    "bench-quality-levers-2": ("quality_levers_2", quality.levers_block),
    "bench-quality-levers-3": (
        "quality_levers_3",
        lambda report: quality.levers_block(report, ("batch_32", "lr_2e-4")),
    ),
    "bench-quality-small-aligned": (
        "quality_small_aligned",
        lambda report: quality.levers_block(report, ("preset_small", "small_unaligned")),
    ),
    "bench-quality-sweep-recipe": ("quality_sweep_recipe", quality.levers_block),
    "bench-quality-sweep-ddpm": ("quality_sweep_ddpm", quality.levers_block),
}


# Report -> the reading that names the figures docs quote in prose (``<!-- fig REPORT.NAME -->``).
PROSE: dict[str, Callable[[dict[str, Any]], dict[str, str]]] = {
    scrape.REPORT: scrape.prose,
    train_profile.REPORT: train_profile.prose,
    eval.REPORT: eval.prose,
    sample.REPORT: sample.prose,
    dedupe_quality.REPORT: dedupe_quality.prose,
    quality.REPORT: quality.prose,
    "quality_levers_2": quality.levers_2_prose,
    "quality_levers_3": quality.levers_3_prose,
    "quality_small_aligned": quality.small_aligned_prose,
}


def readme_table(reports: Path = REPORTS) -> str:
    """The README's benchmark headline table (marked: ``figures.collect`` gives text and sources)."""
    rows = [
        [f"`{row.command}`", row.peer, row.headline(load(row.report, reports)),
         f"[{report_stem(row.report)}](reports/{report_stem(row.report)}.html)"]
        for row in README_ROWS
    ]  # fmt: skip
    return table(["benchmark", "peer", "headline (2-core CPU)", "report"], rows)


def blocks(reports: Path = REPORTS) -> dict[str, dict[str, Any]]:
    """Block name -> {"text": the clean text, "figures": its figures}, README table first."""
    marked = {"bench-table": readme_table(reports)}
    marked |= {name: reading(load(report, reports)) for name, (report, reading) in DOC_BLOCKS.items()}
    out = {}
    for name, text in marked.items():
        clean, figures = collect(text)
        out[name] = {"text": clean, "figures": figures}
    return out


def prose(reports: Path = REPORTS) -> dict[str, list[Any]]:
    """``REPORT.NAME`` -> [text, report, source, format] of each figure the docs quote in prose."""
    out = {}
    for report, reading in PROSE.items():
        for name, marked in reading(load(report, reports)).items():
            text, figures = collect(marked)
            if len(figures) != 1 or len(figures[0]) != 5 or figures[0][1] != text:
                raise ValueError(f"{report}.{name}: a prose figure is one traced number, got {marked!r}")
            out[f"{report}.{name}"] = [text, *figures[0][2:]]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=REPORTS, help="folder of bench_*.json")
    args = parser.parse_args(argv)
    json.dump({"blocks": blocks(args.reports), "prose": prose(args.reports)}, sys.stdout, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
