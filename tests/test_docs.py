"""The documentation cannot drift from the code or the committed reports.

- docs/cli/<command>.txt equal the current ``--help`` of every command (and of the fake-face site);
- the generated tables (README benchmark table, docs/benchmarks.md, the presets in docs/train.md) equal
  what docs/generate.py builds from the committed reports/bench_*.json and the code;
- every number in the README's table and prose comes from a committed report, a code example of the
  README, or a short list of conventions;
- every relative link in README.md and docs/*.md points to an existing file (and heading).

After a deliberate change, ``python docs/generate.py`` rewrites the generated parts.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
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


def test_presets_table_is_computed_from_the_code() -> None:
    text = (DOCS / "train.md").read_text(encoding="utf-8")
    assert generate.block(text, "presets-table") == generate.presets_table(), f"presets table: {FIX}"


def test_generator_reads_the_reports_it_is_given(tmp_path: Path) -> None:
    # A changed report must change the table: the figures are read, not written into the generator.
    for path in (ROOT / "reports").glob("bench_*.json"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    report = json.loads((tmp_path / "bench_dedupe.json").read_text(encoding="utf-8"))
    report["summary"]["imagededup_s"] = 999.0
    (tmp_path / "bench_dedupe.json").write_text(json.dumps(report), encoding="utf-8")
    changed = generate.readme_bench_table(tmp_path)
    assert "999.0 s" in changed and changed != generate.readme_bench_table()


# ---------------------------------------------------------------------------------- README numbers

# A number: not part of a word (fp32, UNet2DModel) or of a longer number; "2.6x", "97%", "4e-5" count.
NUMBER = re.compile(r"(?<![\w.\-/])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?(?![\d.,]\d|\w(?<!x))")
# Phrases whose numbers are conventions, not measurements (removed before the prose is checked).
CONVENTIONS = (r"exit code (?:2|130)\b", r"\bPython 3\.10\b")


def _numbers(text: str) -> list[str]:
    return [token.rstrip(",") for token in NUMBER.findall(text)]


def _report_values() -> list[float]:
    values: list[float] = []

    def walk(node: Any) -> None:
        if isinstance(node, bool):
            return
        if isinstance(node, (int, float)):
            values.append(float(node))
        elif isinstance(node, dict):
            for key, value in node.items():
                values.extend(float(n) for n in re.findall(r"\d+(?:\.\d+)?", str(key)))
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str):
            values.extend(float(n) for n in re.findall(r"\d+(?:\.\d+)?", node))

    for path in sorted((ROOT / "reports").glob("bench_*.json")):
        walk(json.loads(path.read_text(encoding="utf-8")))
    return values


def _from_reports(token: str, values: list[float], percent: bool = False) -> bool:
    """True if some report value, rounded as the token is written (x100 for a percentage), gives it."""
    text = token.replace(",", "")
    if "e" in text:
        return any(v != 0 and f"{v:.0e}".replace("e-0", "e-") == text for v in values)
    decimals = len(text.split(".")[1]) if "." in text else 0
    target = float(text)
    for value in values:
        scaled = value * 100 if percent else value
        if math.isclose(round(scaled, decimals), target, abs_tol=10**-decimals / 2 * 1.001):
            return True
    return False


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


def test_numbers_in_the_readme_table_come_from_the_reports() -> None:
    values = _report_values()
    table = generate.block(README.read_text(encoding="utf-8"), "bench-table")
    prose, _ = _strip_code(table)
    tokens = [(m.group().rstrip(","), prose[m.end() : m.end() + 1] == "%") for m in NUMBER.finditer(prose)]
    assert len(tokens) > 20  # the check sees the figures
    missing = [token for token, percent in tokens if not _from_reports(token, values, percent)]
    assert not missing, f"README table figures not found in reports/bench_*.json: {missing}"


def test_numbers_in_the_readme_prose_are_traceable() -> None:
    # Measured figures belong in the generated table; prose may only repeat the examples' arguments.
    text = README.read_text(encoding="utf-8")
    text = re.sub(r"<!-- bench-table:start -->.*?<!-- bench-table:end -->", "", text, flags=re.S)
    # The reliability table is the lead's: fault descriptions, not measurements.
    text = re.sub(r"^## Reliability\n.*?(?=^## )", "", text, flags=re.S | re.M)
    prose, code = _strip_code(text)
    for pattern in CONVENTIONS:
        prose = re.sub(pattern, "", prose)
    in_code = {n.replace(",", "") for n in _numbers(code)} | set(re.findall(r"\d+", code))
    untraced = [token for token in _numbers(prose) if token.replace(",", "") not in in_code]
    assert not untraced, (
        f"README prose numbers that are neither an example's argument nor a convention: {untraced}; put "
        "measured figures in the generated table (docs/generate.py) or on a docs page"
    )


def test_readme_length_and_required_sections() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 280
    headings = ("## Set-up", "## Shared conventions", "## Reliability", "## Benchmarks", "## Known limits")
    for heading in headings:
        assert re.search(rf"^{re.escape(heading)}", text, re.M), heading


def test_readme_test_command_is_what_ci_runs() -> None:
    text = README.read_text(encoding="utf-8")
    assert "python -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/pytest -q" in text
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
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
