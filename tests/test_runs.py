"""diffkit.runs, the one owner of the run folder: names, config.json, resume state, snapshots, "latest"."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import write_face_folder
from diffkit.models.config import preset_config
from diffkit.models.unet import UNet
from diffkit.runs.folder import (
    CONFIG_FILE,
    RUN_FORMAT,
    SAMPLES_DIR,
    STATE_FILE,
    check_run_dir,
    class_names,
    eval_samples_dir,
    grid_path,
    latest_run_dir,
    list_grids,
    next_run_dir,
    read_run_config,
    run_config_payload,
    run_data_dir,
    run_ids,
    snapshot_name,
    write_run_config,
)
from diffkit.runs.snapshots import (
    latest_snapshot,
    list_snapshots,
    load_snapshot,
    resolve_snapshot,
    save_ema_snapshot,
    snapshot_payload,
)
from diffkit.runs.state import STATE_FORMAT, load_state, save_state
from diffkit.train.config import TrainConfig, load_run_config

DIFFUSION = {"schedule": "cosine", "prediction": "v", "timesteps": 1000, "min_snr_gamma": 5.0}


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with config.json and one EMA snapshot of an untrained tiny 8 px U-Net, and its data."""
    root = tmp_path_factory.mktemp("runs")
    write_face_folder(root / "data", 4, size=16, seed=3)
    run = root / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = UNet(preset_config("tiny", 8))
    train = TrainConfig(data=root / "data", preset="tiny", resolution=8).to_dict()
    payload = run_config_payload(train=train, model=model.config.to_dict(), diffusion=DIFFUSION, plan={})
    write_run_config(run, payload)
    save_ema_snapshot(run, model, 1500, 3, payload)
    return run


# --- names and numbering ---------------------------------------------------------------------------------


def test_run_names_are_numbered_from_the_highest_existing_folder(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    assert run_ids(runs_dir) == [] and latest_run_dir(runs_dir) is None
    assert next_run_dir(runs_dir, "tiny", create=False) == runs_dir / "00000-tiny"
    assert not runs_dir.exists()  # create=False only names it (--dry-run)
    first = next_run_dir(runs_dir, "tiny")
    assert first == runs_dir / "00000-tiny" and first.is_dir()
    (runs_dir / "00007-small").mkdir()
    (runs_dir / "notes").mkdir()  # not a run: no NNNNN- prefix
    (runs_dir / "123-x").mkdir()  # not five digits
    (runs_dir / "00009-file").write_text("a file, not a run folder")
    assert [number for number, _ in run_ids(runs_dir)] == [0, 7]
    # 00008 is free, but a file squats on the name the race loop tries next: it moves on.
    (runs_dir / "00008-tiny").write_text("taken")
    assert next_run_dir(runs_dir, "tiny") == runs_dir / "00009-tiny"


def test_latest_run_is_the_highest_numbered_one_holding_the_marker(tmp_path: Path) -> None:
    for name in ("00000-a", "00001-b", "00002-c"):
        (tmp_path / name).mkdir()
    (tmp_path / "00000-a" / STATE_FILE).write_bytes(b"")
    (tmp_path / "00001-b" / STATE_FILE).write_bytes(b"")
    assert latest_run_dir(tmp_path) == tmp_path / "00001-b"
    assert latest_run_dir(tmp_path, CONFIG_FILE) is None


def test_file_names_of_a_run() -> None:
    assert snapshot_name(0) == "ema-000000.safetensors"
    assert snapshot_name(1500) == "ema-000001.safetensors"
    assert snapshot_name(1_234_567_000) == "ema-1234567.safetensors"
    assert grid_path(Path("r"), 480) == Path("r/samples/grid-000000480.png")
    assert eval_samples_dir(Path("r"), 100, 3) == Path("r/eval-samples-100-seed3")
    assert STATE_FILE == "state-latest.pt" and CONFIG_FILE == "config.json"


def test_grids_are_listed_in_training_order(tmp_path: Path) -> None:
    for nimg in (9600, 480, 120000):
        path = grid_path(tmp_path, nimg)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"")
    (tmp_path / SAMPLES_DIR / "grid-latest.png").write_bytes(b"")  # not a training grid
    assert [nimg for nimg, _ in list_grids(tmp_path)] == [480, 9600, 120000]


# --- snapshots: listing, latest, resolving ---------------------------------------------------------------


