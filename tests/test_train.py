"""Training: loss goes down, resume is bit-exact, bad data and bad options give one-line errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import write_face_folder
from diffkit.train.config import TrainConfig, TrainPlan, merge_for_resume
from diffkit.train.ema import ema_beta
from diffkit.train.monitor import NonFiniteGuard
from diffkit.train.run import train

# Small and fast on CPU: tiny U-Net at 16 px, fp32, no report, a 4-image grid with 3 DDIM steps.
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
    sample_steps=3,
    log_every_steps=1,
    warmup_kimg=0.2,
)


def _stats(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]


def test_training_lowers_the_loss(faces: Path, tmp_path: Path) -> None:
    steps = 120
    result = train(TrainConfig(data=faces, out=tmp_path / "run", steps=steps, **FAST))
    losses = [record["loss"] for record in _stats(tmp_path / "run")]
    assert len(losses) == steps and result.step == steps and result.kimg == steps * 8 / 1000
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.7 * first, (first, last)
    assert result.skipped_steps == 0 and result.img_per_s and result.img_per_s > 0
    files = set(result.files)
    assert {
        "config.json",
        "stats.jsonl",
        "state-latest.pt",
        "ema-000000.safetensors",
        "progression.png",
    } <= files
    assert (tmp_path / "run" / "samples").is_dir()


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    """All tensors of a resume state (model, EMA, optimiser moments), flattened to name -> tensor."""
    flat = {f"model.{k}": v for k, v in state["model"].items()}
    flat |= {f"ema.{k}": v for k, v in state["ema"].items()}
    for index, moments in state["optimizer"]["state"].items():
        flat |= {f"opt.{index}.{k}": v for k, v in moments.items() if isinstance(v, torch.Tensor)}
    return flat


def test_resume_is_bit_exact(faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2N steps in one go == N steps, then `diffkit train --resume` for N more (CPU, fp32, fixed seed).

    Dropout is on (global RNG), gradients are accumulated over 2 micro-batches, a sample grid is drawn
    mid-run, and the epoch (24 images) rolls over inside a batch: all must leave the stream unchanged.
    """
    monkeypatch.chdir(tmp_path)
    options = FAST | dict(batch_size=10, grad_accum=2, dropout=0.1, sample_every_kimg=0.02, seed=3)
    whole = train(TrainConfig(data=faces, out=tmp_path / "whole", steps=6, **options))
    half = train(TrainConfig(data=faces, out=tmp_path / "split", steps=3, **options))
    assert half.step == 3 and not half.interrupted
    cli = CliRunner().invoke(
        app,
        ["train", "--out", str(tmp_path / "split"), "--resume", "--steps", "6", "--no-progress", "--json"],
    )
    assert cli.exit_code == 0, cli.output
    resumed = json.loads(cli.stdout)
    assert resumed["step"] == 6 and resumed["resumed_from_step"] == 3 and whole.step == 6
    state_a = torch.load(tmp_path / "whole" / "state-latest.pt", weights_only=True)
    state_b = torch.load(tmp_path / "split" / "state-latest.pt", weights_only=True)
    tensors_a, tensors_b = _tensors(state_a), _tensors(state_b)
    assert tensors_a.keys() == tensors_b.keys() and len(tensors_a) > 100
    different = [name for name in tensors_a if not torch.equal(tensors_a[name], tensors_b[name])]
    assert different == []
    assert state_a["batcher"] == state_b["batcher"] and torch.equal(
        state_a["torch_rng"], state_b["torch_rng"]
    )
    assert [r["loss"] for r in _stats(tmp_path / "whole")] == [r["loss"] for r in _stats(tmp_path / "split")]
    snapshot_a = load_file(tmp_path / "whole" / "ema-000000.safetensors")
    snapshot_b = load_file(tmp_path / "split" / "ema-000000.safetensors")
    assert all(torch.equal(snapshot_a[k], snapshot_b[k]) for k in snapshot_a)
    html = Path(resumed["report"]).read_text()  # the CLI run writes its report
    for heading in ("Loss", "Throughput", "Samples", "Forward diffusion", "Config"):
        assert f"<h2>{heading}</h2>" in html
    # loss and throughput plots, progression, last grid, forward-diffusion strip
    assert html.count("data:image/png") == 5


