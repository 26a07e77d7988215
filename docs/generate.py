"""Regenerate the parts of the documentation that are derived from the code and the committed reports.

    python docs/generate.py            # rewrite docs/cli/*.txt and the generated blocks in the Markdown
    python docs/generate.py --check    # change nothing; exit 1 and name the files that are out of date

What it writes:

- ``docs/cli/<command>.txt``: the ``--help`` of every ``diffkit`` command (and of the local fake-face
  site), rendered at a fixed width without colour so the files are stable (as NVlabs/edm does);
- the block between ``<!-- bench-table:start -->`` and ``<!-- bench-table:end -->`` in README.md: the
  benchmark headline table, built from ``reports/bench_*.json`` only;
- the ``bench-*`` blocks of docs/benchmarks.md (every benchmark table, from the same JSON files) and the
  ``presets-table`` block of docs/train.md (parameters and FLOPs counted from the code);
- beside each report block, a ``<!-- figures ... -->`` map: every number of the block with its offset
  and, for a figure, the report, the key (or the keys it is derived from) and the format that wrote it;
- each figure in prose, written ``<!-- fig NAME -->0.75<!-- /fig -->`` in README.md or docs/*.md (NAME
  one of the readings' named figures, ``benchmarks/readings/catalog.py``): its text, and the page's
  ``prose-figures`` block at its end, which lists each one's source the same way.

The figures themselves come from each report's reading in ``benchmarks/readings/`` (asked through
``python -m benchmarks.readings.catalog``); this script only splices what they write.

tests/test_docs.py fails when any of these differ from what this script would write, or when any figure
differs from the report key written beside it, so a changed help text, report or preset cannot leave the
documentation behind silently, and no figure can be wrong without its source saying so.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORTS = ROOT / "reports"
CLI_DIR = ROOT / "docs" / "cli"
COMMANDS = ("scrape", "dedupe", "train", "phema", "sample", "eval", "export", "report", "demo")
HELP_WIDTH = 100

# `diffkit ...` through its real entry point, with argv[0] set so the usage line says "diffkit".
_DIFFKIT = "import sys; sys.argv[0] = 'diffkit'; from diffkit.cli import main; main()"


# ---------------------------------------------------------------------------------------------- help


def _help_env() -> dict[str, str]:
    """A minimal environment: fixed width, no colour, UTF-8; nothing inherited that forces a terminal."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "COLUMNS": str(HELP_WIDTH),
        "LINES": "50",
        "TERMINAL_WIDTH": str(HELP_WIDTH),  # typer's rich help reads this before COLUMNS
        "TERM": "dumb",
        "NO_COLOR": "1",
        "PYTHONIOENCODING": "utf-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    return env


def _run_help(argv: list[str]) -> str:
    done = subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=_help_env(),
        cwd=ROOT,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    return "\n".join(lines) + "\n"


def help_texts() -> dict[str, str]:
    """File name under docs/cli/ -> the help text it must hold."""
    texts = {"diffkit.txt": _run_help(["-c", _DIFFKIT, "--help"])}
    for command in COMMANDS:
        texts[f"{command}.txt"] = _run_help(["-c", _DIFFKIT, command, "--help"])
    texts["fakesite.txt"] = _run_help(["-m", "diffkit.fakesite", "--help"])
    return texts


# ------------------------------------------------------------------------------------------ reports


def readings(reports: Path = REPORTS) -> dict[str, Any]:
    """Every reading of the committed reports: ``{"blocks": {marker: {"text", "figures"}}, "prose":
    {name: figure}}``, from ``python -m benchmarks.readings.catalog``, run from the repository root so
    ``benchmarks`` imports as the package it is."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.readings.catalog", "--reports", str(reports)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        cwd=ROOT,
        timeout=120,
    )
    if done.returncode != 0:
        raise RuntimeError(f"benchmarks.readings.catalog exited {done.returncode}: {done.stderr.strip()}")
    return json.loads(done.stdout)


FIGURES_NOTE = (
    "figures (docs/generate.py writes, tests/test_docs.py checks): [offset in the block, text, report, "
    "key path or {op, args} of its keys, format] per figure; [offset, text] per number of the template's "
    "own words"
)


def with_figures(block: dict[str, Any]) -> str:
    """A block's text with its figure map below it, one JSON array per line (after a blank line, so a
    Markdown table or paragraph ends before the comment and no map line can render as a table row)."""
    lines = [json.dumps(figure, ensure_ascii=False) for figure in block["figures"]]
    return block["text"] + f"\n\n<!-- {FIGURES_NOTE}\n" + "\n".join(lines) + "\n-->"


def readme_bench_table(reports: Path = REPORTS) -> str:
    """The README's benchmark headline table and its figure map, from reports/bench_*.json."""
    return with_figures(readings(reports)["blocks"]["bench-table"])