def test_snapshots_are_listed_by_kimg_and_foreign_names_ignored(tmp_path: Path) -> None:
    for name in ("ema-000250.safetensors", "ema-1000000.safetensors", "ema-000002.safetensors",
                 "ema-12.safetensors", "ema-000003.safetensors.tmp", "ema-best.safetensors"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    names = [path.name for path in list_snapshots(tmp_path)]
    # By number, not by name: "ema-1000000" sorts before "ema-000250" as text.
    assert names == ["ema-000002.safetensors", "ema-000250.safetensors", "ema-1000000.safetensors"]
    assert latest_snapshot(tmp_path) == tmp_path / "ema-1000000.safetensors"
    assert resolve_snapshot(tmp_path, None) == tmp_path / "ema-1000000.safetensors"
    chosen = tmp_path / "ema-000002.safetensors"
    assert resolve_snapshot(None, chosen) == chosen  # an explicit snapshot wins over the run


def test_no_snapshot_or_no_run_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(DiffkitError, match="no ema-\\*.safetensors snapshot in"):
        latest_snapshot(tmp_path)
    with pytest.raises(DiffkitError, match="run folder .* not found; pass --run"):
        resolve_snapshot(tmp_path / "nope", None)
    with pytest.raises(DiffkitError, match="snapshot .* not found"):
        resolve_snapshot(tmp_path, tmp_path / "ema-000001.safetensors")


def test_snapshot_round_trip_gives_the_same_weights_in_eval_mode(snapshot_run: Path) -> None:
    path = snapshot_run / "ema-000001.safetensors"
    model, diffusion, payload = load_snapshot(path, torch.device("cpu"))
    torch.manual_seed(0)
    original = UNet(preset_config("tiny", 8))
    expected = original.state_dict()
    assert all(torch.equal(expected[name], value) for name, value in model.state_dict().items())
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert diffusion.num_timesteps == 1000 and diffusion.prediction == "v"
    assert payload == read_run_config(snapshot_run) == snapshot_payload(path)


def test_snapshot_without_metadata_uses_the_config_beside_it(snapshot_run: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_bytes((snapshot_run / CONFIG_FILE).read_bytes())
    save_file(load_file(snapshot_run / "ema-000001.safetensors"), str(run / "ema-000001.safetensors"))
    assert snapshot_payload(run / "ema-000001.safetensors") == read_run_config(snapshot_run)


# --- config.json -----------------------------------------------------------------------------------------


def test_run_config_round_trip_and_typed_reads(snapshot_run: Path) -> None:
    payload = read_run_config(snapshot_run)
    assert payload["format"] == RUN_FORMAT and payload["diffusion"] == DIFFUSION
    assert run_data_dir(snapshot_run) == snapshot_run.parent / "data"
    config = load_run_config(snapshot_run)  # train's view: its own typed options
    assert config.preset == "tiny" and config.resolution == 8 and config.data == snapshot_run.parent / "data"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "config.json not found; is"),
        ("{not json", "is not readable JSON"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ('{"format": "diffkit-run-v1"}', "has no train section"),
    ],
)
def test_damaged_run_config_is_one_error(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / CONFIG_FILE).write_text(content)
    with pytest.raises(DiffkitError, match=message):
        run_data_dir(tmp_path)


def test_a_run_without_a_data_folder_has_no_reference(tmp_path: Path) -> None:
    write_run_config(tmp_path, {"train": {"data": None}})
    assert run_data_dir(tmp_path) is None


# --- resume state ----------------------------------------------------------------------------------------


def test_state_round_trip_keeps_tensors_rng_and_numbers(tmp_path: Path) -> None:
    path = tmp_path / STATE_FILE
    model = torch.nn.Linear(3, 2)
    state = {"step": 7, "nimg": 56, "model": model.state_dict(), "torch_rng": torch.get_rng_state(),
             "scaler": {}, "config": {"train": {"data": "x"}}}  # fmt: skip
    save_state(path, state)
    loaded = load_state(path)
    assert loaded["format"] == STATE_FORMAT and loaded["step"] == 7 and loaded["nimg"] == 56
    assert all(torch.equal(loaded["model"][k], v) for k, v in model.state_dict().items())
    assert torch.equal(loaded["torch_rng"], state["torch_rng"]) and loaded["config"] == state["config"]
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]  # no temp file left behind


