"""`diffkit export --format diffusers`: diffusers loads the folder and computes what diffkit computes.

The U-Net's forward is compared tensor for tensor; DDIM sampling through diffusers' scheduler and
pipeline is compared image for image with `diffkit sample --sampler ddim --steps 20` from the same
noise. The models are a briefly trained tiny run and runs whose random weights are perturbed away from
the zero-initialised last layers (which would make every block the identity and the test trivial).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.diffusion.samplers import trailing_timesteps
from diffkit.diffusion.schedules import make_schedule
from diffkit.errors import DiffkitError
from diffkit.export.config import ExportConfig
from diffkit.export.run import export
from diffkit.models.config import UNetConfig, preset_config
from diffkit.models.unet import UNet
from diffkit.runs.folder import read_run_config, write_run_config
from diffkit.runs.snapshots import load_snapshot, save_ema_snapshot
from diffkit.sample.generate import _SEED_STRIDE, generate_images, initial_noise
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

diffusers = pytest.importorskip("diffusers")  # in the `test` extra; skipped only where it is missing

RES, STEPS, SEED = 16, 20, 3
TOLERANCE = 2.0  # 0..255 image units: the 2/255
# The small preset at 16 px as diffkit wrote it before UNetConfig had norm_groups and small 48-wide heads.
OLD_SMALL16 = {
    "channels": 48, "channel_mults": [1, 2, 3, 4], "num_res_blocks": 2,
    "attention_resolutions": [16, 8, 4, 2], "dropout": 0.1, "resolution": 16, "in_channels": 3,
    "out_channels": None, "head_dim": 64, "num_classes": 0,
}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model (cosine, v) trained 30 steps on flat red and blue images, 16 px."""
    root = tmp_path_factory.mktemp("export")
    (root / "solid").mkdir()
    for index in range(8):
        colour = (220, 40, 40) if index % 2 else (40, 40, 220)
        Image.new("RGB", (RES, RES), colour).save(root / "solid" / f"{index}.png")
    train(
        TrainConfig(
            data=root / "solid", out=root / "run", preset="tiny", resolution=RES, batch_size=8, steps=30,
            lr=2e-3, warmup_kimg=0.1, seed=0, device="cpu", precision="fp32", progress=False,
            report=False, sample_grid=4, sample_steps=2, log_every_steps=10,
        )
    )  # fmt: skip
    return root / "run"


def perturbed_run(
    base: Path, folder: Path, *, schedule: str, prediction: str, classes: list[str] | None = None,
    model: dict[str, Any] | None = None,
) -> Path:  # fmt: skip
    """A run folder with ``base``'s config, another diffusion or model, and random non-trivial weights."""
    payload = read_run_config(base)
    payload["diffusion"] |= {"schedule": schedule, "prediction": prediction}
    payload["model"] |= model or {}
    if classes:
        payload["model"]["num_classes"] = len(classes)
        payload["labels"] = {
            "classes": classes, "source": "folders", "counts": dict.fromkeys(classes, 4), "label_dropout": 0.1
        }  # fmt: skip
    torch.manual_seed(1)
    unet = UNet(UNetConfig.from_dict(payload["model"]))
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    folder.mkdir(parents=True)
    write_run_config(folder, payload)
    save_ema_snapshot(folder, unet, nimg=4000, step=500, config=payload)
    return folder


def exported(run: Path, out: Path, **options: Any) -> Path:
    export(ExportConfig(run=run, out=out, reports_dir=out.parent / "no-reports", **options))
    return out


def diffusers_ddim(out: Path, n: int, label: int | None = None, guidance: float = 0.0) -> np.ndarray:
    """diffusers' UNet2DModel + DDIMScheduler from the export, on diffkit's start noise; float 0..255."""
    unet = diffusers.UNet2DModel.from_pretrained(out, subfolder="unet").eval()
    scheduler = diffusers.DDIMScheduler.from_pretrained(out, subfolder="scheduler")
    x = initial_noise(range(n), 3, unet.config.sample_size, SEED)
    scheduler.set_timesteps(STEPS)
    for t in scheduler.timesteps:
        with torch.no_grad():
            if label is None:
                output = unet(x, t).sample
            else:  # classifier-free guidance as the model card shows it
                labels = torch.tensor([label] * n + [unet.config.num_class_embeds - 1] * n)
                cond, uncond = unet(torch.cat([x, x]), t, class_labels=labels).sample.chunk(2)
                output = uncond + (1 + guidance) * (cond - uncond)
        x = scheduler.step(output, t, x, use_clipped_model_output=True).prev_sample
    return ((x.clamp(-1, 1) + 1) * 127.5).permute(0, 2, 3, 1).double().numpy()