def benchmark_blocks(reports: Path = REPORTS) -> dict[str, str]:
    """Marker name in docs/benchmarks.md -> its content and figure map, from reports/bench_*.json."""
    blocks = readings(reports)["blocks"]
    return {name: with_figures(block) for name, block in blocks.items() if name != "bench-table"}


PROSE_FIGURE = re.compile(r"<!-- fig ([\w.\-]+) -->(.*?)<!-- /fig -->")
PROSE_NOTE = (
    "prose figures (docs/generate.py writes, tests/test_docs.py checks): [name, text, report, key path or "
    "{op, args} of its keys, format] of each figure marked fig in the text above"
)


def replace_prose_figures(text: str, prose: dict[str, list[Any]]) -> str:
    """Each ``<!-- fig NAME -->TEXT<!-- /fig -->`` rewritten from the named figure, and the page's
    ``prose-figures`` block (at its end) listing each one's source."""
    used: dict[str, list[Any]] = {}

    def figure(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in prose:
            raise ValueError(f"no figure named {name!r} in benchmarks/readings/catalog.py")
        used[name] = prose[name]
        return f"<!-- fig {name} -->{prose[name][0]}<!-- /fig -->"

    text = PROSE_FIGURE.sub(figure, text)
    if not used:
        return text
    lines = [json.dumps([name, *figure], ensure_ascii=False) for name, figure in used.items()]
    return replace_block(text, "prose-figures", f"<!-- {PROSE_NOTE}\n" + "\n".join(lines) + "\n-->")


# ------------------------------------------------------------------------------------------ presets


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def presets_table() -> str:
    """The U-Net presets: shape from the config, parameters and forward FLOPs counted from the code."""
    from diffkit.models.config import PRESETS, preset_config
    from diffkit.models.stats import count_parameters, flops_per_image
    from diffkit.models.unet import UNet

    rows = []
    for name, preset in PRESETS.items():
        cells = [
            f"`{name}`",
            str(preset.channels),
            ", ".join(str(preset.channels * m) for m in preset.channel_mults),
            str(preset.num_res_blocks),
            ", ".join(str(r) for r in preset_config(name, 64).attention_resolutions),
            f"{preset.dropout:g}",
        ]
        for resolution in (32, 64):
            model = UNet(preset_config(name, resolution))
            cells.append(f"{count_parameters(model) / 1e6:.2f} M")
            cells.append(f"{flops_per_image(model, resolution) / 1e9:.2f}")
        rows.append(cells)
    header = [
        "preset",
        "channels",
        "level widths",
        "res blocks",
        "attention at (64 px)",
        "dropout",
        "params 32 px",
        "GFLOPs/image 32 px",
        "params 64 px",
        "GFLOPs/image 64 px",
    ]
    return _table(header, rows)


# ------------------------------------------------------------------------------------------- markers


def replace_block(text: str, name: str, content: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->`` (markers kept)."""
    pattern = re.compile(rf"(<!-- {re.escape(name)}:start -->\n)(.*?)(<!-- {re.escape(name)}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"markers for {name!r} not found")
    return pattern.sub(lambda m: m.group(1) + content.rstrip("\n") + "\n" + m.group(3), text, count=1)


def block(text: str, name: str) -> str:
    """The content between the markers of ``name`` (without a trailing newline)."""
    match = re.search(rf"<!-- {re.escape(name)}:start -->\n(.*?)<!-- {re.escape(name)}:end -->", text, re.S)
    if not match:
        raise ValueError(f"markers for {name!r} not found")
    return match.group(1).rstrip("\n")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def expected_files() -> dict[Path, str]:
    """Every generated file with the full text it must hold."""
    files = {CLI_DIR / name: text for name, text in help_texts().items()}
    read = readings()
    texts = {path: path.read_text(encoding="utf-8") for path in markdown_files()}
    readme, bench, train = ROOT / "README.md", ROOT / "docs" / "benchmarks.md", ROOT / "docs" / "train.md"
    texts[readme] = replace_block(texts[readme], "bench-table", with_figures(read["blocks"]["bench-table"]))
    for name, block in read["blocks"].items():
        if name != "bench-table":
            texts[bench] = replace_block(texts[bench], name, with_figures(block))
    texts[train] = replace_block(texts[train], "presets-table", presets_table())
    for path, text in texts.items():
        files[path] = replace_prose_figures(text, read["prose"])
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.relative_to(ROOT))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    verb = "out of date" if args.check else "rewritten"
    for path in stale:
        print(f"{verb}: {path}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