def test_missing_or_foreign_state_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(DiffkitError, match="nothing to resume"):
        load_state(tmp_path / STATE_FILE)
    torch.save({"step": 1}, tmp_path / "old.pt")
    with pytest.raises(DiffkitError, match="is not a diffkit resume state"):
        load_state(tmp_path / "old.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(DiffkitError, match="the resume state is damaged"):
        load_state(tmp_path / "cut.pt")


# --- symlinks --------------------------------------------------------------------------------------------


def test_check_run_dir_refuses_linked_run_files_and_a_linked_run(tmp_path: Path) -> None:
    run = tmp_path / "runs" / "00000-tiny"
    (run / SAMPLES_DIR).mkdir(parents=True)
    check_run_dir(run, tmp_path / "runs")  # a real folder with real files: fine
    os.symlink(tmp_path / "elsewhere.png", grid_path(run, 480))
    with pytest.raises(DiffkitError, match="samples/grid-000000480.png is a symlink"):
        check_run_dir(run)
    os.unlink(grid_path(run, 480))
    linked = tmp_path / "runs" / "00001-tiny"
    linked.symlink_to(run, target_is_directory=True)
    check_run_dir(linked)  # chosen with --out: the user's link
    with pytest.raises(DiffkitError, match="diffkit does not write through links"):
        check_run_dir(linked, tmp_path / "runs")  # found by scanning runs/: refused


# --- eval samples in the run folder ----------------------------------------------------------------------


def test_unwritable_eval_samples_folder_is_one_line_before_sampling(
    snapshot_run: Path, tmp_path: Path
) -> None:
    """Before: sampling ran first, then folder.mkdir raised FileExistsError as a traceback."""
    run = tmp_path / "run"
    run.mkdir()
    for name in (CONFIG_FILE, "ema-000001.safetensors"):
        (run / name).write_bytes((snapshot_run / name).read_bytes())
    blocked = eval_samples_dir(run, 4, 0)
    blocked.write_text("a file where the samples folder goes")
    result = CliRunner().invoke(app, [
        "eval", "--run", str(run), "--samples", "4", "--steps", "1", "--metrics", "kid", "--device", "cpu",
        "--json", "--report", str(tmp_path / "eval.html"), "--cache-dir", str(tmp_path / "cache"),
    ])  # fmt: skip
    assert result.exit_code == 2, (result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"error: cannot write the eval samples to {blocked}: File exists"]
    assert blocked.read_text() == "a file where the samples folder goes"
    # Nothing was sampled: the run folder holds what it held (a lock file aside).
    kept = sorted(p.name for p in run.iterdir() if not p.name.startswith("."))
    assert kept == sorted([CONFIG_FILE, "ema-000001.safetensors", blocked.name])


def test_eval_reference_defaults_to_the_runs_data(snapshot_run: Path) -> None:
    from diffkit.eval.sampling import run_reference

    assert run_reference(snapshot_run) == snapshot_run.parent / "data"
    assert json.loads((snapshot_run / CONFIG_FILE).read_text())["train"]["data"] == str(
        snapshot_run.parent / "data"
    )


def test_snapshot_class_names_must_match_its_class_embedding(tmp_path: Path) -> None:
    """A labelled snapshot carries its class names; a count that disagrees with the model is damage."""
    import dataclasses

    model = UNet(dataclasses.replace(preset_config("tiny", 8), num_classes=2))
    labels = {
        "classes": ["cat", "dog"],
        "source": "folders",
        "counts": {"cat": 1, "dog": 1},
        "label_dropout": 0.1,
    }
    train = TrainConfig(preset="tiny", resolution=8).to_dict()
    payload = run_config_payload(
        train=train, model=model.config.to_dict(), diffusion=DIFFUSION, plan={}, labels=labels
    )
    good = save_ema_snapshot(tmp_path, model, 1000, 1, payload)
    loaded, _, stored = load_snapshot(good, torch.device("cpu"))
    assert class_names(stored) == ["cat", "dog"] and loaded.config.num_classes == 2
    bad = tmp_path / "bad"
    bad.mkdir()
    wrong = save_ema_snapshot(bad, model, 1000, 1, payload | {"labels": labels | {"classes": ["cat"]}})
    with pytest.raises(DiffkitError, match="it names 1 classes but its model has 2"):
        load_snapshot(wrong, torch.device("cpu"))
    assert class_names({"model": {}}) == []
