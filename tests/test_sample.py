"""Sampling: snapshots are plain safetensors; generate_images and `diffkit sample` work from them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.models import UNet, UNetConfig
from diffkit.sample import generate_images, load_run_config
from diffkit.testing.faces import write_face_folder
from diffkit.train import TrainConfig, train


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # Two OpenMP threads on a busy 2-core machine spin-wait against each other (10x slower steps).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sample")
    write_face_folder(root / "faces", 8, size=32, seed=2)
    train(
        TrainConfig(
            data=root / "faces",
            out=root / "run",
            preset="tiny",
            resolution=16,
            batch_size=4,
            steps=3,
            device="cpu",
            precision="fp32",
            progress=False,
            report=False,
            sample_grid=4,
            sample_steps=2,
        )
    )
    return root / "run"


def test_snapshot_is_plain_safetensors_with_config(run: Path) -> None:
    snapshot = run / "ema-000000.safetensors"
    assert snapshot.read_bytes()[:1] != b"\x80"  # not a pickle
    tensors = load_file(snapshot)
    with safe_open(str(snapshot), framework="pt") as handle:
        metadata = handle.metadata()
    config = json.loads(metadata["config"])
    assert config == json.loads((run / "config.json").read_text())
    assert metadata["step"] == "3" and metadata["nimg"] == "12"
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
    assert images.shape == (5, 16, 16, 3) and images.dtype == np.uint8
    again = generate_images(
        run, 3, steps=4, seed=7, batch_size=2, device="cpu", precision="fp32", progress=False
    )
    # DDIM: image i depends only on (seed, i), not on n or the batch split (1 level for float rounding).
    assert np.abs(again.astype(int) - images[:3].astype(int)).max() <= 1
    other = generate_images(run, 3, steps=4, seed=8, device="cpu", precision="fp32", progress=False)
    assert not np.array_equal(other, images[:3])
    ddpm = generate_images(run, 2, sampler="ddpm", steps=4, seed=7, device="cpu", progress=False)
    assert ddpm.shape == (2, 16, 16, 3)


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
    ]
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (2 + 2 * 18, 2 + 2 * 18)  # 2x2 images of 16 px with 2 px padding


def test_sample_cli_missing_run_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sample", "--run", str(tmp_path / "nope"), "--no-progress"])
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.strip()][0].startswith("error:")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    result = CliRunner().invoke(app, ["sample", "--run", str(empty), "--no-progress"])
    assert result.exit_code == 2 and "snapshot" in result.stderr
