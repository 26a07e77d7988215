"""One job of ``bench_quality.py``, run in its own process with one thread: train, sample, featurise.

A ``train`` job trains its contender until its budget of process CPU seconds (user + system: for a
one-thread job, the compute it spent, whatever else shares the machine) is used up, checked after every
step, and records the CPU seconds and steps it actually trained. The peers' loops ask ``CpuClock``;
diffkit's own loop asks its ``TrainConfig.max_cpu_seconds`` budget (``diffkit.train.budget``, the same
``time.process_time`` clock), so diffkit trains through its public option, unpatched. A few pilot
steps, timed on the same clock, only plan what needs a length up front (the recipe's cosine schedule,
the post-hoc EMA's store interval). It then draws the shared-noise DDIM samples from the EMA weights
and writes their features in both spaces. A ``features`` job only writes
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
from diffkit.train.budget import CPU
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


class CpuClock:
    """Process CPU seconds since it was started: the measured budget every contender trains under."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.started = time.process_time()

    def elapsed(self) -> float:
        return time.process_time() - self.started

    def expired(self) -> bool:
        return self.elapsed() >= self.budget_s


# A safety cap on a clocked run's steps, as a multiple of the pilot's prediction: the clock ends the run.
STEP_CAP_FACTOR = 10


def _pilot_step_cpu_s(step: Any, pilot_steps: int) -> float:
    """Median process CPU seconds of ``step()`` after the first ``PILOT_WARMUP`` calls."""
    times = []
    for _ in range(pilot_steps):
        started = time.process_time()
        step()
        times.append(time.process_time() - started)
    return statistics.median(times[PILOT_WARMUP:] or times)


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


def trained_cpu_seconds(result: Any, whole_call_cpu_s: float) -> tuple[float, bool]:
    """The CPU seconds diffkit's loop trained, and whether its ``max_cpu_seconds`` budget stopped it.

    A budget stop records the loop's own CPU clock at the stop (``TimeBudget.record``: the steps since
    the session's first, before the final save). Should the step cap end the run first, the loop records
    nothing, so the CPU seconds of the whole ``train()`` call stand in (an upper bound: data loading and
    the final save included).
    """
    stop = result.budget_stop
    if stop is not None and stop["reason"] == CPU:
        return float(stop["cpu_seconds"]), True
    return whole_call_cpu_s, False


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
    step_s = statistics.median(batch / r["img_per_s"] for r in records)  # wall: only sizes the cap
    shutil.rmtree(pilot_dir, ignore_errors=True)
    steps = _steps_for(spec["budget_s"], step_s)
    run_dir = work / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    # the post-hoc EMA's store interval is planned for the predicted steps; the run stops on the clock
    config = dataclasses.replace(
        _diffkit_config(spec, run_dir, steps), steps=steps * STEP_CAP_FACTOR, max_cpu_seconds=spec["budget_s"]
    )
    started_cpu = time.process_time()
    result = train(config)
    train_cpu_s, stopped_by_clock = trained_cpu_seconds(result, time.process_time() - started_cpu)
    model = json.loads((run_dir / "config.json").read_text())["model"]
    started = time.perf_counter()
    images = generate(
        run_dir, spec["n_samples"], sampler="ddim", steps=SAMPLE_STEPS, seed=spec["sample_seed"],
        batch_size=SAMPLE_BATCH, device="cpu", precision="fp32", progress=False,
    ).images  # fmt: skip
    sample_s = time.perf_counter() - started
    info = {
        "precision": result.precision, "pilot_step_s": round(step_s, 4), "steps": result.step,
        "train_cpu_s": round(train_cpu_s, 2), "stopped_by_clock": stopped_by_clock,
        "predicted_steps": steps,
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
    from diffkit.phema.config import PhemaConfig
    from diffkit.phema.run import posthoc_snapshot

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
    "precision", "dropout", "channels", "num_res_blocks", "phema_every_kimg", "max_cpu_seconds",
)  # fmt: skip


# -------------------------------------------------------------------------------------------- recipe


def clocked_steps(step: Any, budget_s: float, max_steps: int) -> tuple[list[float], float]:
    """``step()`` until ``budget_s`` process CPU seconds are used (checked after each step) or
    ``max_steps``: the losses and the CPU seconds actually trained."""
    clock, losses = CpuClock(budget_s), []
    while not clock.expired() and len(losses) < max_steps:
        losses.append(step())
    return losses, clock.elapsed()


