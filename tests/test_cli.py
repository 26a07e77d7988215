"""The CLI's contract: every subcommand listed, user errors as one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffkit import __version__
from diffkit.cli import app

SUBCOMMANDS = ["scrape", "dedupe", "train", "sample", "eval", "report", "demo"]


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_help_lists_every_subcommand() -> None:
    result = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for name in SUBCOMMANDS:
        assert f" {name} " in result.output


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help_with_example(name: str) -> None:
    result = CliRunner().invoke(app, [name, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Example" in result.output


def test_version() -> None:
    result = _cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"diffkit {__version__}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("report", "--no-such-option"), "No such option: --no-such-option"),
        (("scrape", "--n", "abc"), "Invalid value for '--n'"),
        (("dedupe",), "Missing argument 'DIR'"),
        (("no-such-command",), "No such command"),
    ],
)
def test_bad_option_is_one_line_exit_2(args: tuple[str, ...], expected: str) -> None:
    result = _cli(*args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and expected in lines[0]
    assert "--help" in lines[0]


def test_missing_path_is_one_red_line_exit_2(tmp_path: Path) -> None:
    result = _cli("report", str(tmp_path / "does-not-exist"))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "does-not-exist" in lines[0]
    assert result.stdout == ""


def test_debug_shows_traceback(tmp_path: Path) -> None:
    result = _cli("--debug", "report", str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "DiffkitError" in result.stderr


def test_json_output_is_one_object(tmp_path: Path) -> None:
    import json

    (tmp_path / "reports").mkdir()
    result = _cli("report", "reports", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"index": "reports/index.html", "n_reports": 0}
