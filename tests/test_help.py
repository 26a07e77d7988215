"""``--help`` that reads at 80 columns: options in titled panels, a description column of 40+ characters,
every option in a panel on purpose, and help that stays fast and torch-free."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from diffkit.cli import app
from diffkit.clihelp import ARGUMENTS, OPTIONS, PANELS, UNPLACED, panel_of

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["scrape", "dedupe", "train", "phema", "sample", "eval", "export", "report", "demo"]
_DIFFKIT = "import sys; sys.argv[0] = 'diffkit'; from diffkit.cli import main; main()"


def _help_at(width: int, *args: str) -> str:
    """``diffkit ... --help`` through the real entry point in a terminal of ``width`` columns."""
    env = {key: value for key, value in os.environ.items() if key not in ("TERMINAL_WIDTH", "FORCE_COLOR")}
    env |= {"COLUMNS": str(width), "NO_COLOR": "1", "TERM": "dumb", "PYTHONIOENCODING": "utf-8"}
    done = subprocess.run(
        [sys.executable, "-c", _DIFFKIT, *args, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _commands() -> dict[str, typer.core.TyperCommand]:
    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def help_80() -> dict[str, str]:
    return {name: _help_at(80, name) for name in COMMANDS}


@pytest.mark.parametrize("name", COMMANDS)
def test_help_fits_80_columns_with_a_wide_description_column(name: str, help_80: dict[str, str]) -> None:
    text = help_80[name]
    assert max(len(line) for line in text.splitlines()) <= 80
    # Every panel row is "│ <option>  <description> │"; the descriptions all start where --help's does.
    (help_row,) = [line for line in text.splitlines() if re.match(r"│ --help\s+Show this message", line)]
    start = help_row.index("Show this message")
    assert len(help_row) - 2 - start >= 40, help_row  # less its right border and padding
    # One column for every panel of the command; a long option wraps inside it, never into the gap.
    rows = [line for line in text.splitlines() if line.startswith("│ ")]
    assert len(rows) >= 2 and [row for row in rows if row[start - 2 : start] != "  "] == []


def test_train_help_is_in_its_panels_in_order(help_80: dict[str, str]) -> None:
    titles = re.findall(r"╭─ (.+?) ─", help_80["train"])
    assert titles == list(PANELS["train"])
    assert titles == [
        "Data",
        "Model",
        "Schedule and optimiser",
        "Length",
        "Device and precision",
        "Evaluation while training",
        "Run and output",
    ]
    text = help_80["train"]
    # Option, metavar and default on one row; a flag pair on one cell; the description beside it.
    assert re.search(r"│ --resolution INT +Training resolution in pixels\. \[default: 64\] +│", text)
    assert re.search(r"│ --preset tiny\|small\|base +U-Net size\. \[default: small\] +│", text)
    assert re.search(r"│ --tensorboard / +TensorBoard event files", text)
    assert "│ --config FILE " in text and "<path>" not in text and "<int>" not in text
    assert len(text.splitlines()) < 110  # was 178 at 80 columns in Typer's table


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_in_a_panel_on_purpose(name: str) -> None:
    command = _commands()[name]
    ctx = typer.Context(command, info_name=name)
    params = command.get_params(ctx)
    placed = {param.name: panel_of(name, param) for param in params}
    assert all(getattr(param, "rich_help_panel", None) == placed[param.name] for param in params)
    if name not in PANELS:
        assert set(placed.values()) <= {ARGUMENTS, OPTIONS}
        return
    assert [param for param, panel in placed.items() if panel == UNPLACED] == []  # a new option: place it
    listed = [param for names in PANELS[name].values() for param in names]
    assert len(listed) == len(set(listed))  # no option in two panels
    assert set(listed) <= set(placed)  # no stale name: each one is an option of the command


def test_help_at_100_columns_uses_the_width(tmp_path: Path) -> None:
    text = _help_at(100, "train")
    assert max(len(line) for line in text.splitlines()) <= 100
    assert re.search(
        r"│ --labels auto\|none +auto: class labels from a label column in metadata\.jsonl, else", text
    )


def test_help_is_fast_and_never_imports_torch() -> None:
    """CPU seconds of the child (not wall time, which a loaded machine stretches): under one second;
    neither torch nor matplotlib (the report plots) is imported to print help."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    probe = (
        "import sys; sys.argv = ['diffkit', 'train', '--help']\n"
        "from diffkit.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(any(m in sys.modules for m in ('torch', 'matplotlib')), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert done.returncode == 0 and done.stderr.strip() == "False", done.stderr
    assert "Usage: diffkit train" in done.stdout
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 1.0, f"diffkit train --help took {cpu:.2f} CPU seconds"
