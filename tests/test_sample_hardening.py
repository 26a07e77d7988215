"""Issue 24 (4, 5) and 27 (4) for sampling: N in the billions, guidance that is not a usable number, and
one set of sampling options shared by ``diffkit sample`` and ``diffkit eval --run``."""

from __future__ import annotations

import dataclasses
import shutil
import tracemalloc
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner, Result

from diffkit.cli import app
from diffkit.diffusion.guidance import MAX_GUIDANCE, guided_model
from diffkit.diffusion.samplers import SamplerOutput
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig
from diffkit.eval.sampling import ensure_samples
from diffkit.models.config import preset_config
from diffkit.models.unet import UNet
from diffkit.runs.folder import write_run_config
from diffkit.runs.snapshots import save_ema_snapshot
from diffkit.sample import generate as generate_module
from diffkit.sample.config import DEFAULT_GUIDANCE, GRID_MAX, SampleConfig
from diffkit.sample.options import SamplingOptions
from diffkit.sample.pngs import check_disk_space
from diffkit.sample.run import sample
from diffkit.train.config import TrainConfig

RES = 16
# One 16 px RGB sample, counted low: the PNG's fixed chunks (63 bytes) and a quarter of its raw pixels.
PNG_LOW = 63 + RES * RES * 3 // 4
DiskUsage = namedtuple("DiskUsage", "total used free")


