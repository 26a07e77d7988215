"""``--max-minutes`` and ``max_cpu_seconds``: a clean stop at the first step boundary past the budget,
recorded in stats.jsonl, the result and the report, resumable bit-exactly, a fresh budget per session.
The clocks are replaced by counters the steps advance (no sleeping)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.runs.folder import STATE_FILE, STATS_FILE, read_stats
from diffkit.train import budget, loop
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

FAST: dict[str, Any] = dict(
    preset="tiny", resolution=16, batch_size=8, device="cpu", precision="fp32", progress=False, report=False,
    sample_every_kimg=0.0, sample_grid=4, sample_steps=2, log_every_steps=1, warmup_kimg=0.2,
    tensorboard=False,
)  # fmt: skip
STEP_SECONDS = 60.0  # what each training step costs on the fake clocks


@pytest.fixture
def clocks(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, float]]:
    """Fake wall and CPU clocks: every training step adds a minute to the wall clock and 30 s of CPU."""
    now = {"wall": 1000.0, "cpu": 5.0}
    real_step = loop.train_step

    def step(*args: Any, **kwargs: Any) -> Any:
        now["wall"] += STEP_SECONDS
        now["cpu"] += STEP_SECONDS / 2
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(budget, "wall_clock", lambda: now["wall"])
    monkeypatch.setattr(budget, "cpu_clock", lambda: now["cpu"])
    yield now


def _state(run: Path) -> dict[str, Any]:
    return torch.load(run / STATE_FILE, weights_only=True)


def _stops(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_stats(run / STATS_FILE) if r.get("kind") == "stop"]


def test_stops_on_the_budget_saves_reports_and_resumes_bit_exactly(
    faces: Path, tmp_path: Path, clocks: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the report goes to ./reports
    run = tmp_path / "run"
    # 2.5 minutes: past the budget after step 3 (3 minutes), not after step 2
    first = train(TrainConfig(data=faces, out=run, steps=10, max_minutes=2.5, **FAST | {"report": True}))
    assert (first.step, first.interrupted) == (3, False)
    assert first.budget_stop is not None and first.budget_stop["reason"] == "time budget"
    assert first.budget_stop["wall_seconds"] == 3 * STEP_SECONDS
    assert first.budget_stop["cpu_seconds"] == 3 * STEP_SECONDS / 2
    assert 0 < first.budget_stop["step_seconds"] == pytest.approx(first.train_seconds)
    assert _state(run)["step"] == 3 and (run / "ema-000000.safetensors").is_file()
    assert [(r["step"], r["reason"], r["wall_seconds"]) for r in _stops(run)] == [(3, "time budget", 180.0)]
    assert json.loads((run / "config.json").read_text())["train"]["max_minutes"] == 2.5
    text = "\n".join(first.summary_lines())
    assert "stopped on the time budget" in text and "continue with: diffkit train --out" in text
    sidecar = json.loads(first.report.with_suffix(".json").read_text())  # type: ignore[union-attr]
    assert sidecar["summary"]["status"] == "stopped on the time budget"
    assert sidecar["summary"]["trained_seconds_this_session"] == 180.0
    assert "Stopped on the time budget" in first.report.read_text()  # type: ignore[union-attr]

    # --resume with --max-minutes again: a fresh 2.5 minutes (not the 3 already spent) -> step 6
    second = train(TrainConfig(out=run, steps=10, resume=True, max_minutes=2.5, progress=False, report=False))
    assert second.step == 6 and second.budget_stop is not None
    # --resume without it: no budget (the saved one is not reapplied) -> 4 more steps, the planned end
    third = train(TrainConfig(out=run, steps=10, resume=True, progress=False, report=False))
    assert (third.step, third.budget_stop, third.interrupted) == (10, None, False)
    assert [r["step"] for r in _stops(run)] == [3, 6]
    assert [r["step"] for r in read_stats(run / STATS_FILE) if "loss" in r] == list(range(1, 11))

    whole = tmp_path / "whole"
    train(TrainConfig(data=faces, out=whole, steps=10, **FAST))
    split_state, whole_state = _state(run), _state(whole)
    for part in ("model", "ema"):
        for name, tensor in whole_state[part].items():
            assert torch.equal(split_state[part][name], tensor), (part, name)
    losses = [[r["loss"] for r in read_stats(path / STATS_FILE) if "loss" in r] for path in (run, whole)]
    assert losses[0] == losses[1]


def test_cpu_seconds_budget(faces: Path, tmp_path: Path, clocks: dict[str, float]) -> None:
    """max_cpu_seconds counts the process's CPU time: 30 s per fake step, 70 s -> past it after step 3."""
    result = train(TrainConfig(data=faces, out=tmp_path / "run", steps=8, max_cpu_seconds=70.0, **FAST))
    assert result.step == 3 and result.budget_stop is not None
    assert result.budget_stop["reason"] == "CPU-time budget" and result.budget_stop["cpu_seconds"] == 90.0
    # a budget longer than the run: it finishes as usual, no stop line
    done = train(TrainConfig(data=faces, out=tmp_path / "long", steps=2, max_minutes=60.0, **FAST))
    assert (done.step, done.budget_stop) == (2, None) and _stops(tmp_path / "long") == []


def test_time_between_steps_counts(
    faces: Path, tmp_path: Path, clocks: dict[str, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grid that takes 5 minutes (the loop's wall clock, not a training step) stops the run after it."""
    real_grid = loop.RunFolderWork.sample_grid

    def slow_grid(self: loop.RunFolderWork) -> None:
        clocks["wall"] += 300.0
        real_grid(self)

    monkeypatch.setattr(loop.RunFolderWork, "sample_grid", slow_grid)
    options = FAST | {"sample_every_kimg": 0.016}  # a grid at step 2
    result = train(TrainConfig(data=faces, out=tmp_path / "run", steps=8, max_minutes=6.0, **options))
    assert result.step == 2 and result.budget_stop["wall_seconds"] == 2 * STEP_SECONDS + 300.0  # type: ignore[index]


def test_cli_max_minutes_is_validated_and_passed(faces: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--data", str(faces), "--max-minutes", "0", "--dry-run"])
    assert bad.exit_code == 2 and "max-minutes must be positive" in bad.output
    assert TrainConfig(max_minutes=1.5).to_dict()["max_minutes"] == 1.5