def _train_recipe(spec: dict[str, Any], images: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    from benchmarks._quality_recipe import SHIPPED, RecipeSetting, RecipeTrainer, ddim_sample
    from benchmarks.twins import counted_flops

    config = preset_config("tiny", RESOLUTION)
    bf16 = spec["contender"] == "recipe-bf16"
    setting = RecipeSetting(**spec["setting"]) if spec.get("setting") else SHIPPED
    pilot = RecipeTrainer(images, config, spec["pilot_steps"], spec["seed"] + 7919, bf16, setting)
    step_s = _pilot_step_cpu_s(pilot.step, spec["pilot_steps"])
    del pilot
    # the cosine schedule is planned for the predicted steps (a user sizing --num_epochs to the budget);
    # past them its LR would rise again, so the plan also caps the run
    steps = _steps_for(spec["budget_s"], step_s)
    trainer = RecipeTrainer(images, config, steps, spec["seed"], bf16, setting)
    losses, train_cpu_s = clocked_steps(trainer.step, spec["budget_s"], steps)
    model = trainer.ema_model()
    started = time.perf_counter()
    noise = shared_noise(spec["n_samples"], spec["sample_seed"])
    samples, _ = ddim_sample(model, trainer.noise_scheduler.config, noise, SAMPLE_STEPS, SAMPLE_BATCH)
    info = {
        "precision": "bf16" if bf16 else "fp32", "pilot_step_s": round(step_s, 4), "steps": len(losses),
        "predicted_steps": steps, "batch_size": setting.batch_size, "lr": setting.lr,
        "warmup_steps": setting.warmup_steps(steps), "setting": setting.name,
        "images_seen": _images_seen(len(losses), setting.batch_size, len(images)),
        "train_seconds": round(train_cpu_s, 2), "train_cpu_s": round(train_cpu_s, 2),
        "stopped_by_clock": train_cpu_s >= spec["budget_s"], "final_loss": float(np.mean(losses[-50:])),
        "params": count_parameters(model), "flops_forward_per_image": counted_flops(model, RESOLUTION),
        "sample_s": round(time.perf_counter() - started, 2),
        "final_lr": trainer.lr_scheduler.get_last_lr()[0], "ema_decay_final": trainer.ema.cur_decay_value,
    }  # fmt: skip
    return info, samples


def _images_seen(steps: int, batch: int, dataset: int) -> int:
    """Images a shuffled loader with a short last batch per epoch hands out in ``steps`` batches."""
    per_epoch = -(-dataset // batch)  # batches per epoch, the last one short
    epochs, rest = divmod(steps, per_epoch)
    return epochs * dataset + min(rest * batch, dataset)


def _train_ddpm(spec: dict[str, Any], images: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """lucidrains' denoising-diffusion-pytorch: no LR schedule, so nothing to plan; the clock stops it."""
    from benchmarks._quality_ddpm import SHIPPED, DdpmSetting, DdpmTrainer, ddim_sample, forward_flops

    setting = DdpmSetting(**spec["setting"]) if spec.get("setting") else SHIPPED
    trainer = DdpmTrainer(images, spec["seed"], setting, SAMPLE_STEPS)
    losses, train_cpu_s = clocked_steps(trainer.step, spec["budget_s"], 10**9)
    diffusion = trainer.ema_diffusion()
    started = time.perf_counter()
    samples, _ = ddim_sample(diffusion, shared_noise(spec["n_samples"], spec["sample_seed"]), SAMPLE_BATCH)
    info = {
        "precision": "fp32", "steps": len(losses), "batch_size": setting.batch_size, "lr": setting.lr,
        "ema_decay": setting.ema_decay, "setting": setting.name,
        "images_seen": len(losses) * setting.batch_size,  # cycle(DataLoader): always full batches here
        "train_seconds": round(train_cpu_s, 2), "train_cpu_s": round(train_cpu_s, 2),
        "stopped_by_clock": True, "final_loss": float(np.mean(losses[-50:])),
        # every weight: the EMA copy holds no trainable ones, which count_parameters would skip
        "params": sum(p.numel() for p in diffusion.model.parameters()),
        "flops_forward_per_image": forward_flops(diffusion),
        "sample_s": round(time.perf_counter() - started, 2),
    }  # fmt: skip
    return info, samples


# ----------------------------------------------------------------------------------------------- job


def run_job(spec_path: Path) -> None:
    torch.set_num_threads(1)
    if torch.get_num_interop_threads() != 1:  # settable once per process (a test may run two jobs)
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
            trainer = _train_ddpm if spec["contender"].startswith("ddpm") else _train_recipe
            info, samples = trainer(spec, images)
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
