"""Issue 9 for train and sample: run-folder lock, symlinks, damaged snapshots, markup, odd file names.

Every case goes through the CLI as a user would meet it: exit 2 and one `error:` line (no traceback)
for conditions the user can fix, exit 0 and literal names where the input was fine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner, Result

from diffkit.cli import app
from diffkit.fakesite.faces import write_face_folder
from diffkit.models.config import preset_config
from diffkit.models.unet import UNet
from diffkit.runs.folder import SAMPLES_DIR, STATE_FILE, STATS_FILE, write_run_config
from diffkit.runs.snapshots import save_ema_snapshot
from diffkit.train import loop
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

REPO = Path(__file__).resolve().parents[1]
# The tiny U-Net at 16 px on CPU in fp32, no grids mid-run: a step takes a fraction of a second.
TRAIN_FAST = [
    "--preset", "tiny", "--resolution", "16", "--batch-size", "4", "--device", "cpu", "--precision", "fp32",
    "--sample-every-kimg", "0", "--no-progress",
]  # fmt: skip
API_FAST = dict(
    preset="tiny", resolution=16, batch_size=4, device="cpu", precision="fp32", progress=False,
    report=False, sample_every_kimg=0.0, sample_grid=1, sample_steps=1,
)  # fmt: skip


@pytest.fixture(autouse=True)
def small_grids(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """CLI runs draw the end-of-run grid with 2 images and 1 DDIM step (the CLI's 64 x 50 takes ~10 s).

    They also run in the test's folder, so their reports/ land there, not in the checkout.
    """
    monkeypatch.chdir(tmp_path)
    real = loop.write_sample_grid

    def small(model: object, diffusion: object, config: TrainConfig, *args: object) -> Path:
        return real(model, diffusion, dataclasses.replace(config, sample_grid=2, sample_steps=1), *args)

    monkeypatch.setattr(loop, "write_sample_grid", small)


def cli(*args: str) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_error_line(result: Result) -> str:
    """The single `error:` line of a refused command (exit 2, nothing else on stderr, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def one_step_run(data: Path, out: Path) -> Path:
    train(TrainConfig(data=data, out=out, steps=1, **API_FAST))
    return out


# --- 3. one training per run folder -------------------------------------------------------------------


def _wait_for(condition, seconds: float = 120.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_second_train_into_a_training_run_folder_exits_2_naming_the_holder(
    faces: Path, tmp_path: Path
) -> None:
    """A real `diffkit train` runs into --out; a second one into the same folder must not start."""
    out = tmp_path / "run"
    args = ["train", "--data", faces, "--out", out, "--steps", "100000", *TRAIN_FAST]
    first = subprocess.Popen(
        [sys.executable, "-m", "diffkit.cli", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        # stats.jsonl is started just before the training loop (and its Ctrl-C handler) begins.
        _wait_for(lambda: (out / STATS_FILE).exists() or first.poll() is not None)
        assert first.poll() is None, first.communicate()
        second = cli("train", "--data", faces, "--out", out, "--steps", "2", *TRAIN_FAST)
        line = one_error_line(second)
        assert f"is in use by `diffkit train` (pid {first.pid}," in line and str(out) in line
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGINT)  # Ctrl-C: it saves its state and exits 130
        _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130, stderr
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert state["step"] >= 0 and (out / "ema-000000.safetensors").is_file()  # saved cleanly on Ctrl-C


def test_resume_of_a_locked_run_exits_2_and_leaves_it_alone(faces: Path, tmp_path: Path) -> None:
    run = one_step_run(faces, tmp_path / "run")
    before = (run / STATE_FILE).read_bytes()
    holder_code = (
        "import sys\nfrom pathlib import Path\nfrom diffkit.lock import folder_lock\n"
        "with folder_lock(Path(sys.argv[1]), 'train'):\n"
        "    print('locked', flush=True)\n    sys.stdin.read()\n"
    )
    env = os.environ | {"PYTHONPATH": str(REPO)}  # the lock of this checkout, whatever diffkit is tested
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = cli("train", "--out", run, "--resume", "--steps", "3", "--no-progress")
        line = one_error_line(result)
        assert f"`diffkit train` (pid {holder.pid}," in line
    finally:
        holder.communicate("", timeout=60)
    assert (run / STATE_FILE).read_bytes() == before
    resumed = cli("train", "--out", run, "--resume", "--steps", "2", "--no-progress", "--json")
    assert resumed.exit_code == 0, resumed.output  # the lock dies with its holder
    assert json.loads(resumed.stdout)["step"] == 2


# --- 4. no writes through symlinks ---------------------------------------------------------------------


def test_resume_refuses_a_run_folder_that_is_a_symlink_out_of_runs(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = one_step_run(faces, tmp_path / "elsewhere" / "run")
    before = {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()}
    (tmp_path / "work" / "runs").mkdir(parents=True)
    (tmp_path / "work" / "runs" / "00000-tiny").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.chdir(tmp_path / "work")
    line = one_error_line(cli("train", "--resume", "--steps", "2", "--no-progress"))
    assert "00000-tiny" in line and "symlink" in line and "--out" in line
    assert {p.name: p.read_bytes() for p in elsewhere.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("link", [STATE_FILE, SAMPLES_DIR, STATS_FILE])
def test_run_files_that_are_symlinks_are_refused_not_written_through(
    faces: Path, tmp_path: Path, link: str
) -> None:
    run = one_step_run(faces, tmp_path / "run")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / link
    if link == SAMPLES_DIR:
        target.mkdir()
        (run / link).rename(tmp_path / "old-samples")
    else:
        (run / link).rename(target)
    (run / link).symlink_to(target)
    before = sorted(p.name for p in outside.rglob("*")), target.is_file() and target.read_bytes()
    line = one_error_line(cli("train", "--out", run, "--resume", "--steps", "2", "--no-progress"))
    assert f"{run / link} is a symlink" in line
    assert (run / link).is_symlink()
    assert (sorted(p.name for p in outside.rglob("*")), target.is_file() and target.read_bytes()) == before
    if link == SAMPLES_DIR:  # a new run into a folder holding the link is refused as well
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        (fresh / link).symlink_to(target)
        args = ("train", "--data", faces, "--out", fresh, "--steps", "1", *TRAIN_FAST)
        assert "is a symlink" in one_error_line(cli(*args))
        assert list(target.iterdir()) == []


def test_sample_default_out_through_a_symlink_is_refused(snapshot_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "ema-000000.safetensors").write_bytes((snapshot_run / "ema-000000.safetensors").read_bytes())
    outside = tmp_path / "outside"
    outside.mkdir()
    (run / "generated").symlink_to(outside, target_is_directory=True)
    line = one_error_line(
        cli("sample", "--run", run, "--n", "1", "--steps", "1", "--device", "cpu", "--no-progress")
    )
    assert "generated" in line and "symlink" in line and "--out" in line
    assert list(outside.iterdir()) == []


def test_sample_replaces_a_linked_png_instead_of_writing_through_it(
    snapshot_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / "000000.png").symlink_to(victim)
    args = ("sample", "--run", snapshot_run, "--n", "1", "--steps", "1", "--out", out, "--device", "cpu")
    result = cli(*args, "--no-progress")
    assert result.exit_code == 0, result.output
    assert victim.read_text() == "keep me"
    assert not (out / "000000.png").is_symlink() and (out / "000000.png").read_bytes()[:4] == b"\x89PNG"


# --- 5. damaged snapshots ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder holding one EMA snapshot of an untrained tiny 8 px U-Net (sampling works from it)."""
    run = tmp_path_factory.mktemp("snap") / "run"
    run.mkdir()
    torch.manual_seed(0)
    model = UNet(preset_config("tiny", 8))
    config = TrainConfig(data=run, preset="tiny", resolution=8)
    payload = {
        "format": "diffkit-run-v1",
        "train": config.to_dict(),
        "model": model.config.to_dict(),
        "diffusion": {"schedule": "cosine", "prediction": "v", "timesteps": 1000, "min_snr_gamma": 5.0},
        "plan": {},
    }
    write_run_config(run, payload)
    save_ema_snapshot(run, model, 0, 0, payload)
    return run


def _rewrite(snapshot: Path, target: Path, case: str) -> None:
    tensors = load_file(snapshot)
    with safe_open(str(snapshot), framework="pt") as handle:
        metadata = dict(handle.metadata())
    payload = json.loads(metadata["config"])
    name = "input_conv.weight"
    if case == "bad_json":
        metadata["config"] = metadata["config"][:-7]
    elif case == "no_model_section":
        del payload["model"]
    elif case == "missing_model_key":
        del payload["model"]["channels"]
    elif case == "wrong_type":
        payload["model"]["num_res_blocks"] = "two"
    elif case == "absurd_size":
        payload["model"]["channels"] = 4000
    elif case == "absurd_timesteps":
        payload["diffusion"]["timesteps"] = 10**12
    elif case == "missing_tensor":
        del tensors[name]
    elif case == "wrong_shape":
        tensors[name] = torch.zeros(7, 3, 3, 3)
    elif case == "wrong_dtype":
        tensors[name] = tensors[name].to(torch.int64)
    elif case == "not_finite":
        tensors[name][0, 0, 0, 0] = float("nan")
    if case != "bad_json":
        metadata["config"] = json.dumps(payload)
    save_file(tensors, str(target), metadata=metadata)


DAMAGE = {
    "bad_json": "the config in its metadata is not valid JSON",
    "no_model_section": "its config has no model section",
    "missing_model_key": "missing keys ['channels']",
    "wrong_type": "num_res_blocks must be an integer",
    "absurd_size": "B parameters, more than the 2B diffkit builds",
    "absurd_timesteps": "diffusion.timesteps must be an integer from 2 to 100000",
    "missing_tensor": "1 tensors missing (first: input_conv.weight)",
    "wrong_shape": "tensor input_conv.weight has shape [7, 3, 3, 3], its model config needs [32, 3, 3, 3]",
    "wrong_dtype": "tensor input_conv.weight has dtype I64, not a floating-point type",
    "not_finite": "tensor input_conv.weight holds NaN or infinite values",
    "not_safetensors": "as safetensors",
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_snapshot_is_one_line_naming_the_file_and_the_fault(
    snapshot_run: Path, tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    damaged = tmp_path / "ema-000001.safetensors"
    if case == "not_safetensors":
        damaged.write_bytes(b"\x80\x04 a pickle, or anything else")
    else:
        _rewrite(snapshot_run / "ema-000000.safetensors", damaged, case)
    if case == "absurd_size":  # refused from the numbers: building it would take ~200 GB
        import diffkit.runs.snapshots as snapshots

        def no_model(*args: object, **kwargs: object) -> None:
            raise AssertionError("a model was built for an absurd config")

        monkeypatch.setattr(snapshots, "UNet", no_model)
    out = tmp_path / "out"
    result = cli(
        "sample", "--run", snapshot_run, "--snapshot", damaged, "--n", "1", "--steps", "1", "--out", out,
        "--device", "cpu", "--no-progress",
    )  # fmt: skip
    line = one_error_line(result)
    assert str(damaged) in line and DAMAGE[case] in line
    assert not any(out.glob("*.png"))


# --- 6. rich markup in names is printed literally -------------------------------------------------------


def test_markup_in_folder_and_file_names_is_printed_literally(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "[bold]data[/]"
    write_face_folder(data, 4, size=16, seed=1)
    (data / "[red]bad.png").write_bytes(b"not an image")  # a file name cannot hold the "/" of "[/]"
    run = tmp_path / "[/]run[bold]"
    result = cli("train", "--data", data, "--out", run, "--steps", "1", *TRAIN_FAST)
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"run: {run}\n" in result.stdout and f"snapshot: {run / 'ema-000000.safetensors'}" in result.stdout
    assert "  skipped [red]bad.png: " in result.stdout
    samples = tmp_path / "[bold]samples[/]"
    result = cli(
        "sample",
        "--run",
        run,
        "--n",
        "1",
        "--steps",
        "1",
        "--out",
        samples,
        "--device",
        "cpu",
        "--no-progress",
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert f"wrote 1 images to {samples}\n" in result.stdout and (samples / "000000.png").is_file()
    resumed = cli("train", "--out", run, "--resume", "--steps", "2", "--no-progress")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    assert f"resuming {run} at step 1 " in resumed.stderr


# --- 2. file names that are not UTF-8 ------------------------------------------------------------------


def test_non_utf8_file_names_train_and_are_shown_escaped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = tmp_path / os.fsdecode(b"d\xe9ta")
    paths = write_face_folder(data, 4, size=16, seed=2)
    os.rename(paths[0], data / os.fsdecode(b"caf\xe9.png"))
    (data / os.fsdecode(b"br\xefken.png")).write_bytes(b"not an image")
    result = cli("train", "--data", data, "--out", tmp_path / "run", "--steps", "1", *TRAIN_FAST)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "data: 4 images, 1 skipped" in result.stdout
    assert "  skipped br\\xefken.png: " in result.stdout
    as_json = cli("train", "--data", data, "--dry-run", "--json", *TRAIN_FAST)
    assert as_json.exit_code == 0, (as_json.output, as_json.exception)
    skipped = json.loads(as_json.stdout)["skipped_images"]
    assert [item["path"] for item in skipped] == ["br\\xefken.png"]


# --- 7. the resume state is never unpickled ------------------------------------------------------------


class _Payload:
    """Unpickling this creates a file: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_a_pickled_resume_state_is_refused_without_running_it(faces: Path, tmp_path: Path) -> None:
    run = one_step_run(faces, tmp_path / "run")
    marker = tmp_path / "pwned"
    state = torch.load(run / STATE_FILE, weights_only=True)
    torch.save(state | {"payload": _Payload(marker)}, run / STATE_FILE)
    line = one_error_line(cli("train", "--out", run, "--resume", "--steps", "2", "--no-progress"))
    assert f"cannot read {run / STATE_FILE}" in line and "resume state is damaged" in line
    assert not marker.exists()


def test_resume_refuses_a_given_preset_even_when_it_is_the_default(faces: Path, tmp_path: Path) -> None:
    """`--preset small` is the default: before, a resume of a tiny run took it for "not given" and went
    on as tiny without a word. A given option that differs from the run is one error line."""
    run = one_step_run(faces, tmp_path / "run")
    for preset in ("small", "base"):
        line = one_error_line(cli("train", "--out", run, "--resume", "--preset", preset, "--dry-run"))
        assert "--resume continues the saved run, but preset differ" in line
    line = one_error_line(cli("train", "--out", run, "--resume", "--resolution", "64", "--dry-run"))
    assert "resolution differ" in line  # 64 is the default resolution, the run's is 16
    same = cli("train", "--out", run, "--resume", "--preset", "tiny", "--dry-run", "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["preset"] == "tiny"
    # not given: the run's own values, as before
    assert cli("train", "--out", run, "--resume", "--dry-run").exit_code == 0


def test_ctrl_c_during_the_run_folder_set_up_saves_a_state(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 0's set-up before the first step (stats.jsonl, reference features, TensorBoard's import)
    takes seconds: a Ctrl-C there is a stop request, so the run saves a resumable state and says it was
    interrupted, instead of a KeyboardInterrupt that leaves no state-latest.pt (seen under load)."""
    real_init = loop.RunFolderWork.__init__

    def ctrl_c_while_setting_up(self: loop.RunFolderWork, *args: object) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # delivered at once, in the main thread
        real_init(self, *args)

    monkeypatch.setattr(loop.RunFolderWork, "__init__", ctrl_c_while_setting_up)
    out = tmp_path / "run"
    try:
        result = train(TrainConfig(data=faces, out=out, steps=50, seed=0, **API_FAST))
    except KeyboardInterrupt:  # caught here, or it would stop the whole pytest session
        pytest.fail("a Ctrl-C during the run folder set-up escaped as KeyboardInterrupt")
    assert result.interrupted and result.step == 1  # the first step ran, then the stop was honoured
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert state["step"] == 1
