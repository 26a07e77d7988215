"""The documentation cannot drift from the code or the committed reports.

- docs/cli/<command>.txt equal the current ``--help`` of every command (and of the fake-face site);
- the generated tables (README benchmark table, docs/benchmarks.md, the presets in docs/train.md) equal
  what docs/generate.py builds from the committed reports/bench_*.json and the code;
- every figure in README.md and docs/*.md, in a generated block or in prose, matches the one report key
  written beside it (the check re-reads the key and re-formats it), and a figure one unit off fails;
- every other number of the README's prose is an example's argument or one of a short list of conventions;
- every relative link in README.md and docs/*.md points to an existing file (and heading).

After a deliberate change, ``python docs/generate.py`` rewrites the generated parts.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FIX = "run `python docs/generate.py` and commit what it rewrites"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_generate", DOCS / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()


# -------------------------------------------------------------------------------------------- --help


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    return generate.help_texts()


def test_every_command_has_a_help_file(help_texts: dict[str, str]) -> None:
    # The command list in the generator must follow the CLI: a new command gets a file too.
    listed = re.findall(r"^│ (\w+) ", help_texts["diffkit.txt"].split("Commands")[1], re.M)
    assert sorted(listed) == sorted(generate.COMMANDS)
    on_disk = sorted(path.name for path in (DOCS / "cli").glob("*.txt"))
    assert on_disk == sorted(help_texts)


@pytest.mark.parametrize(
    "name", ["diffkit.txt", *(f"{command}.txt" for command in generate.COMMANDS), "fakesite.txt"]
)
def test_cli_help_file_equals_current_help(name: str, help_texts: dict[str, str]) -> None:
    committed = (DOCS / "cli" / name).read_text(encoding="utf-8")
    assert committed == help_texts[name], f"docs/cli/{name} differs from --help: {FIX}"


# --------------------------------------------------------------------------------- generated blocks


def test_readme_benchmark_table_is_generated_from_the_reports() -> None:
    table = generate.block(README.read_text(encoding="utf-8"), "bench-table")
    assert table == generate.readme_bench_table(), f"README benchmark table differs from reports/: {FIX}"


def test_benchmark_page_tables_are_generated_from_the_reports() -> None:
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    for name, content in generate.benchmark_blocks().items():
        assert generate.block(text, name) == content, f"docs/benchmarks.md block {name} is stale: {FIX}"


def test_prose_figures_are_the_readings_of_the_reports() -> None:
    # A prose figure's map names the keys it was computed from, and the trace checks those keys; a reading
    # that picks the wrong keys (another row, another budget) traces too. Regenerating must change nothing.
    prose = generate.readings()["prose"]
    for path in generate.markdown_files():
        text = path.read_text(encoding="utf-8")
        assert generate.replace_prose_figures(text, prose) == text, f"{path.name}: prose figures: {FIX}"


def test_presets_table_is_computed_from_the_code() -> None:
    text = (DOCS / "train.md").read_text(encoding="utf-8")
    assert generate.block(text, "presets-table") == generate.presets_table(), f"presets table: {FIX}"


def test_generator_reads_the_reports_it_is_given(tmp_path: Path) -> None:
    # A changed report must change the table: the figures are read, not written into the generator.
    for path in [*(ROOT / "reports").glob("bench_*.json"), ROOT / "reports" / "rehearsal.json"]:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    report = json.loads((tmp_path / "bench_dedupe.json").read_text(encoding="utf-8"))
    report["summary"]["imagededup_s"] = 999.0
    (tmp_path / "bench_dedupe.json").write_text(json.dumps(report), encoding="utf-8")
    changed = generate.readme_bench_table(tmp_path)
    assert "999.0 s" in changed and changed != generate.readme_bench_table()


# --------------------------------------------------------------------- every figure and its source
# Each generated block from a report carries a figure map (``<!-- figures ...``): per number its offset
# in the block and its text, and for a figure the report, the key (or keys and op it is derived from)
# and the format. Prose figures are marked ``<!-- fig NAME -->0.75<!-- /fig -->`` and listed with their
# sources in the page's ``prose-figures`` block. The check below reads only the Markdown and the
# reports: it re-reads every key and re-formats every figure itself.

# A number: not part of a word (fp32, UNet2DModel) or of a longer number; "2.6x", "97%", "4e-5" count.
NUMBER = re.compile(r"(?<![\w.\-/])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?(?![\d.,]\d|\w(?<!x))")
# Phrases whose numbers are conventions, not measurements (removed before the prose is checked).
CONVENTIONS = (r"exit code (?:2|130)\b", r"\bPython 3\.10\b")
MAPPED_BLOCK = re.compile(
    r"<!-- ([\w\-]+):start -->\n(.*?)\n\n<!-- figures [^\n]*\n(.*?)\n-->\n<!-- \1:end -->", re.S
)
PROSE_FIGURE = re.compile(r"<!-- fig ([\w.\-]+) -->(.*?)<!-- /fig -->")
PROSE_MAP = re.compile(
    r"<!-- prose-figures:start -->\n<!-- prose figures [^\n]*\n(.*?)\n-->\n<!-- prose-figures:end -->", re.S
)


@functools.cache
def _report(name: str) -> Any:
    return json.loads((ROOT / "reports" / f"{name}.json").read_text(encoding="utf-8"))


def _value(report: Any, source: Any) -> Any:
    """What a source names: a key path, a number (a unit), or an op over sources of the same report."""
    if isinstance(source, (int, float)):
        return source
    if isinstance(source, dict):
        args = [_value(report, arg) for arg in source["args"]]
        ops = {"/": lambda a, b: a / b, "+": lambda a, b: a + b, "len": len}
        return ops[source["op"]](*args)
    for key in source:
        report = report[key]
    return report


def _formatted(report: str, source: Any, spec: str) -> str:
    value = _value(_report(report), source)
    if spec == "~e":  # one significant digit, short: 3.95e-05 -> 4e-5
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return format(value, spec)


@functools.cache
def _expected(report: str, source: str, spec: str) -> str:
    """``_formatted`` once per (report, source, format): the one-unit-off test checks pages ~1000 times."""
    return _formatted(report, json.loads(source), spec)


def _source_errors(where: str, text: str, report: str, source: Any, spec: str) -> list[str]:
    try:
        expected = _expected(report, json.dumps(source), spec)
    except (KeyError, IndexError, TypeError, ValueError, FileNotFoundError) as error:
        return [f"{where}: {text!r} names {report} {source}, which does not resolve ({error!r})"]
    return [] if expected == text else [f"{where}: {text!r}, but {report} {source} formats to {expected!r}"]


def trace_errors(page: str) -> list[str]:
    """Every figure of a Markdown page that does not match the report key beside it (empty: all match)."""
    errors = []
    for name, content, table in MAPPED_BLOCK.findall(page):
        spans = []
        for line in table.splitlines():
            at, text, *source = json.loads(line)
            spans.append((at, at + len(text)))
            if content[at : at + len(text)] != text:
                errors.append(
                    f"{name}: the map has {text!r} at {at}, the block {content[at : at + len(text)]!r}"
                )
            if source:
                errors += _source_errors(f"{name} at {at}", text, *source)
        for number in NUMBER.finditer(content):
            token = number.group().rstrip(",")  # "12, " is the number 12
            inside = (start <= number.start() and number.start() + len(token) <= end for start, end in spans)
            if not any(inside):
                errors.append(f"{name}: {token!r} at {number.start()} is in no figure of the map")
    listed = {
        entry[0]: entry[1:]
        for match in PROSE_MAP.findall(page)
        for entry in map(json.loads, match.splitlines())
    }
    for name, (text, *source) in listed.items():
        errors += _source_errors(f"prose figure {name}", text, *source)
    for name, text in PROSE_FIGURE.findall(page):
        if name not in listed:
            errors.append(f"prose figure {name} is not in the page's prose-figures block")
        elif listed[name][0] != text:
            errors.append(f"prose figure {name} reads {text!r}, its source {listed[name][0]!r}")
    return errors


def _figures(page: str) -> list[tuple[str, int, str]]:
    """(the page, or the one block, that holds it; its position there; its text) of every number the
    check covers: each block's (checked within its own block, which is self-contained) and the prose's."""
    found = []
    for match in MAPPED_BLOCK.finditer(page):
        for line in match.group(3).splitlines():
            at, text, *_ = json.loads(line)
            found.append((match.group(0), match.start(2) - match.start(0) + at, text))
    found += [(page, match.start(2), match.group(2)) for match in PROSE_FIGURE.finditer(page)]
    return found


def _one_unit_off(text: str) -> str:
    """The figure with its last digit changed by one (9 goes down, so no digit is added)."""
    index = max(i for i, char in enumerate(text) if char.isdigit())
    digit = int(text[index])
    return text[:index] + str(digit - 1 if digit == 9 else digit + 1) + text[index + 1 :]


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_matches_the_report_key_beside_it(path: Path) -> None:
    errors = trace_errors(path.read_text(encoding="utf-8"))
    assert not errors, f"{path.relative_to(ROOT)}: {errors[:10]}: {FIX}"


def test_the_pages_with_measurements_trace_them() -> None:
    # The check sees the figures: the README table, every benchmark block, the prose of benchmarks.md.
    readme, bench = README.read_text(encoding="utf-8"), (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    assert {name for name, _, _ in MAPPED_BLOCK.findall(readme)} == {"bench-table"}
    assert len(MAPPED_BLOCK.findall(bench)) == len(generate.benchmark_blocks())
    assert len(_figures(readme)) > 150 and len(_figures(bench)) > 500
    assert len(PROSE_FIGURE.findall(bench)) >= 30


@pytest.mark.parametrize("path", [README, DOCS / "benchmarks.md"], ids=lambda p: str(p.relative_to(ROOT)))
def test_any_figure_one_unit_off_fails_the_check(path: Path) -> None:
    page = path.read_text(encoding="utf-8")
    assert not trace_errors(page)
    missed = []
    for where, at, text in _figures(page):
        wrong = _one_unit_off(text)
        assert where[at : at + len(text)] == text and not trace_errors(where)
        if not trace_errors(where[:at] + wrong + where[at + len(text) :]):
            missed.append(f"{text} -> {wrong} at {at}")
    assert not missed, f"figures changed by one unit that the check accepts: {missed[:10]}"


def test_a_changed_report_value_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The other side: the page stays, the report's key moves by a little more than the printed precision.
    page = README.read_text(encoding="utf-8")
    report = json.loads((ROOT / "reports" / "bench_quality.json").read_text(encoding="utf-8"))
    diffkit_b = next(
        row for row in report["data"]["rows"] if row["contender"] == "diffkit" and row["budget_s"] == 120
    )
    diffkit_b["gap_fd_pixels"] *= 1.02  # diffkit's distance over the best peer's: 0.48 becomes 0.49
    committed = _report
    _expected.cache_clear()  # figures formatted from the committed report must not be reused
    monkeypatch.setattr(
        sys.modules[__name__], "_report", lambda name: report if name == "bench_quality" else committed(name)
    )
    try:
        assert any("gap_fd_pixels" in error for error in trace_errors(page))
    finally:
        _expected.cache_clear()


def test_prose_figures_keep_the_text_around_them() -> None:
    # Two figures on one line are two figures: the text between them stays, the map lists both.
    prose = {
        "a.x": ["0.75", "bench_a", ["summary", "x"], ".2f"],
        "a.y": ["12", "bench_a", ["summary", "y"], "g"],
    }
    page = "at B <!-- fig a.x -->0.74<!-- /fig -->; at 3B <!-- fig a.y -->11<!-- /fig --> s.\n\n"
    page += "<!-- prose-figures:start -->\n<!-- prose-figures:end -->\n"
    out = generate.replace_prose_figures(page, prose)
    assert out.startswith(
        "at B <!-- fig a.x -->0.75<!-- /fig -->; at 3B <!-- fig a.y -->12<!-- /fig --> s.\n"
    )
    listed = PROSE_MAP.search(out)
    assert listed and [json.loads(line)[:2] for line in listed.group(1).splitlines()] == [
        ["a.x", "0.75"],
        ["a.y", "12"],
    ]


def _numbers(text: str) -> list[str]:
    return [token.rstrip(",") for token in NUMBER.findall(text)]


def _strip_code(text: str) -> tuple[str, str]:
    """(prose, code): fenced blocks and inline code go to code; link targets are dropped from prose."""
    code_parts = re.findall(r"```.*?```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    code_parts += re.findall(r"`[^`\n]*`", prose)
    prose = re.sub(r"`[^`\n]*`", "", prose)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    prose = re.sub(r"<!--.*?-->", "", prose, flags=re.S)
    prose = re.sub(r"^\s*\d+\.\s", "", prose, flags=re.M)  # numbered list markers
    return prose, "\n".join(code_parts)


def _untraced_prose_numbers(text: str, allowed: tuple[str, ...]) -> list[str]:
    """Numbers of a page's prose that are neither a marked figure, nor in a generated block, nor an
    argument shown in its code, nor in one of the ``allowed`` phrases."""
    text = re.sub(r"<!-- ([\w\-]+):start -->.*?<!-- \1:end -->", "", text, flags=re.S)
    text = PROSE_FIGURE.sub("", text)
    prose, code = _strip_code(text)
    for pattern in allowed:
        prose = re.sub(pattern, "", prose)
    in_code = {n.replace(",", "") for n in _numbers(code)} | set(
        re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", code)
    )
    return [token for token in _numbers(prose) if token.replace(",", "") not in in_code]


def test_numbers_in_the_readme_prose_are_traceable() -> None:
    # Measured figures belong in the generated table; prose may only repeat the examples' arguments.
    text = README.read_text(encoding="utf-8")
    # The reliability table is the lead's: fault descriptions, not measurements.
    text = re.sub(r"^## Reliability\n.*?(?=^## )", "", text, flags=re.S | re.M)
    untraced = _untraced_prose_numbers(text, CONVENTIONS)
    assert not untraced, (
        f"README prose numbers that are neither an example's argument nor a convention: {untraced}; put "
        "measured figures in the generated table (docs/generate.py) or mark them as figures"
    )


# docs/benchmarks.md's prose may name the settings each benchmark ran with (the budgets set on its command
# line, the peers' documented defaults, the levers' settings) and what it cites; a measured figure there
# is a marked figure (<!-- fig NAME -->), traced like the blocks'.
BENCHMARK_SETTINGS = (
    r"\b429\b",  # the HTTP status the capped site answers
    r"\b8 threads\b",  # the scrape peer's pool
    r"\b1024 px\b",  # the dedupe faces' size
    r"lr 1e-4, cosine LR with 500 warm-up steps",  # diffusers' recipe at its defaults
    r"0\.9999 with power 3/4, batch 16",
    r"DDIM \(50 steps\)",
    r"\b8x8\b",  # the pooled-pixel space
    r"Karras et al\. 2022(?:, Table 1)?",
    r"σ_data = (?:0\.5|1)\b",
    r"σ_rel (?:≈\s*)?0\.\d+(?: and 0\.\d+, stored 8 times)?",  # the post-hoc EMA lever's settings
    r"\b0\.(?:10|20) (?:slightly|clearly)",
    r"ramp-up 0\.02 and warm-up 0\.5 kimg",  # levers
    r"issue 15\b",
    r"16 GroupNorm groups and 48-channel",  # the aligned small's shape
    r"48-channel heads",
    r"N >= 2048 \(",  # FID's Inception dimension
    r"2048-d",
    r"\b(?:120|180|360|540) s\b",  # the budgets B and 3B, set on the command line
    r"--budget \d+",  # (in a command wrapped over two lines, so outside the code the test sees)
)


def test_numbers_in_the_benchmark_prose_are_settings_or_marked_figures() -> None:
    untraced = _untraced_prose_numbers(
        (DOCS / "benchmarks.md").read_text(encoding="utf-8"), BENCHMARK_SETTINGS
    )
    assert not untraced, (
        f"docs/benchmarks.md prose numbers that are neither a setting nor a marked figure: {untraced}; mark "
        "a measured figure <!-- fig NAME --> (named in benchmarks/readings/catalog.py), run docs/generate.py"
    )


def test_readme_length_and_required_sections() -> None:
    text = README.read_text(encoding="utf-8")
    # the lines a reader sees: the figure maps are HTML comments, for the docs check only
    assert len(re.sub(r"<!--.*?-->\n", "", text, flags=re.S).splitlines()) <= 280
    headings = ("## Set-up", "## Shared conventions", "## Reliability", "## Benchmarks", "## Known limits")
    for heading in headings:
        assert re.search(rf"^{re.escape(heading)}", text, re.M), heading


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's test command is CI's own script, which installs what the suite needs on a fresh
    machine: the browser for tests/test_browser.py, a fresh venv with the test extra, then pytest -q."""
    text = README.read_text(encoding="utf-8")
    assert "`bash .ci/run`" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "apt-get install" in ci and "chromium" in ci
    assert "-e '.[test]'" in ci and re.search(r'pytest"? -q\s*$', ci, re.M)


# ------------------------------------------------------------------------------------------- links


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", text, re.M)}


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _broken_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    broken = []
    for target in re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            broken.append(target)
            continue
        if anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(target)
    return broken


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files(path: Path) -> None:
    assert not _broken_links(path), f"{path.relative_to(ROOT)}: broken links {_broken_links(path)}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in text, f"README does not link docs/{page.name}"
