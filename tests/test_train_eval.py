"""FID/KID while training (``--eval-every-kimg``): the same numbers as ``diffkit eval``, logged to
stats.jsonl with their N and label, consistent over a resume, invisible to the training itself, off
with one message when there are no Inception weights, and plotted in the train report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.device import Precision
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig
from diffkit.eval.run import evaluate
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.fid import feature_statistics, frechet_distance_from_stats
from diffkit.metrics.weights import INCEPTION_ENV, OFFLINE_ENV
from diffkit.models.config import preset_config
from diffkit.models.unet import UNet
from diffkit.runs.folder import eval_records, read_stats
from diffkit.testing.inception import make_inception_weights
from diffkit.train.cache import load_image_dataset
from diffkit.train.config import TrainConfig
from diffkit.train.evaluation import TrainingEvaluator, reference_files
from diffkit.train.monitor import StatsWriter
from diffkit.train.report import write_train_report
from diffkit.train.result import TrainResult
from diffkit.train.run import train

OFF_MESSAGE = "FID/KID during training (--eval-every-kimg) is off"
# Tiny U-Net at 16 px on CPU, fp32; one FID/KID of 2 samples (2 DPM-Solver++ steps) every 2 steps. Few
# images everywhere: InceptionV3 at 299 px (~0.15 s an image on one core) is what these tests wait for.
FAST = dict(
    preset="tiny",
    resolution=16,
    batch_size=8,
    device="cpu",
    precision="fp32",
    progress=False,
    report=False,
    sample_every_kimg=0.0,
    sample_grid=4,
    sample_steps=2,
    log_every_steps=1,
    warmup_kimg=0.2,
    eval_every_kimg=0.016,
    eval_samples=2,
    eval_steps=2,
)


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 procedural 16 px faces: the training data and the evaluation's reference (M = 8)."""
    folder = tmp_path_factory.mktemp("faces8")
    write_face_folder(folder, 8, size=16, seed=0)
    return folder


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_inception_weights(tmp_path_factory.mktemp("inception") / "inception-test.pth")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME shared by this module's tests: the feature cache (and an empty torch hub) live in it."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def offline(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No download, no official file in a cache, the default feature cache under ``home``."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv(OFFLINE_ENV, "1")
    for name in (INCEPTION_ENV, "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def with_weights(offline: None, weights: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(INCEPTION_ENV, str(weights))
    return weights


def _evals(run_dir: Path) -> list[dict]:
    return eval_records(read_stats(run_dir / "stats.jsonl"))


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat |= {f"ema.{k}": v for k, v in state["ema"].items()}
    for index, moments in state["optimizer"]["state"].items():
        flat |= {f"opt.{index}.{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)}
    return flat


def test_evaluator_gives_diffkit_evals_numbers_on_the_same_samples(
    faces: Path, tmp_path: Path, with_weights: Path
) -> None:
    """The samples written as PNGs and scored by ``diffkit eval`` give the evaluator's FID, KID and
    headline exactly, and the reference features come from the cache the evaluator filled."""
    config = TrainConfig(data=faces, **FAST | dict(eval_samples=6, eval_steps=3))
    dataset = load_image_dataset(faces, 16, progress=False)
    device = torch.device("cpu")
    cache = tmp_path / "features"
    evaluator = TrainingEvaluator.create(
        config, dataset, device, Precision.create("fp32", device), cache_dir=cache
    )
    assert evaluator is not None and not evaluator.reference_cached and evaluator.reference.shape == (8, 2048)
    torch.manual_seed(1)
    # dropout on and train mode: the evaluator must sample in eval mode, and leave the mode as it was
    model = UNet(dataclasses.replace(preset_config("tiny", 16), dropout=0.5)).train()
    with torch.no_grad():  # the output layer starts at zero: give every layer some weights
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    diffusion = GaussianDiffusion.create("cosine", "v", 1000, 5.0)
    record = evaluator.evaluate(model, diffusion, nimg=1234, step=7)
    images = evaluator.sample(model, diffusion)
    assert images.shape == (6, 16, 16, 3) and images.dtype == np.uint8
    assert np.array_equal(images, evaluator.sample(model, diffusion))  # the fixed set
    assert model.training
    assert len({image.tobytes() for image in images}) == 6  # 6 different noises, not one repeated

    generated = tmp_path / "generated"
    generated.mkdir()
    for index, image in enumerate(images):
        Image.fromarray(image).save(generated / f"{index:03d}.png")
    result = evaluate(
        EvalConfig(
            generated=generated,
            reference=faces,
            samples=6,
            metrics=("fid", "kid"),
            cache_dir=cache,
            bootstrap=0,
            write_report=False,
            progress=False,
            device="cpu",
        )
    )
    assert result.feature_cache == {"inception_generated": "miss", "inception_reference": "hit"}
    assert (
        record["fid"] == result.fid
        and record["kid"] == result.kid_mean
        and record["kid_std"] == result.kid_std
    )
    assert record["headline"] == result.fid_headline()
    assert record["headline"].startswith("FID@6 ") and record["headline"].endswith(
        "(reference 8, torch-fidelity, unofficial weights)"
    )
    assert (record["step"], record["kimg"], record["n"], record["n_reference"]) == (7, 1.234, 6, 8)
    assert record["fid_label"] == "FID@6 (reference 8)" and record["kid_subset_size"] == 6
    # and the same FID through the stats route (float64 covariances, symmetric square root)
    generated_features = np.load(next(p for p in cache.glob("*.npz") if np.load(p)["2048"].shape[0] == 6))
    stats = feature_statistics(generated_features["2048"]), feature_statistics(evaluator.reference)
    assert record["fid"] == pytest.approx(frechet_distance_from_stats(*stats), rel=1e-6)


def test_off_by_default_and_off_without_weights_with_one_message(
    faces: Path, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    dataset = load_image_dataset(faces, 16, progress=False)
    device = torch.device("cpu")
    precision = Precision.create("fp32", device)
    assert (
        TrainingEvaluator.create(
            TrainConfig(data=faces, **FAST | {"eval_every_kimg": 0.0}), dataset, device, precision
        )
        is None
    )
    assert capsys.readouterr().err == ""  # off by default: nothing said, no weights looked for
    assert TrainingEvaluator.create(TrainConfig(data=faces, **FAST), dataset, device, precision) is None
    err = capsys.readouterr().err
    assert err.count(OFF_MESSAGE) == 1 and "weights-inception-2015-12-05-6726825d.pth" in err
    assert "training goes on" in err


def test_stats_writer_keeps_eval_records_consistent_over_a_resume(tmp_path: Path) -> None:
    path = tmp_path / "stats.jsonl"
    stats = StatsWriter(path, resume_step=0)
    for step in (1, 2, 3, 4):
        stats.add(0.5 / step, 1.0, 0.1, 8)
        stats.flush(step, step * 8, 1e-4, step * 0.1, 0, None)
        if step % 2 == 0:
            stats.log_eval({"step": step, "kimg": step * 8 / 1000, "fid": 100.0 / step, "n": 4})
    assert [r["step"] for r in _evals(tmp_path)] == [2, 4] and stats.has_eval(4) and not stats.has_eval(3)
    assert all(r["kind"] == "eval" for r in _evals(tmp_path))
    assert stats.first_and_last_loss() == (0.5, 0.125)  # the eval lines are not losses
    resumed = StatsWriter(path, resume_step=3)  # the state was saved at step 3: step 4 is redone
    assert [r["step"] for r in read_stats(path)] == [1, 2, 2, 3]
    assert resumed.has_eval(2) and not resumed.has_eval(4)


def test_report_plots_fid_and_kid_next_to_the_loss(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stats = StatsWriter(run_dir / "stats.jsonl", resume_step=0)
    headline = "FID@4 {} (reference 24, torch-fidelity, unofficial weights)"
    for step in (1, 2, 3, 4):
        stats.add(0.5 / step, 1.0, 0.1, 8)
        stats.flush(step, step * 8, 1e-4, step * 0.1, 0, None)
        if step % 2 == 0:
            stats.log_eval(
                {
                    "step": step, "kimg": step * 8 / 1000, "fid": 300.0 / step, "kid": 0.5 / step,
                    "kid_std": 0.01, "n": 4, "n_reference": 24, "fid_label": "FID@4 (reference 24)",
                    "headline": headline.format(300 // step), "engine": "torch-fidelity",
                    "weights": "unofficial weights", "sampler": "dpmpp", "sampler_steps": 2, "seconds": 1.5,
                }
            )  # fmt: skip
    result = TrainResult(
        run_dir, False, "cpu", "fp32", "tiny", 16, 1, 1, 24, [], 4, 0.032, step=4, kimg=0.032
    )
    payload = {"train": {"preset": "tiny"}, "model": {}, "plan": {}}
    paths = write_train_report(run_dir, result, payload)
    html = paths.html.read_text()
    headings = [
        h
        for h in ("Loss", "FID during training", "KID during training", "Throughput")
        if f"<h2>{h}</h2>" in html
    ]
    assert headings == ["Loss", "FID during training", "KID during training", "Throughput"]
    assert (
        html.index("<h2>Loss</h2>")
        < html.index("<h2>FID during training</h2>")
        < html.index("<h2>Throughput</h2>")
    )
    assert html.count("data:image/png") == 4  # loss, FID, KID, throughput
    assert "FID@4 (reference 24)" in html and "FID@4 75 (reference 24" in html  # label and last headline
    sidecar = json.loads(paths.json.read_text())
    assert sidecar["summary"]["fid_during_training"] == headline.format(75)
    assert [r["step"] for r in eval_records(sidecar["data"]["stats"])] == [2, 4]


# --- through the training loop ------------------------------------------------------------------


def test_eval_on_trains_the_same_weights_as_eval_off(faces: Path, tmp_path: Path, with_weights: Path) -> None:
    """Dropout draws from the global RNG that building Inception also uses: it must not notice."""
    options = FAST | dict(dropout=0.1, seed=3)
    on = train(TrainConfig(data=faces, out=tmp_path / "on", steps=6, tensorboard=True, **options))
    off = train(TrainConfig(data=faces, out=tmp_path / "off", steps=6, **options | {"eval_every_kimg": 0.0}))
    assert on.step == off.step == 6
    state_on = torch.load(tmp_path / "on" / "state-latest.pt", weights_only=True)
    state_off = torch.load(tmp_path / "off" / "state-latest.pt", weights_only=True)
    tensors_on, tensors_off = _tensors(state_on), _tensors(state_off)
    assert tensors_on.keys() == tensors_off.keys()
    assert [name for name in tensors_on if not torch.equal(tensors_on[name], tensors_off[name])] == []
    assert torch.equal(state_on["torch_rng"], state_off["torch_rng"])
    losses = [
        [r["loss"] for r in read_stats(run / "stats.jsonl") if "loss" in r]
        for run in (tmp_path / "on", tmp_path / "off")
    ]
    assert losses[0] == losses[1] and len(losses[0]) == 6
    evals = _evals(tmp_path / "on")
    assert [r["step"] for r in evals] == [2, 4, 6] and _evals(tmp_path / "off") == []
    for record in evals:
        assert (
            record["n"] == 2 and record["n_reference"] == 8 and record["fid_label"] == "FID@2 (reference 8)"
        )
        assert record["headline"].startswith("FID@2 ") and record["engine"] == "torch-fidelity"
        assert np.isfinite(record["fid"]) and record["fid"] > 0 and np.isfinite(record["kid"])
    # TensorBoard (read with its own reader) holds the same FID and KID at the same steps, as float32
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "on" / "tensorboard"))
    events.Reload()
    for key in ("fid", "kid"):
        points = [(p.step, p.value) for p in events.Scalars(f"eval/{key}")]
        assert points == [(r["step"], float(np.float32(r[key]))) for r in evals]
    # The last record is the EMA model's (not the raw weights'): the same evaluator on the saved EMA
    # weights gives exactly the logged numbers.
    config = TrainConfig(data=faces, **options)
    dataset = load_image_dataset(faces, 16, progress=False)
    device = torch.device("cpu")
    evaluator = TrainingEvaluator.create(config, dataset, device, Precision.create("fp32", device))
    assert evaluator is not None
    ema = UNet(dataclasses.replace(preset_config("tiny", 16), dropout=0.1))
    ema.load_state_dict(state_on["ema"])
    diffusion = GaussianDiffusion.create(
        config.schedule, config.prediction, config.timesteps, config.min_snr_gamma
    )
    again = evaluator.evaluate(ema, diffusion, 48, 6)
    assert (again["fid"], again["kid"]) == (evals[-1]["fid"], evals[-1]["kid"])


def test_resume_keeps_the_eval_records_consistent(faces: Path, tmp_path: Path, with_weights: Path) -> None:
    """3 steps, a record past the saved state (a kill after an evaluation), resume to 6, resume again:
    the stale record is gone, every other one is the model at its step (equal to an uninterrupted run's)."""
    whole = tmp_path / "whole"
    split = tmp_path / "split"
    train(TrainConfig(data=faces, out=whole, steps=6, **FAST))
    train(TrainConfig(data=faces, out=split, steps=3, **FAST))
    assert [r["step"] for r in _evals(split)] == [2, 3]  # every 2 steps, and at the end of the run
    with (split / "stats.jsonl").open("a") as handle:  # written after the last state save, then killed
        handle.write(json.dumps({"kind": "eval", "step": 4, "kimg": 0.032, "fid": -1.0}) + "\n")
    train(TrainConfig(data=faces, out=split, steps=6, resume=True, **FAST))
    train(TrainConfig(data=faces, out=split, steps=6, resume=True, **FAST))  # finished: nothing to add
    evals, reference = _evals(split), {r["step"]: r for r in _evals(whole)}
    assert [r["step"] for r in evals] == [2, 3, 4, 6]
    for record in evals:
        if record["step"] in reference:
            assert (record["fid"], record["kid"]) == (
                reference[record["step"]]["fid"],
                reference[record["step"]]["kid"],
            )
    steps = [r["step"] for r in read_stats(split / "stats.jsonl")]
    assert steps == sorted(steps)


def test_missing_weights_one_message_and_training_goes_on(
    faces: Path, tmp_path: Path, offline: None, capsys: pytest.CaptureFixture[str]
) -> None:
    result = train(TrainConfig(data=faces, out=tmp_path / "run", steps=4, **FAST))
    assert result.step == 4 and not result.interrupted
    assert capsys.readouterr().err.count(OFF_MESSAGE) == 1
    records = read_stats(tmp_path / "run" / "stats.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4] and eval_records(records) == []


def test_reference_subset_is_fixed_seeded_and_in_data_order() -> None:
    files = [f"{index:03d}.png" for index in range(100)]
    config = TrainConfig(data=Path("unused"), **FAST | dict(eval_reference=10))
    chosen = reference_files(files, config)
    assert len(chosen) == 10 == len(set(chosen)) and chosen == sorted(chosen) and set(chosen) <= set(files)
    assert reference_files(files, config) == chosen  # the same draw every time (evaluations, a resume)
    other_seed = dataclasses.replace(config, seed=config.seed + 1)
    assert reference_files(files, other_seed) != chosen
    assert reference_files(files, dataclasses.replace(config, eval_reference=0)) == files
    assert reference_files(files, dataclasses.replace(config, eval_reference=100)) == files
    assert reference_files(files, dataclasses.replace(config, eval_reference=99)) != files
    assert TrainConfig(data=Path("unused"), **FAST).eval_reference == 5000


@pytest.mark.parametrize("bad", [-1, 1])
def test_reference_size_below_two_is_refused(bad: int) -> None:
    with pytest.raises(DiffkitError, match="--eval-reference"):
        TrainConfig(data=Path("unused"), **FAST | dict(eval_reference=bad)).validate()


def test_evaluator_reference_is_the_chosen_subsets_features(
    faces: Path, tmp_path: Path, with_weights: Path
) -> None:
    """A reference of 5 of the 8 training images: exactly those images' features, in data order."""
    dataset = load_image_dataset(faces, 16, progress=False)
    device, cache = torch.device("cpu"), tmp_path / "features"
    precision = Precision.create("fp32", device)
    whole = TrainingEvaluator.create(
        TrainConfig(data=faces, **FAST), dataset, device, precision, cache_dir=cache
    )
    config = TrainConfig(data=faces, **FAST | dict(eval_reference=5))
    part = TrainingEvaluator.create(config, dataset, device, precision, cache_dir=cache)
    assert whole is not None and part is not None and part.reference.shape == (5, 2048)
    rows = [dataset.files.index(name) for name in reference_files(dataset.files, config)]
    np.testing.assert_allclose(part.reference, whole.reference[rows], rtol=1e-5, atol=1e-5)
