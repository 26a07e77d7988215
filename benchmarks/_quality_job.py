"""One job of ``bench_quality.py``, run in its own process with one thread: train, sample, featurise.

A ``train`` job times a few pilot steps of its contender, trains for the step count that fills its time
budget at that speed (so the recipe's cosine schedule can be planned for it), draws the shared-noise DDIM
samples from the EMA weights and writes their features in both spaces. A ``features`` job only writes
the features of given image arrays (the reference set and the floor sets).

    .venv/bin/python -m benchmarks.bench_quality --job SPEC.json    (bench_quality starts these itself)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffkit.metrics.features import Extractor, build_inception
from diffkit.metrics.weights import ResolvedWeights, file_sha256
from diffkit.models.config import preset_config
from diffkit.models.stats import count_parameters
from diffkit.runs.folder import read_stats
from diffkit.sample.generate import generate, initial_noise
from diffkit.train.cache import load_image_dataset
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

RESOLUTION = 32
SAMPLE_STEPS = 50
SAMPLE_BATCH = 64
PILOT_WARMUP = 2  # pilot steps left out of the speed estimate (allocator and kernel warm-up)
# A post-hoc EMA lever stores its two profiles this many times over the run. On tests/test_phema.py's
# trajectory, 8 x 2 stored profiles rebuild sigma_rel 0.07 with a profile error of 1.3 % (L2) and weights
# within 0.6 % of the gap between the 0.05 and 0.10 EMAs (20 profiles: 0.9 % and 0.25 %).
PHEMA_STORES = 8
POSTHOC_DIR = "posthoc"  # <job>/posthoc/<sigma_rel>/: samples and features of each rebuilt EMA
POOL = 8  # pixel space: 8x8 average-pooled RGB


def pooled_pixels(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 -> 8x8 average-pooled pixels in [0, 1], 192 per image (float64)."""
    x = images.astype(np.float64) / 255.0
    n, h, w, c = x.shape
    return x.reshape(n, POOL, h // POOL, POOL, w // POOL, c).mean(axis=(2, 4)).reshape(n, -1)


def inception_extractor(weights: Path) -> Extractor:
    path = Path(weights)
    resolved = ResolvedWeights(path, file_sha256(path), "option", official=False)
    return build_inception("torch-fidelity", resolved, torch.device("cpu"))


def inception_pool(extractor: Extractor, images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([extractor(images[i : i + batch])["2048"] for i in range(0, len(images), batch)])


def write_features(path: Path, images: np.ndarray, extractor: Extractor) -> dict[str, float]:
    started = time.perf_counter()
    pixels = pooled_pixels(images)
    inception = inception_pool(extractor, images)
    np.savez(path, pixels=pixels, inception=inception)
    return {"features_s": round(time.perf_counter() - started, 2)}


def shared_noise(n: int, seed: int) -> torch.Tensor:
    """Image i's starting noise, exactly as ``diffkit sample`` draws it: the same for every contender."""
    return initial_noise(range(n), 3, RESOLUTION, seed)


def _steps_for(budget_s: float, step_s: float) -> int:
    return max(1, round(budget_s / step_s))


# ------------------------------------------------------------------------------------------- diffkit


def _diffkit_config(spec: dict[str, Any], out: Path, steps: int) -> TrainConfig:
    """diffkit's defaults except the data, the tiny preset at 32 px, CPU, the length and the seed.

    The in-run sample grid is cut to one 1-step image and the HTML report is off: they cost time
    outside the timed steps and do not touch training. Lever jobs add their one override.
    """
    options: dict[str, Any] = {
        "data": Path(spec["train_dir"]), "out": out, "preset": "tiny", "resolution": RESOLUTION,
        "steps": steps, "seed": spec["seed"], "device": "cpu", "progress": False, "report": False,
        "sample_every_kimg": 0.0, "sample_grid": 1, "sample_steps": 1,
    }  # fmt: skip
    overrides = dict(spec.get("overrides") or {})
    overrides.pop("preset_shape", None)  # not a TrainConfig field: applied by _train_diffkit
    posthoc = overrides.pop("posthoc_sigma_rels", None)
    config = TrainConfig(**(options | overrides))
    if posthoc:  # the post-hoc EMA lever: store the profiles PHEMA_STORES times over the run
        every = steps * config.resolved_batch_size / 1000 / PHEMA_STORES
        config = dataclasses.replace(config, phema_every_kimg=every)
    return config


@contextlib.contextmanager
def preset_shape(preset: str, shape: dict[str, Any] | None) -> Iterator[None]:
    """Within the block, the named preset has ``shape``'s fields (a U-Net shape that is no preset any
    more, such as ``small`` before its alignment); restored afterwards. The run's config.json records the
    network it trained, so sampling rebuilds it without the patch."""
    from diffkit.models.config import PRESETS

    original = PRESETS[preset]
    if shape:
        PRESETS[preset] = dataclasses.replace(original, **shape)
    try:
        yield
    finally:
        PRESETS[preset] = original


def _train_diffkit(spec: dict[str, Any], work: Path) -> tuple[dict[str, Any], np.ndarray]:
    overrides = spec.get("overrides") or {}
    with preset_shape(overrides.get("preset", "tiny"), overrides.get("preset_shape")):
        return _train_and_sample(spec, work)


def _train_and_sample(spec: dict[str, Any], work: Path) -> tuple[dict[str, Any], np.ndarray]:
    pilot_dir = work / "pilot"
    shutil.rmtree(pilot_dir, ignore_errors=True)
    pilot = train(_diffkit_config(spec, pilot_dir, spec["pilot_steps"]))
    # With fewer than 20 steps, stats.jsonl has one line per step: per-step images/s.
    records = read_stats(pilot_dir / "stats.jsonl")[PILOT_WARMUP:]
    batch = _diffkit_config(spec, pilot_dir, 1).resolved_batch_size
    step_s = statistics.median(batch / r["img_per_s"] for r in records)
    shutil.rmtree(pilot_dir, ignore_errors=True)
    steps = _steps_for(spec["budget_s"], step_s)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    config = _diffkit_config(spec, run_dir, steps)
    result = train(config)
    model = json.loads((run_dir / "config.json").read_text())["model"]
    started = time.perf_counter()
    images = generate(
        run_dir, spec["n_samples"], sampler="ddim", steps=SAMPLE_STEPS, seed=spec["sample_seed"],
        batch_size=SAMPLE_BATCH, device="cpu", precision="fp32", progress=False,
    ).images  # fmt: skip
    sample_s = time.perf_counter() - started
    info = {
        "precision": result.precision, "pilot_step_s": round(step_s, 4), "steps": result.step,
        "batch_size": config.resolved_batch_size, "images_seen": round(result.kimg * 1000),
        "train_seconds": round(result.train_seconds, 2), "final_loss": result.final_loss,
        "params": result.params, "flops_forward_per_image": result.flops_per_image,
        "sample_s": round(sample_s, 2), "pilot_train_seconds": round(pilot.train_seconds, 2),
        "config": {k: v for k, v in config.to_dict().items() if k in _REPORTED_FIELDS},
        # the network that trained (config.json's): GroupNorm groups (absent: gcd(32, width)), head size
        "model": {k: model.get(k) for k in ("channels", "num_res_blocks", "head_dim", "norm_groups")},
    }  # fmt: skip
    for sigma_rel in (spec.get("overrides") or {}).get("posthoc_sigma_rels", []):
        _posthoc_samples(spec, run_dir, work / POSTHOC_DIR / f"{sigma_rel:.3f}", sigma_rel)
    shutil.rmtree(run_dir, ignore_errors=True)  # the samples and numbers are kept, not the weights
    return info, images


def _posthoc_samples(spec: dict[str, Any], run_dir: Path, out: Path, sigma_rel: float) -> None:
    """The run's EMA of ``sigma_rel`` rebuilt from its stored profiles (``diffkit phema``), then sampled
    with the same noise as every other job; features are added by :func:`run_job`."""
    from diffkit.train.phema import PhemaConfig, posthoc_snapshot

    out.mkdir(parents=True, exist_ok=True)
    rebuilt = posthoc_snapshot(PhemaConfig(run_dir, sigma_rel))
    started = time.perf_counter()
    images = generate(
        run_dir, spec["n_samples"], sampler="ddim", steps=SAMPLE_STEPS, seed=spec["sample_seed"],
        batch_size=SAMPLE_BATCH, device="cpu", precision="fp32", progress=False, snapshot=rebuilt.snapshot,
    ).images  # fmt: skip
    np.save(out / "samples.npy", images)
    info = {
        "posthoc_sigma_rel": sigma_rel, "posthoc_fit_error": round(rebuilt.relative_error, 5),
        "posthoc_profiles": len(rebuilt.sources), "sample_s": round(time.perf_counter() - started, 2),
    }  # fmt: skip
    (out / "posthoc.json").write_text(json.dumps(info, indent=1))


_REPORTED_FIELDS = (
    "preset", "batch_size", "lr", "warmup_kimg", "weight_decay", "adam_beta1", "adam_beta2", "grad_clip",
    "ema_halflife_kimg", "ema_rampup", "schedule", "prediction", "min_snr_gamma", "timesteps", "hflip",
    "precision", "dropout", "channels", "num_res_blocks", "phema_every_kimg",
)  # fmt: skip


# -------------------------------------------------------------------------------------------- recipe


def _train_recipe(spec: dict[str, Any], images: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    from benchmarks._quality_recipe import DEFAULTS, RecipeTrainer, ddim_sample
    from benchmarks.twins import counted_flops

    config = preset_config("tiny", RESOLUTION)
    bf16 = spec["contender"] == "recipe-bf16"
    pilot = RecipeTrainer(images, config, spec["pilot_steps"], spec["seed"] + 7919, bf16)
    times = []
    for _ in range(spec["pilot_steps"]):
        started = time.perf_counter()
        pilot.step()
        times.append(time.perf_counter() - started)
    step_s = statistics.median(times[PILOT_WARMUP:])
    del pilot
    steps = _steps_for(spec["budget_s"], step_s)
    trainer = RecipeTrainer(images, config, steps, spec["seed"], bf16)
    train_seconds, losses = 0.0, []
    for _ in range(steps):  # timed like diffkit's train_seconds: the batch, the step and the EMA update
        started = time.perf_counter()
        losses.append(trainer.step())
        train_seconds += time.perf_counter() - started
    model = trainer.ema_model()
    started = time.perf_counter()
    noise = shared_noise(spec["n_samples"], spec["sample_seed"])
    samples, _ = ddim_sample(model, trainer.noise_scheduler.config, noise, SAMPLE_STEPS, SAMPLE_BATCH)
    sample_s = time.perf_counter() - started
    info = {
        "precision": "bf16" if bf16 else "fp32", "pilot_step_s": round(step_s, 4), "steps": steps,
        "batch_size": DEFAULTS.batch_size, "images_seen": steps * DEFAULTS.batch_size,
        "train_seconds": round(train_seconds, 2), "final_loss": float(np.mean(losses[-50:])),
        "params": count_parameters(model), "flops_forward_per_image": counted_flops(model, RESOLUTION),
        "sample_s": round(sample_s, 2), "final_lr": trainer.lr_scheduler.get_last_lr()[0],
        "ema_decay_final": trainer.ema.cur_decay_value,
    }  # fmt: skip
    return info, samples


# ----------------------------------------------------------------------------------------------- job


def run_job(spec_path: Path) -> None:
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    spec = json.loads(Path(spec_path).read_text())
    work = Path(spec["out"])
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    started = time.perf_counter()
    if spec["kind"] == "features":
        extractor = inception_extractor(Path(spec["weights"]))
        info: dict[str, Any] = {}
        for name, path in spec["sets"].items():
            info[name] = write_features(work / f"{name}-features.npz", np.load(path), extractor)
    else:
        if spec["contender"] == "diffkit":
            info, samples = _train_diffkit(spec, work)
        else:
            images = np.asarray(
                load_image_dataset(Path(spec["train_dir"]), RESOLUTION, progress=False).images
            )
            info, samples = _train_recipe(spec, images)
        np.save(work / "samples.npy", samples)
        extractor = inception_extractor(Path(spec["weights"]))
        info |= write_features(work / "features.npz", samples, extractor)
        for folder in sorted((work / POSTHOC_DIR).glob("*")):
            write_features(folder / "features.npz", np.load(folder / "samples.npy"), extractor)
        info["params"] = int(info["params"])
        info["train_pflops"] = round(3 * info["flops_forward_per_image"] * info["images_seen"] / 1e15, 4)
    info |= {
        "job_s": round(time.perf_counter() - started, 1),
        "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
    }
    (work / "result.json").write_text(json.dumps(info, indent=1))