def test_corrupt_image_is_skipped_and_listed(tmp_path: Path) -> None:
    write_face_folder(tmp_path / "data", 5, size=32, seed=1)
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    result = train(TrainConfig(data=tmp_path / "data", dry_run=True, runs_dir=tmp_path / "runs", **FAST))
    assert result.dataset_size == 5
    assert [Path(item["path"]).name for item in result.skipped_images] == ["broken.png"]
    assert result.params > 0 and result.flops_per_image > 0
    assert not (tmp_path / "runs").exists()  # a dry run creates nothing


@pytest.mark.parametrize("kind", ["empty", "missing", "out_is_a_file"])
def test_empty_or_missing_data_folder_is_a_one_line_error(faces: Path, tmp_path: Path, kind: str) -> None:
    data = tmp_path / "data"
    if kind == "empty":
        data.mkdir()
    out = tmp_path / "out"
    if kind == "out_is_a_file":
        data = faces
        out.write_text("not a folder")
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--out",
            str(out),
            "--data",
            str(data),
            "--preset",
            "tiny",
            "--resolution",
            "16",
            "--steps",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert str((out if kind == "out_is_a_file" else data).name) in lines[0]


def test_cli_dry_run_prints_model_size_as_json(faces: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(faces),
            "--out",
            str(tmp_path / "run"),
            "--preset",
            "tiny",
            "--resolution",
            "16",
            "--epochs",
            "2",
            "--batch-size",
            "5",
            "--dry-run",
            "--json",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["dry_run"] and data["total_steps"] == 10  # ceil(2 epochs * 24 images / 5)
    assert data["params"] > 100_000 and data["flops_per_image"] > 1_000_000
    assert not (tmp_path / "run").exists()


def test_existing_run_needs_resume_and_resume_rejects_a_different_model(faces: Path, tmp_path: Path) -> None:
    one_step = train(TrainConfig(data=faces, out=tmp_path / "run", steps=1, **FAST))
    assert one_step.first_loss is None and one_step.final_loss is not None  # one window: no "a -> a"
    with pytest.raises(DiffkitError, match="--resume"):
        train(TrainConfig(data=faces, out=tmp_path / "run", steps=2, **FAST))
    with pytest.raises(DiffkitError, match="resolution"):
        train(
            TrainConfig(data=faces, out=tmp_path / "run", steps=2, resume=True, **(FAST | {"resolution": 32}))
        )


def test_nan_guard_skips_steps_then_stops(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_loss = GaussianDiffusion.loss
    calls = {"n": 0}

    def flaky_loss(self: GaussianDiffusion, model, x0, generator=None, labels=None, inputs=None):  # noqa: ANN001
        calls["n"] += 1
        loss = real_loss(self, model, x0, generator, labels, inputs)
        return loss * float("nan") if calls["n"] in (2, 3) or calls["n"] >= 5 else loss

    monkeypatch.setattr(GaussianDiffusion, "loss", flaky_loss)
    with pytest.raises(DiffkitError, match="NaN/inf for 3 steps in a row"):
        train(TrainConfig(data=faces, out=tmp_path / "run", steps=20, max_bad_steps=3, **FAST))
    assert calls["n"] == 7  # steps 1 and 4 trained; 2-3 skipped (streak reset); 5, 6, 7 -> stop

    guard = NonFiniteGuard(2, tolerate_inf_grads=True)  # fp16: inf gradients are the scaler's business
    assert guard.should_step(0.5, float("inf")) and not guard.should_step(float("nan"), 1.0)
    assert guard.skipped == 1


def test_bf16_autocast_trains_and_fp16_on_cpu_is_refused(faces: Path, tmp_path: Path) -> None:
    options = FAST | {"precision": "bf16", "log_every_steps": 50}
    result = train(TrainConfig(data=faces, out=tmp_path / "run", steps=3, **options))
    assert result.precision == "bf16" and result.step == 3
    assert result.final_loss is not None and 0 < result.final_loss < 10
    # A run shorter than log_every_steps still logs every step (a loss curve, not a single point).
    assert [record["step"] for record in _stats(tmp_path / "run")] == [1, 2, 3]
    assert result.first_loss is not None
    before = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(DiffkitError, match="already at step 3, past the requested total of 2"):
        train(TrainConfig(data=faces, out=tmp_path / "run", steps=2, resume=True, **options))
    assert (tmp_path / "run" / "config.json").read_text() == before  # the run keeps its own length
    with pytest.raises(DiffkitError, match="fp16 on a CPU"):
        train(TrainConfig(data=faces, out=tmp_path / "run16", steps=3, **(FAST | {"precision": "fp16"})))


def test_ema_half_life_and_ramp_up() -> None:
    # Without ramp-up, after halflife images the old weights count half.
    beta = ema_beta(batch_size=100, nimg=10**9, halflife_kimg=10.0, rampup=None)
    assert beta ** (10_000 / 100) == pytest.approx(0.5)
    # With ramp-up the half-life is at most 5% of the images seen: the first step copies the model.
    assert ema_beta(64, 0, 10.0, 0.05) == 0.0
    assert ema_beta(64, 20_000, 10.0, 0.05) == pytest.approx(0.5 ** (64 / 1000))


def test_plan_and_config_round_trip() -> None:
    config = TrainConfig(kimg=1.0, batch_size=64, grad_accum=4, warmup_kimg=10.0)
    plan = TrainPlan.resolve(config, dataset_size=1000)
    assert (plan.total_steps, plan.total_nimg, plan.micro_batch, plan.warmup_nimg) == (16, 1024, 16, 10_000)
    assert plan.lr_at(1e-3, 0) == pytest.approx(1e-3 * 64 / 10_000) and plan.lr_at(1e-3, 10_000) == 1e-3
    # The warm-up depends on images seen only, not on the run length (so resume can extend a run).
    assert TrainPlan.resolve(dataclasses.replace(config, kimg=100.0), 1000).lr_at(1e-3, 640) == plan.lr_at(
        1e-3, 640
    )
    assert TrainPlan.resolve(TrainConfig(batch_size=64), 640).total_steps == 500  # default: 50 epochs
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(DiffkitError, match="only one of"):
        TrainConfig(steps=1, epochs=1.0).validate()
    saved = dataclasses.replace(config, preset="tiny", resolution=32, precision="fp32")
    merged = merge_for_resume(saved, TrainConfig(steps=50, device="cpu", resume=True))
    assert (merged.preset, merged.resolution, merged.steps, merged.kimg) == ("tiny", 32, 50, None)
    # Given options win; options left at their default keep the saved value (precision stays fp32).
    assert (merged.device, merged.precision, merged.resume) == ("cpu", "fp32", True)
    with pytest.raises(DiffkitError, match="preset"):
        merge_for_resume(saved, TrainConfig(preset="base"))


def _two_class_folder(faces: Path, root: Path) -> Path:
    """The shared faces split into two subfolders: a labelled data set (classes a and b)."""
    for index, face in enumerate(sorted(faces.glob("*.png"))):
        target = root / ("a" if index % 2 else "b") / face.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(face.read_bytes())
    return root


def test_labelled_resume_is_bit_exact_with_label_dropout(faces: Path, tmp_path: Path) -> None:
    """Label dropout draws from the saved loss generator, so a labelled run resumes bit-exactly."""
    data = _two_class_folder(faces, tmp_path / "data")
    options = FAST | dict(batch_size=10, label_dropout=0.5, seed=1)
    whole = train(TrainConfig(data=data, out=tmp_path / "whole", steps=4, **options))
    train(TrainConfig(data=data, out=tmp_path / "split", steps=2, **options))
    train(TrainConfig(data=data, out=tmp_path / "split", steps=4, resume=True, **options))
    state_a = torch.load(tmp_path / "whole" / "state-latest.pt", weights_only=True)
    state_b = torch.load(tmp_path / "split" / "state-latest.pt", weights_only=True)
    assert whole.step == 4 and state_a["config"]["labels"]["classes"] == ["a", "b"]
    tensors_a, tensors_b = _tensors(state_a), _tensors(state_b)
    assert "model.label_embedding.weight" in tensors_a
    assert [name for name in tensors_a if not torch.equal(tensors_a[name], tensors_b[name])] == []
    # Resuming on data whose classes changed is refused before anything is trained.
    (data / "a").rename(data / "c")
    with pytest.raises(
        DiffkitError, match=r"trained with classes \['a', 'b'\], the data now gives \['b', 'c'\]"
    ):
        train(TrainConfig(data=data, out=tmp_path / "split", steps=6, resume=True, **options))


def test_label_dropout_changes_what_the_model_sees(faces: Path, tmp_path: Path) -> None:
    """--label-dropout 0 vs 0.5 on the same labelled data and seed: different training (and --labels none
    gives a model without a class embedding)."""
    data = _two_class_folder(faces, tmp_path / "data")
    losses = []
    for dropout in (0.0, 0.5):
        train(TrainConfig(data=data, out=tmp_path / f"d{dropout}", steps=2, label_dropout=dropout, **FAST))
        losses.append([r["loss"] for r in _stats(tmp_path / f"d{dropout}")])
    assert losses[0] != losses[1]
    train(TrainConfig(data=data, out=tmp_path / "none", steps=1, labels="none", **FAST))
    config = json.loads((tmp_path / "none" / "config.json").read_text())
    assert config["model"]["num_classes"] == 0 and "labels" not in config
    with pytest.raises(DiffkitError, match=r"--label-dropout must be in \[0, 1\) \(got 1.0\)"):
        TrainConfig(label_dropout=1.0)


def test_train_report_has_a_forward_diffusion_strip_and_a_too_early_note(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    from diffkit.train.cache import load_image_dataset
    from diffkit.train.report import STRIP_FRACTIONS, forward_strip, too_early_note

    monkeypatch.chdir(tmp_path)  # the report goes to ./reports
    result = train(TrainConfig(data=faces, out=tmp_path / "run", steps=1, **(FAST | dict(report=True))))
    sidecar = json.loads(Path(result.report).with_suffix(".json").read_text())  # type: ignore[arg-type]
    sections = {section["heading"]: section for section in sidecar["sections"]}
    assert "too early to judge" in sections["Samples"]["badges"]  # 1 step: the samples are noise
    assert sections["Samples"]["text"].startswith("Too early to judge: after 0.01 kimg")
    assert (
        "t = 0, t = 100, t = 250, t = 500, t = 749, t = 999 (of 1000)"
        in sections["Forward diffusion"]["text"]
    )

    images = np.asarray(load_image_dataset(faces, 16, progress=False).images)
    strip, steps = forward_strip(images, GaussianDiffusion.create("cosine", "v"))
    assert steps == [0, 100, 250, 500, 749, 999] and len(STRIP_FRACTIONS) == 6
    pixels = np.asarray(strip).astype(int)
    assert strip.size == (2 + 6 * 18, 2 + 4 * 18)  # 4 images (rows) x 6 timesteps, 2 px padding
    first, last = pixels[2:18, 2:18], pixels[2:18, 2 + 5 * 18 : 18 + 5 * 18]
    assert np.abs(first - images[0]).mean() < 2  # t = 0: the training image itself
    assert np.abs(last - images[0]).mean() > 40  # t = 999: noise
    noise = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), dtype=np.uint8)
    assert too_early_note(noise, images, 1.0) is not None
    assert too_early_note(images[:8], images, 1.0) is None  # real-looking samples: no note
    assert isinstance(strip, Image.Image)


def test_resume_builds_the_network_the_run_was_trained_as(faces: Path, tmp_path: Path) -> None:
    """A preset may change between versions (small's GroupNorm groups did) while every tensor keeps its
    shape: resume must rebuild the saved network, not today's preset, or it trains a different model."""
    from diffkit.runs.state import save_state

    run = tmp_path / "run"
    train(TrainConfig(data=faces, out=run, steps=1, **FAST))
    state = torch.load(run / "state-latest.pt", weights_only=True)
    # an older diffkit's tiny: 16 groups instead of 32 (same shapes, a different network)
    state["config"]["model"]["norm_groups"] = 16
    state.pop("format")
    save_state(run / "state-latest.pt", state)
    train(TrainConfig(data=faces, out=run, steps=2, resume=True, **FAST))
    assert json.loads((run / "config.json").read_text())["model"]["norm_groups"] == 16
    snapshot = sorted(run.glob("ema-*.safetensors"))[-1]
    from diffkit.runs.snapshots import load_snapshot

    model, _, _ = load_snapshot(snapshot, torch.device("cpu"))
    assert {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)} == {16}