def ours(run: Path, n: int, **options: Any) -> np.ndarray:
    images = generate_images(
        run, n, sampler="ddim", steps=STEPS, seed=SEED, device="cpu", precision="fp32", progress=False,
        **options,
    )  # fmt: skip
    return images.astype(np.float64)


# --- the network ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("classes", [None, ["cat", "dog", "owl"]], ids=["unconditional", "conditional"])
def test_exported_unet_computes_diffkits_forward(
    trained: Path, tmp_path: Path, classes: list[str] | None
) -> None:
    run = perturbed_run(trained, tmp_path / "run", schedule="cosine", prediction="v", classes=classes)
    out = exported(run, tmp_path / "out")
    model, _, _ = load_snapshot(run / "ema-000004.safetensors", torch.device("cpu"))
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    torch.manual_seed(2)
    x = torch.randn(4, 3, RES, RES)
    t = torch.tensor([999, 500, 17, 0])
    labels = torch.tensor([0, 2, 3, 1]) if classes else None  # 3: the null label
    with torch.no_grad():
        expected = model(x, t.float(), labels)
        got = unet(x, t, class_labels=labels).sample
    assert expected.std() > 0.3  # not the near-identity of zero-initialised output layers
    assert (got - expected).abs().max() < 1e-4


def test_the_small_preset_exports_exactly(trained: Path, tmp_path: Path) -> None:
    """The default preset: 16 groups and 48-channel heads (1 to 4 of them) in every layer, at 16 px."""
    small = preset_config("small", RES).to_dict()
    run = perturbed_run(trained, tmp_path / "run", schedule="cosine", prediction="v", model=small)
    out = exported(run, tmp_path / "out")
    model, _, _ = load_snapshot(run / "ema-000004.safetensors", torch.device("cpu"))
    assert model.config == preset_config("small", RES)
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet").eval()
    assert (unet.config.norm_num_groups, unet.config.attention_head_dim) == (16, 48)
    torch.manual_seed(2)
    x, t = torch.randn(2, 3, RES, RES), torch.tensor([900, 40])
    with torch.no_grad():
        expected = model(x, t.float())
        got = unet(x, t).sample
    assert expected.std() > 0.3
    assert (got - expected).abs().max() < 1e-4
    n = 2
    ddim_ours, ddim_theirs = ours(run, n), diffusers_ddim(out, n)
    assert np.abs(ddim_theirs - ddim_ours).max() <= TOLERANCE
    assert ddim_ours.std() > 10


def test_every_tensor_is_renamed_and_loaded_strictly(trained: Path, tmp_path: Path) -> None:
    out = exported(trained, tmp_path / "out")
    from safetensors.torch import load_file

    stored = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    reference = diffusers.UNet2DModel(**json.loads((out / "unet" / "config.json").read_text())).state_dict()
    assert stored.keys() == reference.keys()
    assert all(stored[name].shape == reference[name].shape for name in stored)
    model, _, _ = load_snapshot(trained / "ema-000000.safetensors", torch.device("cpu"))
    # the fused qkv became three tensors, everything else one to one: same number of weights
    assert sum(v.numel() for v in stored.values()) == sum(p.numel() for p in model.parameters())


# --- the scheduler and sampling -------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_scheduler_has_diffkits_betas_timesteps_and_prediction(
    trained: Path, tmp_path: Path, schedule: str
) -> None:
    prediction = "v" if schedule == "cosine" else "eps"
    run = perturbed_run(trained, tmp_path / "run", schedule=schedule, prediction=prediction)
    out = exported(run, tmp_path / "out")
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["beta_schedule"] == {"cosine": "squaredcos_cap_v2", "linear": "linear"}[schedule]
    assert (config["trained_betas"] is None) == (schedule == "cosine")  # cosine needs no table
    scheduler = diffusers.DDIMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.config.prediction_type == {"v": "v_prediction", "eps": "epsilon"}[prediction]
    ours_betas = make_schedule(schedule, 1000).betas
    assert torch.equal(scheduler.betas, ours_betas.float())  # bit for bit in diffusers' float32
    scheduler.set_timesteps(STEPS)
    assert scheduler.timesteps.tolist() == trailing_timesteps(1000, STEPS).tolist()