def _snapshot_run(root: Path, classes: list[str] | None = None) -> Path:
    """A run folder with one EMA snapshot of an untrained tiny 16 px U-Net: sampling works, no training."""
    run = root / "run"
    run.mkdir(parents=True)
    torch.manual_seed(0)
    model = UNet(dataclasses.replace(preset_config("tiny", RES), num_classes=len(classes or [])))
    payload = {
        "format": "diffkit-run-v1",
        "train": TrainConfig(data=root / "data", preset="tiny", resolution=RES).to_dict(),
        "model": model.config.to_dict(),
        "diffusion": {"schedule": "cosine", "prediction": "v", "timesteps": 1000, "min_snr_gamma": 5.0},
        "plan": {},
    }
    if classes:
        payload["labels"] = {"classes": classes, "label_dropout": 0.1}
    write_run_config(run, payload)
    save_ema_snapshot(run, model, 0, 0, payload)
    return run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _snapshot_run(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _snapshot_run(tmp_path_factory.mktemp("labelled"), ["cats", "dogs"])


def cli(*args: object) -> Result:
    return CliRunner().invoke(app, [str(arg) for arg in args])


def one_error_line(result: Result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


class FakeSampler:
    """Stands in for the denoising loop: records each batch's size, one step traced, returns the noise."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.sizes: list[int] = []
        self.stop_after = stop_after

    def __call__(self, model: object, sampler: object, noise: torch.Tensor, *args: object, **kw: object):  # noqa: ANN204
        if self.stop_after is not None and len(self.sizes) == self.stop_after:
            raise StopSampling
        self.sizes.append(noise.shape[0])
        on_output = kw.get("on_output")
        if callable(on_output):
            on_output(999, noise, SamplerOutput(noise, noise))
        return noise.clamp(-1, 1)


class StopSampling(Exception):
    pass


# --- 24.5: --guidance must be a finite number from 0 to MAX_GUIDANCE -------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "1e308", "nan", "-1", "100.5"])
def test_unusable_guidance_is_one_line_before_the_run_is_read(tmp_path: Path, value: str) -> None:
    out = tmp_path / "out"
    result = cli("sample", "--run", tmp_path / "no-run", "--label", "cats", "--guidance", value, "--out", out)
    line = one_error_line(result)
    assert f"--guidance must be a number from 0 to {MAX_GUIDANCE:g} (got {float(value)})" in line
    assert "no-run" not in line and not out.exists()


def test_guidance_bound_is_in_help_and_the_bound_itself_samples(labelled: Path, tmp_path: Path) -> None:
    help_text = CliRunner().invoke(app, ["sample", "--help"], env={"COLUMNS": "250"}).output
    assert f"Classifier-free guidance W for --label, 0 to {MAX_GUIDANCE:g}" in help_text
    out = tmp_path / "out"
    result = cli("sample", "--run", labelled, "--label", "dogs", "--guidance", MAX_GUIDANCE, "--n", 2,
                 "--steps", 1, "--out", out, "--device", "cpu", "--no-progress", "--json",
                 "--report", tmp_path / "r.html")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000001.png"]


def test_guided_model_refuses_an_infinite_weight_for_library_callers() -> None:
    def model(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return x

    with pytest.raises(DiffkitError, match="--guidance must be a number from 0 to 100 \\(got inf\\)"):
        guided_model(model, 0, float("inf"), 2)
    guided_model(model, 0, MAX_GUIDANCE, 2)  # the bound itself is allowed


# --- 27.4: the options are resolved once ------------------------------------------------------------------


def test_options_resolve_snapshot_label_and_default_guidance(run: Path, labelled: Path) -> None:
    plain = SamplingOptions.resolve(run, 3, steps=2)
    assert plain.snapshot == run / "ema-000000.safetensors" and plain.resolution == RES
    assert (plain.label, plain.label_index, plain.guidance) == (None, None, None)
    dogs = SamplingOptions.resolve(labelled, 1, label="dogs")
    assert (dogs.label_index, dogs.guidance) == (1, DEFAULT_GUIDANCE)
    assert SamplingOptions.resolve(labelled, 1, label="cats", guidance=0.0).guidance == 0.0
    with pytest.raises(DiffkitError, match=r"^--guidance needs --label NAME"):
        SamplingOptions.resolve(labelled, 1, guidance=2.0)
    with pytest.raises(
        DiffkitError, match="^--label birds is not a class of this run; its classes: cats, dogs$"
    ):
        SamplingOptions.resolve(labelled, 1, label="birds")
    config = SampleConfig(run=labelled, n=5, steps=3, seed=4, label="cats", guidance=2.5, batch_size=2)
    options = SamplingOptions.from_config(config)
    assert (options.n, options.steps, options.seed, options.batch_size) == (5, 3, 4, 2)
    assert (options.label_index, options.guidance, options.sampler) == (0, 2.5, "ddim")


def test_sample_and_eval_draw_the_same_pixels_for_the_same_options(run: Path, tmp_path: Path) -> None:
    """``eval --run`` samples through the same options and engine as ``diffkit sample``."""
    options = ["--n", 3, "--steps", 2, "--seed", 5, "--batch-size", 2, "--device", "cpu", "--no-progress"]
    result = cli("sample", "--run", run, *options, "--out", tmp_path / "s", "--report", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    folder, reused = ensure_samples(
        EvalConfig(run=run, samples=3, steps=2, seed=5, batch_size=2, device="cpu", progress=False)
    )
    assert reused is False
    for index in range(3):
        sampled = np.asarray(Image.open(tmp_path / "s" / f"{index:06d}.png"))
        evaluated = np.asarray(Image.open(folder / f"sample-{index:05d}.png"))
        assert sampled.shape == (RES, RES, 3) and np.array_equal(sampled, evaluated)


# --- 24.4: bounded batches, and a disk check before any work -----------------------------------------------


def test_sample_writes_batch_by_batch_with_the_batch_sizes_asked_for(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSampler()
    monkeypatch.setattr(generate_module, "run_sampler", fake)
    out = tmp_path / "out"
    result = sample(SampleConfig(run=run, n=10, batch_size=4, steps=1, out=out, device="cpu", progress=False,
                                 grid=True, write_report=False))  # fmt: skip
    assert fake.sizes == [4, 4, 2]
    assert sorted(p.name for p in out.glob("0*.png")) == [f"{i:06d}.png" for i in range(10)]
    assert (
        list(result.files) == [f"{i:06d}.png" for i in range(10)]
        and result.to_dict()["files"][9] == "000009.png"
    )
    with Image.open(out / "grid.png") as grid:  # 4 x 3 tiles of 16 px, 2 px apart
        assert grid.size == (2 + 4 * (RES + 2), 2 + 3 * (RES + 2))


def test_grid_and_report_keep_only_the_first_images(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--grid shows the first GRID_MAX images and the report the first 64, whatever N is."""
    monkeypatch.setattr(generate_module, "run_sampler", FakeSampler())
    out = tmp_path / "out"
    config = SampleConfig(run=run, n=GRID_MAX + 44, batch_size=100, steps=1, out=out, device="cpu",
                          progress=False, grid=True, report=tmp_path / "r.html")  # fmt: skip
    result = sample(config)
    assert len(list(out.glob("0*.png"))) == GRID_MAX + 44 == len(result.files)
    side = int(GRID_MAX**0.5)  # 256 images: 16 x 16 tiles of 16 px, 2 px apart
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (2 + side * (RES + 2),) * 2
        tiles = np.asarray(grid.convert("RGB"))
    last = np.asarray(Image.open(out / f"{GRID_MAX - 1:06d}.png"))
    corner = 2 + (side - 1) * (RES + 2)
    assert np.array_equal(tiles[corner : corner + RES, corner : corner + RES], last)
    assert "64 of 300 samples" in (tmp_path / "r.html").read_text()


def test_a_billion_samples_start_at_once_in_bounded_memory(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """N = 10^9 with a disk said to be big enough: batches of 2 flow at once, nothing is sized by N."""
    fake = FakeSampler(stop_after=3)
    monkeypatch.setattr(generate_module, "run_sampler", fake)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10**18, 0, 10**18))
    out = tmp_path / "out"
    config = SampleConfig(run=run, n=10**9, batch_size=2, steps=1, out=out, device="cpu", progress=False,
                          write_report=False)  # fmt: skip
    tracemalloc.start()
    try:
        with pytest.raises(StopSampling):
            sample(config)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert fake.sizes == [2, 2, 2]
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(6)]
    assert peak < 200 * 2**20, peak  # the images alone would be 768 GB


