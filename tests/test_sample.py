"""Sampling: snapshots are plain safetensors; generate_images and `diffkit sample` work from them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.models.config import UNetConfig
from diffkit.models.unet import UNet
from diffkit.sample.generate import generate_images
from diffkit.train.config import TrainConfig, load_run_config
from diffkit.train.run import train

RED, BLUE = (220, 40, 40), (40, 40, 220)
RES = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained briefly on solid red and solid blue images (8 px), enough to learn both."""
    root = tmp_path_factory.mktemp("sample")
    (root / "solid").mkdir()
    for index in range(8):
        Image.new("RGB", (RES, RES), RED if index % 2 else BLUE).save(root / "solid" / f"{index}.png")
    train(
        TrainConfig(
            data=root / "solid",
            out=root / "run",
            preset="tiny",
            resolution=RES,
            batch_size=8,
            steps=60,
            lr=2e-3,
            warmup_kimg=0.1,
            seed=0,
            device="cpu",
            precision="fp32",
            progress=False,
            report=False,
            sample_grid=4,
            sample_steps=2,
            log_every_steps=10,
        )
    )
    return root / "run"


def test_trained_snapshot_samples_the_training_colours(run: Path) -> None:
    """End to end (data, loss, EMA, snapshot, sampler, uint8): every sample is flat red or flat blue.

    A sign or scale error anywhere (v <-> x0, the DDIM update, [-1, 1] <-> uint8) gives noise or
    wrong colours instead; the untrained model gives noise.
    """
    images = generate_images(run, 8, steps=20, seed=0, device="cpu", precision="fp32", progress=False)
    means = images.astype(float).mean(axis=(1, 2))  # (8, 3) mean colour per image
    distance = np.minimum(np.abs(means - RED).max(axis=1), np.abs(means - BLUE).max(axis=1))
    assert distance.max() < 60, means.round()
    assert images.astype(float).std(axis=(1, 2)).max() < 40  # flat, not noise (noise: std ~ 70+)


def test_snapshot_is_plain_safetensors_with_config(run: Path) -> None:
    snapshot = run / "ema-000000.safetensors"
    assert snapshot.read_bytes()[:1] != b"\x80"  # not a pickle
    tensors = load_file(snapshot)
    with safe_open(str(snapshot), framework="pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    assert config == json.loads((run / "config.json").read_text())
    assert metadata["step"] == "60" and metadata["nimg"] == "480"
    model = UNet(UNetConfig.from_dict(config["model"]))
    model.load_state_dict(tensors, strict=True)
    # The snapshot holds the EMA weights of the resume state, exactly.
    ema = torch.load(run / "state-latest.pt", weights_only=True)["ema"]
    assert ema.keys() == tensors.keys() and all(torch.equal(ema[k], tensors[k]) for k in tensors)
    assert load_run_config(run) == TrainConfig.from_dict(config["train"])
    assert load_run_config(run).preset == "tiny"


def test_generate_images_is_deterministic_and_per_image(run: Path) -> None:
    images = generate_images(
        run, 5, steps=4, seed=7, batch_size=5, device="cpu", precision="fp32", progress=False
    )
    assert images.shape == (5, RES, RES, 3) and images.dtype == np.uint8
    again = generate_images(
        run, 3, steps=4, seed=7, batch_size=2, device="cpu", precision="fp32", progress=False
    )
    # DDIM: image i depends only on (seed, i), not on n or the batch split (1 level for float rounding).
    assert np.abs(again.astype(int) - images[:3].astype(int)).max() <= 1
    other = generate_images(run, 3, steps=4, seed=8, device="cpu", precision="fp32", progress=False)
    assert not np.array_equal(other, images[:3])
    ddpm = generate_images(run, 2, sampler="ddpm", steps=4, seed=7, device="cpu", progress=False)
    assert ddpm.shape == (2, RES, RES, 3)


def test_sample_cli_writes_pngs_and_grid(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples"
    result = CliRunner().invoke(
        app,
        [
            "sample",
            "--run",
            str(run),
            "--n",
            "4",
            "--steps",
            "3",
            "--seed",
            "1",
            "--out",
            str(out),
            "--grid",
            "--device",
            "cpu",
            "--report",
            str(tmp_path / "report.html"),
            "--no-progress",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["files"] == [f"{i:06d}.png" for i in range(4)] and data["n"] == 4
    assert sorted(p.name for p in out.iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
        "000003.png",
        "grid.png",
        "provenance.json",
    ]
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (2 + 2 * (RES + 2),) * 2  # 2x2 images with 2 px padding


def test_sample_cli_bad_run_or_out_is_a_one_line_error(run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sample", "--run", str(tmp_path / "nope"), "--no-progress"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()][0].startswith("error:")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    result = CliRunner().invoke(app, ["sample", "--run", str(empty), "--no-progress"])
    assert result.exit_code == 2 and "snapshot" in result.stderr
    not_a_folder = tmp_path / "file.png"
    not_a_folder.write_bytes(b"x")
    args = ["sample", "--run", str(run), "--out", str(not_a_folder), "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        f"error: cannot create the output folder {not_a_folder} (File exists); pass another --out"
    ]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args], capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--n", "0"], ["--n must be at least 1 (got 0)"]),
        (["--steps", "0", "--eta", "-1"], ["--steps must be at least 1 (got 0)", "--eta must be >= 0"]),
        (["--batch-size", "0"], ["--batch-size must be at least 1 (got 0)"]),
        (["--sampler", "euler"], ["Invalid value for '--sampler'"]),
    ],
)
def test_sample_options_are_checked_before_the_run_is_read(
    tmp_path: Path, options: list[str], expected: list[str]
) -> None:
    """Bad numbers are one line naming the option, exit 2, before the run folder is even looked at."""
    result = _cli("sample", "--run", str(tmp_path / "no-such-run"), *options)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and "Traceback" not in result.stderr
    for piece in expected:
        assert piece in lines[0]
    assert "no-such-run" not in lines[0]
    assert not (tmp_path / "no-such-run").exists()


def test_sample_config_validates_when_made() -> None:
    from diffkit.errors import DiffkitError
    from diffkit.sample.config import SampleConfig

    with pytest.raises(DiffkitError, match=r"--n must be at least 1 \(got -3\); --eta must be >= 0"):
        SampleConfig(n=-3, eta=float("nan"))
    with pytest.raises(DiffkitError, match="--precision must be one of auto, fp32, bf16, fp16"):
        SampleConfig(precision="fp8")
    with pytest.raises(DiffkitError, match="--device must be one of"):
        SampleConfig(device="tpu")
