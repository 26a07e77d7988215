"""``--config FILE`` on train, sample and eval: a run from a TOML, YAML or JSON file, typed options win,
and a run's own config.json trains that run again bit for bit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffkit.cli import _FILE_CONFIGS, _accepted, app
from diffkit.configfile import Accepted, file_options, read_table
from diffkit.errors import DiffkitError
from diffkit.runs.folder import RUN_FORMAT
from diffkit.train.config import ALWAYS_FROM_REQUEST, TrainConfig
from diffkit.train.run import train

# Options whose values differ from the defaults, several of them fields no CLI option reaches (dropout,
# weight_decay, hflip, sample_grid...): a replay that lost any of them would train something else.
ORIGINAL = dict(
    preset="tiny",
    resolution=16,
    batch_size=8,
    grad_accum=2,
    device="cpu",
    precision="fp32",
    progress=False,
    report=False,
    sample_every_kimg=0.0,
    sample_grid=4,
    sample_steps=3,
    log_every_steps=1,
    warmup_kimg=0.2,
    lr=1e-3,
    dropout=0.1,
    weight_decay=0.05,
    hflip=False,
    ema_halflife_kimg=0.01,
    seed=3,
)
RUN_ONLY = {"out", *ALWAYS_FROM_REQUEST}


@pytest.fixture(scope="module")
def original(faces: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step run made through the Python API (read-only for the tests)."""
    out = tmp_path_factory.mktemp("original") / "00003-tiny"
    train(TrainConfig(data=faces, out=out, steps=3, **ORIGINAL))
    return out


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real entry point, as a user runs it (its error lines go to stderr)."""
    return subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def _snapshot(run: Path) -> dict[str, torch.Tensor]:
    (path,) = sorted(run.glob("ema-*.safetensors"))
    return load_file(path)


def _state_tensors(run: Path) -> dict[str, torch.Tensor]:
    """The trained weights, EMA and optimiser moments of the run's resume state."""
    state = torch.load(run / "state-latest.pt", weights_only=True)
    flat = {f"model.{k}": v for k, v in state["model"].items()} | {
        f"ema.{k}": v for k, v in state["ema"].items()
    }
    for index, moments in state["optimizer"]["state"].items():
        flat |= {f"opt.{index}.{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)}
    return flat


def _config(run: Path) -> dict[str, Any]:
    return json.loads((run / "config.json").read_text())


# --- a run's config.json replays it ----------------------------------------------------------------------


def test_a_runs_config_json_trains_the_same_weights(original: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the replay writes its report under ./reports
    again = tmp_path / "again"
    result = _invoke("train", "--config", str(original / "config.json"), "--out", str(again), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["step"] == 3

    first, second = _snapshot(original), _snapshot(again)
    assert first.keys() == second.keys() and len(first) > 50
    assert [name for name in first if not torch.equal(first[name], second[name])] == []
    first, second = _state_tensors(original), _state_tensors(again)
    assert first.keys() == second.keys()
    assert [name for name in first if not torch.equal(first[name], second[name])] == []
    losses = [
        [json.loads(line)["loss"] for line in (run / "stats.jsonl").read_text().splitlines()]
        for run in (original, again)
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 3

    # The same run: every option and field but the run's own (its folder, its session) is the same.
    saved, replayed = _config(original), _config(again)
    assert {k: v for k, v in saved["train"].items() if k not in RUN_ONLY} == {
        k: v for k, v in replayed["train"].items() if k not in RUN_ONLY
    }
    assert replayed["train"]["out"] == str(again) and replayed["train"]["report"] is True
    assert [saved[key] == replayed[key] for key in ("model", "diffusion", "plan")] == [True] * 3


def test_a_replay_without_out_makes_a_new_run_folder(original: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke("train", "--config", str(original / "config.json"), "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["run_dir"] == "runs/00000-tiny"  # never the original's folder
    assert (shown["preset"], shown["resolution"], shown["total_steps"]) == ("tiny", 16, 3)


def test_options_typed_on_the_command_line_win_over_the_run_config(
    original: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke(
        "train",
        "--config",
        str(original / "config.json"),
        "--dry-run",
        "--json",
        "--steps",
        "2",
        "--resolution",
        "32",
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["total_steps"], shown["resolution"], shown["preset"]) == (2, 32, "tiny")


def test_a_file_that_changes_the_model_is_refused_on_resume(original: Path, tmp_path: Path) -> None:
    """`preset = "small"` is the default's value, so only knowing the file gave it catches the change."""
    run = tmp_path / "run"
    shutil.copytree(original, run)
    (tmp_path / "small.toml").write_text('preset = "small"\n')
    done = _cli(
        "train", "--out", str(run), "--resume", "--config", "small.toml", "--no-progress", cwd=tmp_path
    )
    line = _one_error_line(done)
    assert "--resume continues the saved run, but preset differ" in line
    assert _config(run) == _config(original)  # nothing was trained


# --- files: formats, tables, overrides -------------------------------------------------------------------

TOML = """\
# one experiment: train, then sample it
[train]
preset = "tiny"
resolution = 16
batch-size = 4
steps = 5
compile = false
seed = 7

[sample]
n = 2
"""
YAML = "preset: tiny\nresolution: 16\nbatch_size: 4\nsteps: 5\ncompile: false\nseed: 7\n"
JSON = '{"preset": "tiny", "resolution": 16, "batch_size": 4, "steps": 5, "compile": false, "seed": 7}'


def _dry_run(tmp_path: Path, faces: Path, *args: str) -> dict[str, Any]:
    result = _invoke("train", "--data", str(faces), "--device", "cpu", "--dry-run", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_toml_yaml_and_json_give_the_same_run(faces: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in (("run.toml", TOML), ("run.yaml", YAML), ("run.json", JSON)):
        (tmp_path / name).write_text(text)
    shown = [_dry_run(tmp_path, faces, "--config", name) for name in ("run.toml", "run.yaml", "run.json")]
    assert shown[0] == shown[1] == shown[2]
    assert (shown[0]["preset"], shown[0]["resolution"], shown[0]["total_steps"]) == ("tiny", 16, 5)
    assert shown[0]["total_kimg"] == 0.02  # 5 steps of batch 4: batch-size was read under its dashed name
    # Typed options win over the file; the file's other values stay.
    typed = _dry_run(tmp_path, faces, "--config", "run.toml", "--steps", "2", "--preset", "small")
    assert (typed["preset"], typed["resolution"], typed["total_steps"], typed["total_kimg"]) == (
        "small",
        16,
        2,
        0.008,
    )


def test_sample_reads_its_own_table_and_typed_options_win(
    original: Path, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "png"
    (tmp_path / "exp.toml").write_text(
        f'[train]\npreset = "tiny"\n\n[sample]\nrun = "{original}"\nn = 2\nsteps = 2\nseed = 5\n'
        f'out = "{out}"\ndevice = "cpu"\nprecision = "fp32"\n'
    )
    result = _invoke("sample", "--config", "exp.toml", "--n", "3", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.glob("*.png")) == ["000000.png", "000001.png", "000002.png"]
    typed = tmp_path / "typed"
    args = ["--run", str(original), "--n", "3", "--steps", "2", "--seed", "5", "--out", str(typed)]
    result = _invoke("sample", *args, "--device", "cpu", "--precision", "fp32", "--no-progress", "--json")
    assert result.exit_code == 0, result.output
    assert [
        (out / name).read_bytes() == (typed / name).read_bytes() for name in ("000000.png", "000002.png")
    ] == [
        True,
        True,
    ]


def test_eval_reads_the_file_and_a_typed_option_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval.yaml").write_text("eval:\n  generated: from-the-file\n  reference: ref\n")
    result = _invoke("eval", "--config", "eval.yaml")
    assert result.exit_code == 2 and "from-the-file" in result.output, result.output
    result = _invoke("eval", "--config", "eval.yaml", "--generated", "typed")
    assert result.exit_code == 2 and "typed" in result.output and "from-the-file" not in result.output


# --- mistakes: one line, exit 2 --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "typo.toml",
            "bach_size = 4\n",
            "typo.toml: unknown train option 'bach_size' (did you mean batch_size?); valid keys: batch_size,",
        ),
        (
            "bool.toml",
            "resolution = true\n",
            "bool.toml: resolution takes a value, not true or false (got True)",
        ),
        ("flag.toml", 'dry-run = "yes"\n', "flag.toml: dry-run takes true or false (got 'yes')"),
        ("field.toml", 'hflip = "no"\n', "field.toml: hflip must be bool (got 'no')"),
        ("int.json", '{"resolution": 16.5}', "Invalid value for '--resolution'"),
        ("list.yaml", "- 1\n- 2\n", "list.yaml holds a list, not a table of options"),
        ("broken.toml", "steps = \n", "broken.toml is not valid TOML"),
        ("run.ini", "steps = 3\n", "run.ini: a config file is .toml, .yaml, .yml or .json (got '.ini')"),
        ("tables.toml", "[sample]\nn = 2\n", "tables.toml has no [train] table (it has: sample)"),
        ("mixed.toml", "steps = 2\n[sample]\nn = 2\n", "also top-level keys ['steps']"),
        ("config.toml", 'config = "other.toml"\n', "unknown train option 'config'"),
    ],
)
def test_a_bad_file_is_one_line(tmp_path: Path, name: str, text: str, expected: str) -> None:
    (tmp_path / name).write_text(text)
    assert expected in _one_error_line(_cli("train", "--config", name, "--dry-run", cwd=tmp_path))


def test_a_missing_file_and_a_run_config_given_to_sample(original: Path, tmp_path: Path) -> None:
    line = _one_error_line(_cli("train", "--config", "nowhere.toml", cwd=tmp_path))
    assert line == "error: config file nowhere.toml not found"
    line = _one_error_line(_cli("sample", "--config", str(original / "config.json"), cwd=tmp_path))
    assert "is a training run's config.json: it holds train's options, not sample's" in line


def test_yaml_without_pyyaml_says_how_to_get_it(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("steps: 3\n")
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(DiffkitError, match=r"reading YAML needs PyYAML \(pip install 'diffkit\[yaml\]'\)"):
        read_table(path)


def test_each_config_command_lists_config_and_the_others_do_not() -> None:
    for name in ("train", "sample", "eval", "scrape", "dedupe", "export", "phema", "report", "demo"):
        result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200"})
        assert ("--config FILE" in result.output) == (name in ("train", "sample", "eval")), name


def test_accepted_keys_are_the_long_option_names() -> None:
    """What a file may say for train: each option's long name (not Python's name), and the option-less
    config fields; the run-only keys are those a resume also takes from the command line."""
    command = typer.main.get_command(app).commands["train"]
    accepted: Accepted = _accepted(command)
    assert accepted.options["compile"] == "compile_model" and accepted.options["json"] == "json_output"
    assert "compile_model" not in accepted.options and "config" not in accepted.options
    assert {"weight_decay", "hflip", "dropout", "sample_grid"} <= set(accepted.fields)
    assert "given" not in accepted.fields and not set(accepted.fields) & set(accepted.options)
    assert accepted.run_only == frozenset(RUN_ONLY)
    assert _FILE_CONFIGS["train"] is TrainConfig


@pytest.mark.parametrize("page", ["train.md", "sample.md"])
def test_the_docs_toml_examples_are_valid_files(page: str, tmp_path: Path) -> None:
    """Every ```toml block of the page, read as the commands it has tables for would read it."""
    text = (Path(__file__).resolve().parent.parent / "docs" / page).read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```toml\n")[1:]]
    assert blocks
    commands = typer.main.get_command(app).commands
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block)
        for name in read_table(path):
            found = file_options(path, _accepted(commands[name]), RUN_FORMAT)
            assert found.defaults or found.fields, (page, name)


def test_a_list_is_the_comma_list_an_option_takes(tmp_path: Path) -> None:
    path = tmp_path / "eval.toml"
    path.write_text('[eval]\nmetrics = ["fid", "kid"]\nsamples = 500\n')
    found = file_options(path, _accepted(typer.main.get_command(app).commands["eval"]), RUN_FORMAT)
    assert found.defaults == {"metrics": "fid,kid", "samples": 500} and found.fields == {}
    assert found.keys == {"metrics", "samples"}