def test_eval_samples_in_batches_of_its_batch_size(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeSampler()
    monkeypatch.setattr(generate_module, "run_sampler", fake)
    folder, _ = ensure_samples(
        EvalConfig(run=run, samples=7, steps=1, batch_size=3, device="cpu", progress=False)
    )
    assert fake.sizes == [3, 3, 1]
    assert sorted(p.name for p in folder.glob("*.png")) == [f"sample-{i:05d}.png" for i in range(7)]


def test_disk_check_refuses_exactly_when_the_low_estimate_exceeds_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Path] = []

    def usage(free: int):  # noqa: ANN202
        return lambda path: seen.append(Path(path)) or DiskUsage(10**12, 0, free)

    folder = tmp_path / "not" / "yet" / "made"
    monkeypatch.setattr(shutil, "disk_usage", usage(10 * PNG_LOW))
    check_disk_space(folder, 10, RES, "lower --n")  # fits exactly
    assert seen == [tmp_path]  # the nearest folder that exists
    monkeypatch.setattr(shutil, "disk_usage", usage(10 * PNG_LOW - 1))
    with pytest.raises(
        DiffkitError, match=r"^10 PNGs of 16 px need at least 2\.5 KB, more than the 2\.5 KB free"
    ):
        check_disk_space(folder, 10, RES, "lower --n")
    assert not (tmp_path / "not").exists()


def test_sample_n_that_can_never_fit_is_one_line_before_any_work(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded for a sample that cannot fit")

    monkeypatch.setattr(generate_module, "load_snapshot", no_model)
    out = tmp_path / "out"
    line = one_error_line(cli("sample", "--run", run, "--n", 10**15, "--out", out, "--device", "cpu"))
    assert f"{10**15:,} PNGs of 16 px need at least 255 PB" in line
    assert line.endswith("; lower --n or pass --out on a larger disk") and str(out) in line
    assert not out.exists()


def test_eval_samples_that_can_never_fit_are_one_line_before_any_work(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded for samples that cannot fit")

    monkeypatch.setattr(generate_module, "load_snapshot", no_model)
    args = ["--samples", 10**15, "--device", "cpu", "--metrics", "kid", "--report", tmp_path / "r.html"]
    line = one_error_line(cli("eval", "--run", run, *args, "--cache-dir", tmp_path / "cache"))
    assert f"{10**15:,} PNGs of 16 px need at least 255 PB" in line
    assert line.endswith("; lower --samples or free space in the run folder")
    assert not (run / f"eval-samples-{10**15}-seed0").exists()