def test_diffusers_pipeline_gives_the_images_of_diffkit_sample_cli(trained: Path, tmp_path: Path) -> None:
    """cosine + v, trained: `diffkit sample --sampler ddim --steps 20` PNGs vs DDIMPipeline, same noise."""
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(app, ["export", str(trained), str(out), "--format", "diffusers"])
    assert result.exit_code == 0, result.output
    n = 3
    args = [
        "sample", "--run", str(trained), "--sampler", "ddim", "--steps", str(STEPS), "--n", str(n),
        "--seed", str(SEED), "--out", str(tmp_path / "png"), "--device", "cpu", "--precision", "fp32",
        "--report", str(tmp_path / "sample.html"), "--no-progress",
    ]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    pngs = np.stack([np.asarray(Image.open(tmp_path / "png" / f"{i:06d}.png")) for i in range(n)])

    pipe = diffusers.DDIMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(SEED * _SEED_STRIDE + i) for i in range(n)]  # diffkit's
    images = pipe(
        batch_size=n, generator=generators, num_inference_steps=STEPS, use_clipped_model_output=True,
        output_type="np",
    ).images  # fmt: skip
    difference = np.abs(images * 255 - pngs).max()
    assert difference <= TOLERANCE, difference
    assert pngs.std() > 10  # real images, not one flat value


@pytest.mark.parametrize(
    ("schedule", "prediction", "classes"),
    [("linear", "eps", None), ("cosine", "v", ["cat", "dog", "owl"])],
    ids=["linear-eps", "cosine-v-guided"],
)
def test_diffusers_ddim_gives_the_images_of_diffkit_ddim(
    trained: Path, tmp_path: Path, schedule: str, prediction: str, classes: list[str] | None
) -> None:
    run = perturbed_run(trained, tmp_path / "run", schedule=schedule, prediction=prediction, classes=classes)
    out = exported(run, tmp_path / "out")
    n = 3
    if classes is None:
        expected, got = ours(run, n), diffusers_ddim(out, n)
    else:
        expected = ours(run, n, label="dog", guidance=1.5)
        got = diffusers_ddim(out, n, label=1, guidance=1.5)
    difference = np.abs(got - expected).max()
    assert difference <= TOLERANCE, difference
    assert expected.std() > 10


# --- the model card -------------------------------------------------------------------------------------


def test_model_card_names_data_config_length_and_no_unmeasured_metric(trained: Path, tmp_path: Path) -> None:
    card = (exported(trained, tmp_path / "out") / "README.md").read_text()
    assert card.startswith("---\nlicense: unknown\nlibrary_name: diffusers\n")
    assert "- folder: `solid`" in card and "- images: 8, at 16 px" in card
    assert "| preset | tiny |" in card and '| diffusion.schedule | "cosine" |' in card
    assert "| parameters | 3,392,643 |" in card
    assert "0.24 kimg (240 images, step 30) of the 0.24 kimg planned" in card
    assert "- finished: yes, all 0.24 kimg planned" in card
    assert "30 passes over the 8 training images" in card
    assert "claims no metric" in card and "FID@" not in card
    assert str(trained.parent) not in card  # the data's full path stays on the training machine