def test_timestep_sampling_reaches_the_training_loop(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--timestep-sampling lognormal: every step draws EDM noise levels, config.json records it, and the
    losses differ from a uniform run with the same seed."""
    seen: list[str] = []
    original = GaussianDiffusion.draw_timesteps

    def spy(self: GaussianDiffusion, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(self.timestep_sampling)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GaussianDiffusion, "draw_timesteps", spy)
    losses = {}
    for sampling in ("uniform", "lognormal"):
        seen.clear()
        train(TrainConfig(data=faces, out=tmp_path / sampling, steps=3, timestep_sampling=sampling, **FAST))
        assert seen == [sampling] * 3
        config = json.loads((tmp_path / sampling / "config.json").read_text())
        assert config["train"]["timestep_sampling"] == sampling
        losses[sampling] = [r["loss"] for r in _stats(tmp_path / sampling)]
    assert losses["uniform"] != losses["lognormal"]
    with pytest.raises(DiffkitError, match="--timestep_sampling must be one of uniform, lognormal"):
        TrainConfig(timestep_sampling="beta")


def test_learning_rate_defaults_to_the_presets_and_is_recorded(faces: Path, tmp_path: Path) -> None:
    """No --lr: the preset's (tiny 4e-4, measured by bench_quality's levers; small/base 2e-4); config.json
    records the number, an explicit --lr wins, and the two give different training."""
    from diffkit.train.config import PRESET_LR

    assert PRESET_LR == {"tiny": 4e-4, "small": 2e-4, "base": 2e-4}
    assert TrainConfig(preset="tiny").resolved_lr == 4e-4 and TrainConfig(preset="small").resolved_lr == 2e-4
    assert TrainConfig(preset="tiny", lr=1e-3).resolved_lr == 1e-3
    losses = {}
    for name, lr in (("preset", None), ("given", 2e-4)):
        train(TrainConfig(data=faces, out=tmp_path / name, steps=3, lr=lr, **FAST))
        saved = json.loads((tmp_path / name / "config.json").read_text())["train"]["lr"]
        assert saved == (4e-4 if lr is None else lr)
        losses[name] = [r["loss"] for r in _stats(tmp_path / name)]
    assert losses["preset"][0] == losses["given"][0] and losses["preset"][2] != losses["given"][2]
    with pytest.raises(DiffkitError, match="--lr must be positive"):
        TrainConfig(lr=0.0)


def test_batch_size_defaults_to_the_presets_and_a_resume_keeps_the_saved_one(
    faces: Path, tmp_path: Path
) -> None:
    """No --batch-size: the preset's (tiny 32, measured by bench_quality's third lever run; small/base 64);
    config.json records the number, and a run saved with another batch resumes with its own."""
    from diffkit.train.config import PRESET_BATCH

    assert PRESET_BATCH == {"tiny": 32, "small": 64, "base": 64}
    assert TrainConfig(preset="tiny").resolved_batch_size == 32
    assert TrainConfig(preset="small").resolved_batch_size == 64
    assert TrainConfig(preset="tiny", batch_size=8).resolved_batch_size == 8
    unbatched = {k: v for k, v in FAST.items() if k != "batch_size"}
    result = train(TrainConfig(data=faces, out=tmp_path / "new", steps=2, **unbatched))
    assert json.loads((tmp_path / "new" / "config.json").read_text())["train"]["batch_size"] == 32
    assert result.kimg * 1000 == 2 * 32
    old = tmp_path / "old"  # as trained when 64 was every preset's default (config.json holds 64)
    train(TrainConfig(data=faces, out=old, steps=2, batch_size=64, **unbatched))
    result = train(TrainConfig(data=faces, out=old, steps=3, resume=True, **unbatched))
    assert json.loads((old / "config.json").read_text())["train"]["batch_size"] == 64
    assert result.kimg * 1000 == 3 * 64
    with pytest.raises(DiffkitError, match="batch_size differ from its config.json"):
        train(TrainConfig(data=faces, out=old, steps=4, resume=True, batch_size=32, **unbatched))
    with pytest.raises(DiffkitError, match=r"--batch-size \(32\) must be a positive multiple of grad_accum"):
        TrainConfig(preset="tiny", grad_accum=3)
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert "tiny 32, small 64, base 64" in " ".join(help_text.replace("│", " ").split())  # rich's box


def test_width_and_depth_options_build_record_and_resume_the_network(faces: Path, tmp_path: Path) -> None:
    """--channels / --num-res-blocks: the run trains that network, config.json and the snapshots record
    it, sampling and --resume rebuild it, and a resume that asks for another width is refused."""
    from diffkit.runs.snapshots import load_snapshot
    from diffkit.sample.generate import generate_images

    run = tmp_path / "run"
    shape = {"channels": 24, "num_res_blocks": 2}
    train(TrainConfig(data=faces, out=run, steps=2, **FAST, **shape))
    saved = json.loads((run / "config.json").read_text())
    assert {k: saved["model"][k] for k in shape} == shape and {k: saved["train"][k] for k in shape} == shape
    model, _, _ = load_snapshot(sorted(run.glob("ema-*.safetensors"))[-1], torch.device("cpu"))
    assert model.input_conv.out_channels == 24 and [len(level) for level in model.down] == [2] * 4
    assert generate_images(run, 2, steps=2, device="cpu", progress=False).shape == (2, 16, 16, 3)
    train(TrainConfig(data=faces, out=run, steps=3, resume=True, **FAST))  # the saved shape, not tiny's
    assert json.loads((run / "config.json").read_text())["model"]["channels"] == 24
    with pytest.raises(DiffkitError, match="channels differ from its config.json"):
        train(TrainConfig(data=faces, out=run, steps=4, resume=True, **FAST, channels=40))
    with pytest.raises(DiffkitError, match="--num-res-blocks must be a positive integer"):
        TrainConfig(num_res_blocks=0)
    result = CliRunner().invoke(
        app, ["train", "--data", str(faces), "--preset", "small", "--channels", "40", "--dry-run"]
    )
    assert result.exit_code != 0 and "norm_groups 16 must be a positive divisor of channels" in result.output


def test_edm_prediction_trains_samples_resumes_and_refuses_export(faces: Path, tmp_path: Path) -> None:
    """--prediction edm: every training step feeds the network EDM's c_in-scaled input, config.json and
    the snapshots record sigma_data, sampling and --resume rebuild it, and the export refuses rather than
    approximate (diffusers' UNet2DModel and DDIMScheduler have no input scaling)."""
    from diffkit.export.config import ExportConfig
    from diffkit.export.run import export
    from diffkit.sample.generate import generate_images

    inputs: list[float] = []
    original = GaussianDiffusion.model_input

    def spy(self: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = original(self, x_t, t)
        inputs.append(float((out.std() / x_t.std()).item()))
        return out

    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GaussianDiffusion, "model_input", spy)
        train(TrainConfig(data=faces, out=run, steps=2, prediction="edm", **FAST))
    assert len(inputs) >= 2 and all(ratio > 1.0 for ratio in inputs[:2])  # c_in / sqrt(abar) = 1/r >= 1
    diffusion = json.loads((run / "config.json").read_text())["diffusion"]
    assert diffusion["prediction"] == "edm" and diffusion["sigma_data"] == 0.5
    assert generate_images(run, 2, steps=4, device="cpu", progress=False).shape == (2, 16, 16, 3)
    train(TrainConfig(data=faces, out=run, steps=3, resume=True, **FAST))
    assert json.loads((run / "config.json").read_text())["train"]["prediction"] == "edm"
    with pytest.raises(DiffkitError, match="--prediction edm.*cannot be exported exactly"):
        export(ExportConfig(run=run, out=tmp_path / "exported"))
    assert not (tmp_path / "exported").exists()


def test_upscaled_images_are_counted_before_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Images smaller than --resolution are enlarged: the count and the min/median/max factor (resolution /
    shorter side) in the dry run, on the terminal before training, in --json and in the report; the
    cache records every source size (format 2), and a format-1 cache without sizes is rebuilt."""
    from PIL import Image

    from diffkit.train.cache import CACHE_FORMAT, load_image_dataset, upscaling

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    sizes = {"a.png": (8, 8), "b.png": (20, 12), "c.png": (32, 32), "d.png": (5, 40)}
    for name, (width, height) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(data / name)
    cache = load_image_dataset(data, 16, progress=False)
    assert cache.sizes == [(8, 8), (20, 12), (32, 32), (5, 40)]
    header = json.loads(cache.cache_path.with_suffix(".json").read_text())
    assert header["format"] == CACHE_FORMAT == 2 and header["sizes"] == [[8, 8], [20, 12], [32, 32], [5, 40]]
    # a cache written before the sizes were recorded: rebuilt, not read without them
    old = header | {"format": 1}
    del old["sizes"]
    cache.cache_path.with_suffix(".json").write_text(json.dumps(old))
    rebuilt = load_image_dataset(data, 16, progress=False)
    assert not rebuilt.reused and rebuilt.sizes == cache.sizes

    options = dict(FAST, data=data, steps=1)
    dry = train(TrainConfig(dry_run=True, **options))
    expected = {"count": 3, "images": 4, "min_factor": 16 / 12, "median_factor": 2.0, "max_factor": 16 / 5,
                "smallest_side": 5}  # fmt: skip
    assert dry.upscaled == pytest.approx(expected)
    text = "\n".join(dry.summary_lines())
    said = "3 of 4 images are smaller than 16 px (shorter side) and are enlarged 1.33-3.20x (median 2.00x)"
    assert said in text
    assert "3 of 4 images are smaller than 16 px" in capsys.readouterr().err
    out = CliRunner().invoke(
        app, ["train", "--data", str(data), "--preset", "tiny", "--resolution", "16", "--dry-run", "--json"]
    )
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout)["upscaled"] == pytest.approx(expected)
    # at 8 px only the 5 px wide image is enlarged; where none is, nothing is said
    assert train(TrainConfig(**dict(options, resolution=8, dry_run=True))).upscaled["count"] == 1  # type: ignore[index]
    assert upscaling([(8, 8), (20, 12)], 8) is None

    monkeypatch.chdir(tmp_path)
    result = train(TrainConfig(out=tmp_path / "run", **dict(options, report=True)))
    assert result.report is not None
    page = result.report.read_text()
    assert "Upscaled images" in page and "3 of 4 images are smaller than 16 px" in page
    assert json.loads(result.report.with_suffix(".json").read_text())["summary"]["upscaled_images"] == 3
