"""TensorBoard event files, read back with TensorBoard's own reader (EventAccumulator): the scalars are
stats.jsonl's at the same steps (as float32), the grid is the PNG in samples/, a resume adds only the
steps after it, and a kill -9 past the last saved state leaves no duplicate point."""

from __future__ import annotations

import io
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from diffkit.runs.folder import STATE_FILE, STATS_FILE, list_grids, read_stats
from diffkit.train import tblog
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

FAST: dict[str, Any] = dict(
    preset="tiny", resolution=16, batch_size=8, device="cpu", precision="fp32", progress=False, report=False,
    sample_every_kimg=0.016, sample_grid=4, sample_steps=2, log_every_steps=1, warmup_kimg=0.2,
)  # fmt: skip


def _events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def _loss_records(run: Path) -> list[dict[str, Any]]:
    return [r for r in read_stats(run / STATS_FILE) if "loss" in r]


def _assert_scalars_equal_stats(run: Path) -> None:
    events, records = _events(run), _loss_records(run)
    for key, tag in (("loss", "train/loss"), ("grad_norm", "train/grad_norm"), ("lr", "train/lr"),
                     ("img_per_s", "train/img_per_s")):  # fmt: skip
        points = events.Scalars(tag)
        assert [p.step for p in points] == [r["step"] for r in records], tag
        # TensorBoard stores a scalar as float32: exactly stats.jsonl's value rounded to float32
        assert [p.value for p in points] == [float(np.float32(r[key])) for r in records], tag


def test_event_files_hold_the_stats_and_the_grids(faces: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(TrainConfig(data=faces, out=run, steps=4, tensorboard=True, **FAST))
    assert [r["step"] for r in _loss_records(run)] == [1, 2, 3, 4]
    _assert_scalars_equal_stats(run)
    # grids every 16 images (step 2) and at the end (step 4): the same pixels as samples/grid-*.png
    images = _events(run).Images(tblog.GRID_TAG)
    assert [i.step for i in images] == [2, 4]
    for image, (_, path) in zip(images, list_grids(run), strict=True):
        shown = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        np.testing.assert_array_equal(shown, np.asarray(Image.open(path).convert("RGB")))


def test_a_resume_after_a_kill_shows_each_step_once(faces: Path, tmp_path: Path) -> None:
    """Session 1 saves its state at step 3; session 2 trains to 6 and is "killed" (its state put back to
    step 3, as a kill -9 between two state saves leaves it); session 3 resumes at 3. Steps 4-6 were
    written twice to the event files; TensorBoard shows each once, with the values stats.jsonl keeps."""
    run = tmp_path / "run"
    train(TrainConfig(data=faces, out=run, steps=3, tensorboard=True, **FAST))
    shutil.copy(run / STATE_FILE, tmp_path / "state-3.pt")
    train(TrainConfig(out=run, steps=6, resume=True, tensorboard=True, progress=False, report=False))
    shutil.copy(tmp_path / "state-3.pt", run / STATE_FILE)  # the kill: the last saved state is step 3
    train(TrainConfig(out=run, steps=6, resume=True, tensorboard=True, progress=False, report=False))
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 3  # one file per session
    assert [r["step"] for r in _loss_records(run)] == [1, 2, 3, 4, 5, 6]
    _assert_scalars_equal_stats(run)
    assert [i.step for i in _events(run).Images(tblog.GRID_TAG)] == [2, 3, 4, 6]


def test_off_by_flag_and_a_note_when_asked_for_without_the_package(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    train(TrainConfig(data=faces, out=tmp_path / "off", steps=1, tensorboard=False, **FAST))
    assert not (tmp_path / "off" / "tensorboard").exists()
    monkeypatch.setattr(tblog, "available", lambda: False)
    capsys.readouterr()
    result = train(TrainConfig(data=faces, out=tmp_path / "missing", steps=1, tensorboard=True, **FAST))
    assert result.step == 1 and result.tensorboard is None
    assert not (tmp_path / "missing" / "tensorboard").exists()
    note = capsys.readouterr().err
    assert "tensorboard package is not installed" in note and "diffkit[tensorboard]" in note
    # not given and not installed: silently off
    train(TrainConfig(data=faces, out=tmp_path / "auto", steps=1, **FAST))
    assert "not installed" not in capsys.readouterr().err


def test_fid_and_kid_while_training_go_to_tensorboard(tmp_path: Path) -> None:
    """The evaluation records' FID and KID, at their steps (the writer alone: an evaluation run needs
    Inception weights; tests/test_train_eval.py checks the records themselves)."""
    log = tblog.TensorBoardLog(tmp_path, resume_step=0)
    log.evaluation({"step": 5, "fid": 123.25, "kid": 0.5, "kid_std": 0.1})
    log.evaluation({"step": 10, "fid": 99.5, "kid": None})
    log.close()
    events = _events(tmp_path)
    assert [(p.step, p.value) for p in events.Scalars("eval/fid")] == [(5, 123.25), (10, 99.5)]
    assert [(p.step, p.value) for p in events.Scalars("eval/kid")] == [(5, 0.5)]