def test_model_card_quotes_metrics_with_their_caveats(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    record = {
        "kind": "eval", "step": 30, "kimg": 0.24, "fid": 321.5, "kid": 0.25, "kid_std": 0.01, "n": 16,
        "n_reference": 8, "headline": "FID@16 321.5 (reference 8, clean-fid, official weights)",
        "kid_subset_size": 8, "sampler": "ddim", "sampler_steps": 25,
    }  # fmt: skip
    with (run / "stats.jsonl").open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    sidecar = {
        "schema": "diffkit.report/1", "command": "eval", "created": "2025-01-01T00:00:00",
        "data": {
            "config": {"run": str(run)},
            "fid_headline": "FID@50 99.5 (reference 8, torch-fidelity, unofficial weights)",
            "kid_mean": 0.125, "kid_std": 0.5, "n_generated": 50,
            "caveats": ["Only *50* samples <b>here</b>."],
        },
    }  # fmt: skip
    (reports / "eval-x.json").write_text(json.dumps(sidecar))
    (reports / "eval-x.html").write_text("<html></html>")
    other = json.loads(json.dumps(sidecar))
    other["data"]["config"]["run"] = str(tmp_path / "another-run")
    other["data"]["fid_headline"] = "FID@50 1.0 (another run)"
    (reports / "eval-y.json").write_text(json.dumps(other | {"created": "2025-02-01T00:00:00"}))
    (reports / "eval-y.html").write_text("<html></html>")

    result = export(ExportConfig(run=run, out=tmp_path / "out", reports_dir=reports))
    card = (tmp_path / "out" / "README.md").read_text()
    assert result.metrics_report == reports / "eval-x.json"
    assert "FID@16 321.5 \\(reference 8, clean-fid, official weights\\)" in card  # while training
    assert "KID@16: 0.25 ± 0.01" in card
    assert card.count("Caveats:") == 2  # the training metrics' (from metrics.caveats) and the report's
    assert "- FID is FID@16 \\(reference 8\\)" in card
    assert "FID@50 99.5" in card and "KID@50: 0.125 ± 0.5" in card  # the eval report of this run
    assert "Only \\*50\\* samples \\<b\\>here\\</b\\>." in card  # its caveat, as literal text
    assert "another run" not in card and "claims no metric" not in card


# --- errors ---------------------------------------------------------------------------------------------


def test_errors_are_one_line(trained: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["export", str(tmp_path / "nope"), str(tmp_path / "out")])
    assert missing.exit_code == 2 and "run folder" in missing.output and "not found" in missing.output
    unknown = runner.invoke(app, ["export", str(trained), str(tmp_path / "out"), "--format", "onnx"])
    assert unknown.exit_code == 2 and "onnx" in unknown.output
    with pytest.raises(DiffkitError, match="unknown export format 'onnx'"):
        ExportConfig(run=trained, out=tmp_path / "out", format="onnx")
    assert not (tmp_path / "out").exists()


def test_a_non_empty_out_is_refused_unless_forced(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "unet").mkdir(parents=True)
    (out / "unet" / "stale.bin").write_bytes(b"old")
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["export", str(trained), str(out)])
    assert result.exit_code == 2 and "not empty" in result.output and "--force" in result.output
    assert sorted(p.name for p in out.rglob("*")) == ["notes.txt", "stale.bin", "unet"]

    # --force replaces only what an export wrote: a unet/ holding a file of the user's is refused.
    result = CliRunner().invoke(app, ["export", str(trained), str(out), "--force"])
    assert result.exit_code == 2 and "holds what the export does not write (stale.bin)" in result.output
    assert sorted(p.name for p in out.rglob("*")) == ["notes.txt", "stale.bin", "unet"]

    (out / "unet" / "stale.bin").unlink()
    result = CliRunner().invoke(app, ["export", str(trained), str(out), "--force", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["files"] == [
        "model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "README.md", "samples.png",
    ]  # fmt: skip
    assert (out / "notes.txt").read_text() == "mine"  # what the export does not write stays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    diffusers.DDIMPipeline.from_pretrained(out)


def test_an_empty_out_folder_is_used(trained: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    exported(trained, tmp_path / "out")
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_a_small_run_from_before_norm_groups_is_refused(trained: Path, tmp_path: Path) -> None:
    """Its config.json has no norm_groups and head_dim 64: 16 and 32 groups, heads of 48 to 96 channels."""
    run = perturbed_run(trained, tmp_path / "run", schedule="cosine", prediction="v", model=OLD_SMALL16)
    assert "norm_groups" not in read_run_config(run)["model"]
    with pytest.raises(DiffkitError) as error:
        exported(run, tmp_path / "out")
    message = str(error.value)
    assert "GroupNorm layers use 16, 32 groups" in message
    assert "attention heads have 48, 64, 72, 96 channels" in message
    assert "train it again" in message and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_every_preset_exports_at_every_resolution() -> None:
    """One group count and head size per preset (tests/test_models.py); older configs are refused."""
    from diffkit.export.mapping import unet_config, unsupported_reasons
    from diffkit.models.config import PRESETS

    for name in PRESETS:
        for resolution in (8, 16, 32, 64):
            if (name, resolution) != ("tiny", 8):  # a test-only size: refused below
                assert unsupported_reasons(preset_config(name, resolution)) == [], (name, resolution)
    small = unet_config(preset_config("small", 32))
    assert (small["norm_num_groups"], small["attn_norm_num_groups"], small["attention_head_dim"]) == (
        16,
        16,
        48,
    )
    assert len(unsupported_reasons(UNetConfig.from_dict(OLD_SMALL16))) == 2
    tiny8 = preset_config("tiny", 8)  # one 32-channel head beside 64s
    assert [r.split(" (")[0] for r in unsupported_reasons(tiny8)] == [
        "its attention heads have 32, 64 channels at different levels"
    ]
