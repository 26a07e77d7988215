"""The CLI's contract: every subcommand listed, user errors as one line with exit code 2."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from diffkit import __version__
from diffkit.cli import app
from diffkit.dedupe.config import ACTIONS, DEFAULT_THRESHOLDS, HASH_KINDS, Action, DedupeConfig, HashKind
from diffkit.scrape.config import ScrapeConfig

SUBCOMMANDS = ["scrape", "dedupe", "train", "phema", "sample", "eval", "export", "report", "demo"]


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
    (tmp_path / "reports").mkdir()
    result = _cli("report", "reports", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"index": "reports/index.html", "n_reports": 0, "run_pages": []}


# -- one shape for every command (issue 10): progress flag, defaults from the configs, choices as Enums --


def _command(name: str) -> Any:
    """The click command behind ``diffkit <name>`` (its parameters carry defaults, help and choices)."""
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def _params(name: str) -> dict[str, Any]:
    return {param.name: param for param in _command(name).params}


def _help(name: str) -> str:
    """``diffkit <name> --help`` wide enough that every option and its default fit on one line."""
    return CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "250"}).output


@pytest.mark.parametrize("name", ["scrape", "dedupe"])
def test_progress_flag_is_progress_no_progress_defaulting_to_the_terminal(name: str) -> None:
    flag = _params(name)["progress"]
    assert flag.opts == ["--progress"] and flag.secondary_opts == ["--no-progress"]
    assert flag.default is None  # None: on when stderr is a terminal, also under --json
    shown = _help(name)
    assert "--progress / --no-progress" in shown, shown


def test_progress_flag_has_the_same_help_on_scrape_and_dedupe() -> None:
    assert _params("scrape")["progress"].help == _params("dedupe")["progress"].help


# option name -> config field: every option with a default takes it from the config
SCRAPE_FIELDS = {
    "out": "out",
    "url": "url",
    "urls": "urls",
    "concurrency": "concurrency",
    "rps": "rps",
    "timeout": "timeout_s",
    "max_retries": "max_retries",
    "user_agent": "user_agent",
    "expect_size": "expect_size",
    "threshold": "threshold",
    "report_path": "report_path",
}
DEDUPE_FIELDS = {
    "hash_kind": "hash_kind",
    "threshold": "threshold",
    "action": "action",
    "to": "quarantine",
    "yes": "yes",
    "report_path": "report_path",
    "workers": "workers",
    "min_similarity": "min_similarity",
    "verify": "verify",
    "against": "against",
}
# Required, CLI-only, or a deprecated alias (scrape's --near-dup-threshold, kept for one release).
NO_CONFIG_DEFAULT = {"n", "directory", "progress", "json_output", "help", "near_dup_threshold"}


def _config_defaults(config_class: type) -> dict[str, Any]:
    fields = dataclasses.fields(config_class)
    return {f.name: f.default for f in fields if f.default is not dataclasses.MISSING}


@pytest.mark.parametrize(
    ("name", "config_class", "fields"),
    [("scrape", ScrapeConfig, SCRAPE_FIELDS), ("dedupe", DedupeConfig, DEDUPE_FIELDS)],
)
def test_option_defaults_are_the_config_defaults(name: str, config_class: type, fields: dict) -> None:
    params = _params(name)
    assert set(params) - NO_CONFIG_DEFAULT == set(fields)  # a new option needs its config field here
    defaults = _config_defaults(config_class)
    for option, field in fields.items():
        assert params[option].default == defaults[field], option


@pytest.mark.parametrize(
    ("name", "option", "config_class", "field"),
    [
        ("scrape", "--rps", ScrapeConfig, "rps"),
        ("scrape", "--concurrency", ScrapeConfig, "concurrency"),
        ("scrape", "--timeout", ScrapeConfig, "timeout_s"),
        ("scrape", "--threshold", ScrapeConfig, "threshold"),
        ("scrape", "--out", ScrapeConfig, "out"),
        ("scrape", "--user-agent", ScrapeConfig, "user_agent"),
        ("dedupe", "--hash", DedupeConfig, "hash_kind"),
        ("dedupe", "--action", DedupeConfig, "action"),
    ],
)
def test_help_shows_the_config_default(name: str, option: str, config_class: type, field: str) -> None:
    line = next(line for line in _help(name).splitlines() if re.search(rf"│\s+(-\w, )?{option}\s", line))
    default_shown = re.search(r"\[default: (.+?)\]", line)
    assert default_shown and default_shown.group(1) == str(_config_defaults(config_class)[field]), line


@pytest.mark.parametrize("name", ["scrape", "dedupe"])
def test_no_hand_written_defaults_in_option_help(name: str) -> None:
    for param_name, param in _params(name).items():
        if param_name != "progress":  # the shared flag explains what "not given" means
            assert "default" not in (param.help or "").lower(), (param_name, param.help)


def test_dedupe_choices_are_the_enums() -> None:
    params = _params("dedupe")
    assert params["hash_kind"].type_descriptor.annotation is HashKind
    assert params["action"].type_descriptor.annotation is Action
    assert [kind.value for kind in HashKind] == list(HASH_KINDS) == list(DEFAULT_THRESHOLDS)
    assert [action.value for action in Action] == list(ACTIONS)
    shown = _help("dedupe")
    assert "--hash phash|dhash|whash|ahash" in shown and "--action report|move|delete" in shown


def test_dedupe_no_progress_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    args = ["--no-progress", "--json", "--report", str(tmp_path / "r.html")]
    result = CliRunner().invoke(app, ["dedupe", str(tmp_path / "empty"), *args])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["n_images"] == 0
