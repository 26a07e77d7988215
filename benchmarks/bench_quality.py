"""Image quality per unit of compute: diffkit's trainer against diffusers' ``train_unconditional.py`` recipe.

Contenders, each at two time budgets (B and 3B seconds of training steps) and two or more seeds:

- ``diffkit``: ``diffkit train`` at its defaults (tiny preset at 32 px; precision ``auto`` = bf16 on a
  CPU with native bf16), through :func:`diffkit.train.train`;
- ``recipe-fp32``: a faithful re-implementation of the diffusers example at its defaults
  (``benchmarks/_quality_recipe.py``) on a ``UNet2DModel`` with the tiny preset's shape;
- ``recipe-tuned``: the recipe's best setting from ``--peer-sweep recipe``, with its ``--mixed_precision
  bf16`` (diffkit trains in bf16 here too; the sweep ran fp32);
- ``ddpm`` / ``ddpm-tuned``: lucidrains' ``denoising-diffusion-pytorch`` at its Trainer's defaults, at
  matched parameters (``benchmarks/_quality_ddpm.py``), and at its best setting from ``--peer-sweep ddpm``
  (fp32, its Trainer's default ``amp=False``; its bf16 was not measured);
- on request (``--contenders``): ``recipe-bf16``, the recipe as shipped with ``--mixed_precision bf16``,
  and ``recipe-scaled``, with a warm-up of 10% of its planned steps (the peer protocol: a short budget gets
  a short warm-up; the recipe's sweep trains it as ``b16_lr0.0001_wu0.1``, so the comparison leaves it out).

Equal compute, measured: every job trains until it has spent its budget of process CPU seconds (one
thread, so the compute it used whatever else ran), checked after every step, and reports the CPU seconds
and steps it actually trained; pilot steps only plan what needs a length up front. Jobs run two at a
time, one thread each, each in its own process; within a round of budget and
seed the contenders' order alternates. All jobs see the same training images, the same held-out
reference and the same sample noise (image i of every contender starts from the same noise).

Quality: N samples per job, DDIM with 50 steps and eta 0, in fp32 for every contender, each with its own
sampler (diffkit's ``generate``; ``DDIMScheduler`` from the recipe's scheduler config). Fréchet distance
(FD) and KID against R held-out faces in two fixed, offline feature spaces:

1. ``inception``: pool3 (2048-d) of torch-fidelity's InceptionV3 with random Kaiming weights whose
   BatchNorm statistics are calibrated on a fixed batch of training images (``diffkit.testing.inception``,
   seed 0). It is the standard FID network and resize with weights that need no download, deep enough to
   react to shapes and textures; it is NOT the official network, so the values do not compare with
   published FIDs, only with each other.
2. ``pixels``: the images 8x8 average-pooled (192-d): no network at all, so nothing about it can be
   miscalibrated; it sees colour and layout, and N is above its dimension (a full-rank covariance).

The floor: N training images (which every model tries to reproduce) against the same reference, in the
same spaces with the same N, which is as close as a perfect model could get at this N.

    .venv/bin/python -m benchmarks.bench_quality                  # the comparison (~92 min, idle 2 cores)
    .venv/bin/python -m benchmarks.bench_quality --levers         # every lever, one at a time (hours: --plan)
    # the second committed lever run (~80 min):
    .venv/bin/python -m benchmarks.bench_quality --levers --budget 120 \
        --lever-names prediction_edm depth_2 width_40 phema --report-name bench_quality_levers_2
    # the third (~45 min): batch 32 at the default lr, and the defaults when the issue was filed (lr 2e-4)
    .venv/bin/python -m benchmarks.bench_quality --levers --budget 120 \
        --lever-names batch_32 lr_2e-4 --report-name bench_quality_levers_3
    # the small preset aligned with UNet2DModel against its old shape (~55 min)
    .venv/bin/python -m benchmarks.bench_quality --levers --budget 180 --baseline preset_small \
        --lever-names small_unaligned --report-name bench_quality_small_aligned
    # the peers' tuning sweeps (12 settings each, as many as diffkit's lever runs trained), as committed: at
    # B only, one seed, 128 samples per setting (26 and 35 min; both budgets and seeds: ~3 h each); the
    # comparison then reads each sweep's best setting from its report
    .venv/bin/python -m benchmarks.bench_quality --peer-sweep recipe --one-budget --seeds 0 --n-samples 128
    .venv/bin/python -m benchmarks.bench_quality --peer-sweep ddpm --one-budget --seeds 0 --n-samples 128
    .venv/bin/python -m benchmarks.bench_quality --plan           # the jobs and the wall-time estimate
    .venv/bin/python -m benchmarks.bench_quality --budget 10 --n-samples 32 --report-dir /tmp/q   # smoke
    .venv/bin/python -m benchmarks.bench_quality --self-test      # checks of the harness (seconds)

Sizing: 20 training jobs (5 contenders x 2 budgets x 2 seeds) plus 2 feature jobs on 2 slots. A job costs
its budget + N x (0.42 s DDIM-50 sampling, 3.5 times that for lucidrains' network, + 0.21 s Inception) +
~25 s of start-up and pilot steps (per-image costs measured in the committed run, two one-thread jobs on
two cores); the defaults (B = 120 s, N = 256, R = 1,000) give ~93 min when the queue is packed greedily
(the committed run took 92), which ``--plan`` prints before anything runs. A run interrupted in a
``--work-dir`` picks up there: finished jobs are kept.

Needs diffusers (the ``bench`` extra). Results: ``reports/bench_quality.{html,json}`` (levers:
``reports/bench_quality_levers.{html,json}``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.readings import quality as quality_reading
from benchmarks.readings.figures import plain, trace
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.fid import frechet_distance
from diffkit.metrics.kid import kernel_distance
from diffkit.report.grid import make_grid
from diffkit.report.model import Report, ReportImage, Section
from diffkit.report.render import write_report
from diffkit.train.cache import load_image_dataset

# The recipe as shipped (fp32, bf16), with the warm-up its budget calls for ("recipe-scaled"), and
# lucidrains' denoising-diffusion-pytorch at its Trainer's defaults ("ddpm"); "recipe-tuned" and
# "ddpm-tuned" join when a setting is known (--recipe-setting / --ddpm-setting, or the peer sweep's report).
CONTENDERS = ("diffkit", "recipe-fp32", "ddpm")
OPTIONAL_CONTENDERS = ("recipe-bf16", "recipe-scaled")
PEERS = ("recipe", "ddpm")  # --peer-sweep: the peer whose settings are swept
SWEEP_REPORT = "bench_quality_sweep_{peer}"  # the sweep's report name; the tuned contender reads its best
SPACES = ("inception", "pixels")
TRAIN_SEED, REFERENCE_SEED = 0, 99  # face i of a folder depends on (seed, i): disjoint sets
CALIBRATION_IMAGES = 64  # training images that calibrate the Inception BatchNorm statistics
# Grids are embedded as PNG in a committed report: 4 rows of 8 (2 for each lever) keep it near 1 MB.
GRID_COLUMNS, GRID_ROWS, LEVER_GRID_ROWS = 8, 4, 2
# diffkit's TrainConfig fields only, one change from the defaults each (no library changes).
LEVERS: dict[str, dict[str, Any]] = {
    # the tiny preset's default is 4e-4 (kept from the committed lever run, where 2e-4 was the default)
    "lr_1e-4": {"lr": 1e-4},
    "lr_2e-4": {"lr": 2e-4},
    "lr_8e-4": {"lr": 8e-4},
    "warmup_0.5kimg": {"warmup_kimg": 0.5},
    "warmup_8kimg": {"warmup_kimg": 8.0},
    # EMA length: at these budgets (tens of kimg) the half-life is rampup x images seen, far below the
    # 50 kimg ema_halflife_kimg cap, so the ramp-up is the length that matters
    "ema_rampup_0.02": {"ema_rampup": 0.02},
    "ema_rampup_0.2": {"ema_rampup": 0.2},
    # the tiny preset's default batch is 32 (kept from the third lever run, where 64 was the default)
    "batch_32": {"batch_size": 32},
    "batch_64": {"batch_size": 64},
    "batch_128": {"batch_size": 128},
    "min_snr_off": {"min_snr_gamma": None},
    # EDM's noise-level sampling (Karras et al. 2022): ln sigma ~ N(-1.2, 1.2^2), with diffkit's min-SNR
    # weighting, and without it (unweighted v loss = EDM's lambda(sigma) with sigma_data = 1)
    "lognormal": {"timestep_sampling": "lognormal"},
    "lognormal_edm": {"timestep_sampling": "lognormal", "min_snr_gamma": None},
    # Width vs depth of the tiny U-Net (32 channels, 1 residual block per level; 3.34M params, 0.57
    # GFLOPs/image at 32 px): a matched pair, deeper (4.86M, 0.82) or wider (5.22M, 0.88), and deeper
    # but narrower (2.74M, 0.47).
    "depth_2": {"num_res_blocks": 2},
    "width_40": {"channels": 40},
    "width_24_depth_2": {"channels": 24, "num_res_blocks": 2},
    # EDM's preconditioning (c_in, c_skip, c_out) with sigma_data 0.5; v-prediction is the same at 1
    "prediction_edm": {"prediction": "edm"},
    # Post-hoc EMA (Karras et al. 2024): one run stores the sigma_rel 0.05 / 0.10 profiles 8 times, then
    # each of these EMA lengths is rebuilt from them and sampled: rows phema_<sigma_rel>, and "phema" is
    # the same run's own default EMA (close to sigma_rel 0.07)
    "phema": {"posthoc_sigma_rels": [0.05, 0.1, 0.2]},
    "prediction_eps": {"prediction": "eps"},
    "preset_small": {"preset": "small"},
    "preset_base": {"preset": "base"},
    # The small preset as it was before it was aligned with diffusers' UNet2DModel (issue 15): GroupNorm
    # gcd(32, width) groups (16 or 32) and width // 64 attention heads, where today's has 16 groups and
    # 48-channel heads everywhere; the same parameters. Run with --baseline preset_small, it shows whether
    # the alignment kept the training results. "preset_shape" is not a TrainConfig field: the job applies
    # it to the preset inside its own process (_quality_job.preset_shape).
    "small_unaligned": {"preset": "small", "preset_shape": {"norm_groups": None, "head_dim": 64}},
}
BASELINE = "defaults"  # the variant every lever is compared with, unless --baseline names another
# Per-image costs measured on this machine (one thread, tiny preset at 32 px, fp32): one U-Net forward
# ~6.3 ms alone, but a DDIM-50 sample took ~0.42 s with two jobs sharing the two cores (the committed
# comparison's `sample_s`: ~110 s per 256 images); one InceptionV3 pass at 299 px ~0.155 s (`features_s`
# ~55 s per 256 there, 0.21 s). Start-up, data, pilot steps and the Inception weights load: ~25 s per job.
# Used only for the up-front wall-time estimate.
SAMPLE_S_PER_IMAGE = 0.42
# lucidrains' matched Unet (1.11 GFLOPs per forward against tiny's 0.57) sampled 3.5x as long there
# (`sample_s` ~390 s against ~110 s), more than its FLOPs alone predict (the cause was not profiled)
DDPM_SAMPLE_COST = 3.5
FEATURE_S_PER_IMAGE = 0.21
JOB_OVERHEAD_S = 25.0
PREPARE_S = 30.0  # faces, image caches, Inception calibration; plus the final metrics and report


@dataclass
class Job:
    name: str
    kind: str  # "train" or "features"
    spec: dict[str, Any]
    estimate_s: float
    result: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ prepare


@dataclass(frozen=True)
class Scratch:
    """Where the shared inputs live in the scratch folder (planned before anything is written)."""

    work: Path
    n_floor_sets: int

    @property
    def train_dir(self) -> Path:
        return self.work / "train"

    @property
    def reference_dir(self) -> Path:
        return self.work / "reference"

    @property
    def weights(self) -> Path:
        return self.work / "inception-random-bn.pt"

    @property
    def sets(self) -> dict[str, Path]:
        """Image arrays featurised by the feature jobs: the reference and the floor sets."""
        names = ["reference", *(f"floor{index}" for index in range(self.n_floor_sets))]
        return {name: self.work / f"{name}.npy" for name in names}


def prepare(scratch: Scratch, n_train: int, n_reference: int, n_samples: int) -> dict[str, np.ndarray]:
    """Training faces, held-out reference faces, their uint8 arrays, the calibrated Inception weights."""
    from diffkit.testing.inception import make_inception_weights

    write_face_folder(scratch.train_dir, n_train, size=32, seed=TRAIN_SEED)
    write_face_folder(scratch.reference_dir, n_reference, size=32, seed=REFERENCE_SEED)
    # Built once here, so the jobs only open the cache (never race to build it).
    train_images = np.asarray(load_image_dataset(scratch.train_dir, 32, progress=False).images)
    reference = np.asarray(load_image_dataset(scratch.reference_dir, 32, progress=False).images)
    for name, path in scratch.sets.items():
        index = int(name.removeprefix("floor")) if name != "reference" else -1
        np.save(path, reference if index < 0 else train_images[index * n_samples : (index + 1) * n_samples])
    make_inception_weights(scratch.weights, train_images[:CALIBRATION_IMAGES], seed=0)
    return {"train": train_images, "reference": reference}


def sample_cost_factor(overrides: dict[str, Any]) -> float:
    """A lever's sampling cost relative to the tiny preset's (forward FLOPs; for the estimate only)."""
    from diffkit.models.config import preset_config
    from diffkit.models.stats import flops_per_image
    from diffkit.models.unet import UNet

    shape = {name: overrides[name] for name in ("channels", "num_res_blocks") if name in overrides}
    preset = overrides.get("preset", "tiny")
    if preset == "tiny" and not shape:
        return 1.0
    lever = flops_per_image(UNet(preset_config(preset, 32, **shape)), 32)
    return lever / flops_per_image(UNet(preset_config("tiny", 32)), 32)


def peer_settings(peer: str) -> dict[str, dict[str, Any]]:
    """A peer's sweep: variant name -> its setting's fields; "defaults" is the peer as it ships."""
    if peer == "recipe":
        from benchmarks._quality_recipe import SHIPPED, SWEEP
    else:
        from benchmarks._quality_ddpm import SHIPPED, SWEEP  # type: ignore[assignment]
    return {BASELINE: asdict(SHIPPED)} | {setting.name: asdict(setting) for setting in SWEEP}


def contender_settings(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, Any]]]:
    """Contenders mode: name -> (the job's contender kind, the peer setting's fields or {})."""
    from benchmarks._quality_recipe import SCALED

    out: dict[str, tuple[str, dict[str, Any]]] = {name: (name, {}) for name in args.contenders}
    if "recipe-scaled" in out:
        out["recipe-scaled"] = ("recipe-fp32", asdict(SCALED))
    # The tuned recipe also takes its --mixed_precision bf16, as diffkit trains in bf16 on a CPU that has it
    # (its "auto"); the sweep ran in fp32. lucidrains' Trainer stays fp32 (see the module docstring).
    for peer, chosen in tuned_choices(args).items():
        out[f"{peer}-tuned"] = ("recipe-bf16" if peer == "recipe" else "ddpm", peer_settings(peer)[chosen])
    return out


def tuned_choices(args: argparse.Namespace) -> dict[str, str]:
    """Each peer's tuned setting by name: ``--<peer>-setting``, else the best of its sweep report; a peer
    with neither has no tuned contender."""
    out = {}
    for peer in PEERS:
        chosen = getattr(args, f"{peer}_setting") or best_swept_setting(args.report_dir, peer)
        if chosen is not None:
            settings = peer_settings(peer)
            if chosen not in settings:
                raise SystemExit(f"--{peer}-setting {chosen}: not one of {', '.join(settings)}")
            out[peer] = chosen
    return out


def plan_jobs(args: argparse.Namespace, scratch: Scratch) -> list[Job]:
    """Rounds of (budget, seed), longest budget first; the contenders' order flips every round."""
    if args.peer_sweep:
        kind = "recipe-fp32" if args.peer_sweep == "recipe" else "ddpm"
        variants = {name: (kind, setting) for name, setting in peer_settings(args.peer_sweep).items()}
    elif args.levers:
        names = dict.fromkeys([args.baseline, *args.lever_names])
        variants = {name: ("diffkit", {}) for name in names}
    else:
        variants = contender_settings(args)
    names = list(variants)
    jobs: list[Job] = []
    for index, (budget, seed) in enumerate((b, s) for b in trained_budgets(args) for s in args.seeds):
        for name in names if index % 2 == 0 else names[::-1]:
            contender, setting = variants[name]
            overrides = LEVERS.get(name, {}) if args.levers else {}
            tag = f"{name}-B{budget:g}-seed{seed}"
            spec = {
                "kind": "train", "contender": contender, "variant": name, "budget_s": budget, "seed": seed,
                "overrides": overrides, "setting": setting,
                "train_dir": str(scratch.train_dir), "weights": str(scratch.weights),
                "n_samples": args.n_samples, "sample_seed": args.sample_seed, "pilot_steps": args.pilot_steps,
                "out": str(scratch.work / "jobs" / tag),
            }  # fmt: skip
            sample_sets = 1 + len(overrides.get("posthoc_sigma_rels", []))
            cost = DDPM_SAMPLE_COST if contender == "ddpm" else sample_cost_factor(overrides)
            per_image = SAMPLE_S_PER_IMAGE * cost + FEATURE_S_PER_IMAGE
            per_image *= sample_sets
            jobs.append(Job(tag, "train", spec, budget + args.n_samples * per_image + JOB_OVERHEAD_S))
    sets = {name: str(path) for name, path in scratch.sets.items()}
    floors = {name: path for name, path in sets.items() if name != "reference"}
    for tag, chosen in (("reference", {"reference": sets["reference"]}), ("floor", floors)):
        images = args.n_reference if tag == "reference" else args.n_samples * len(floors)
        out = str(scratch.work / "jobs" / tag)
        spec = {"kind": "features", "sets": chosen, "weights": str(scratch.weights), "out": out}
        jobs.append(Job(tag, "features", spec, images * FEATURE_S_PER_IMAGE + JOB_OVERHEAD_S))
    return jobs


def trained_budgets(args: argparse.Namespace) -> list[float]:
    """The budgets jobs train for, longest first: B and 3B, or B alone with ``--one-budget``."""
    return [args.budget] if args.one_budget else [3 * args.budget, args.budget]


def finished_result(job: Job) -> dict[str, Any] | None:
    """A job's result from an earlier, interrupted run in the same ``--work-dir``: only when it finished
    (result.json written last) and its spec is exactly this job's, so a changed setting trains again."""
    out = Path(job.spec["out"])
    spec, result = out / "spec.json", out / "result.json"
    if not (spec.exists() and result.exists()) or json.loads(spec.read_text()) != job.spec:
        return None
    return json.loads(result.read_text())


def estimate_wall(jobs: list[Job], workers: int) -> float:
    """Wall time of the queue on ``workers`` slots, each job taking its estimate (greedy, in order)."""
    slots = [0.0] * workers
    for job in jobs:
        slots[slots.index(min(slots))] += job.estimate_s
    return max(slots)


def lever_trainings(report_dir: Path) -> int:
    """Configurations diffkit's committed lever runs trained besides their baseline: the tuning budget a
    peer's sweep matches (post-hoc EMA rows are rebuilt from one run's weights, not trained)."""
    count = 0
    for path in sorted(report_dir.glob("bench_quality_levers*.json")):
        report = json.loads(path.read_text())
        baseline = report["summary"].get("baseline", BASELINE)
        trained = {
            job["spec"]["variant"]
            for job in report["data"]["jobs"]
            if "posthoc_sigma_rel" not in job["result"]
        }
        count += len(trained - {baseline})
    return count


def sweep_keys(peer: str, report_dir: Path) -> dict[str, Any]:
    """A sweep's summary: the peer, its baseline, how many settings it trained besides its defaults and
    how many diffkit's lever runs trained (the protocol asks for the same number)."""
    size = len(peer_settings(peer)) - 1
    return {"peer": peer, "baseline": BASELINE, "sweep_size": size,
            "diffkit_lever_trainings": lever_trainings(report_dir)}  # fmt: skip


def best_swept_setting(report_dir: Path, peer: str) -> str | None:
    """The swept setting with the lowest distance to the floor, as the mean over both spaces and both
    budgets of its ratio to the peer's defaults (a setting must win in both spaces to be called best);
    ``None`` without a sweep report."""
    path = report_dir / f"{SWEEP_REPORT.format(peer=peer)}.json"
    if not path.exists():
        return None
    rows = json.loads(path.read_text())["data"]["rows"]
    scores: dict[str, list[float]] = {}
    for row in rows:
        for space in SPACES:
            scores.setdefault(row["variant"], []).append(row[f"fd_{space}_vs_baseline"])
    return min(scores, key=lambda name: statistics.mean(scores[name]))


# -------------------------------------------------------------------------------------------- run


def run_queue(jobs: list[Job], workers: int) -> None:
    """Each job in its own process with one thread; at most ``workers`` at a time, in queue order.

    Jobs run in their own sessions, so Ctrl-C reaches only this process, which then stops them all
    (diffkit's trainer would otherwise take the Ctrl-C as "save and stop" and go on to sample).
    """
    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    pending = []
    for job in jobs:
        earlier = finished_result(job)
        if earlier is None:
            pending.append(job)
        else:
            job.result = earlier
            print(f"kept {job.name} from the earlier run in this work dir", flush=True)
    running: list[tuple[Job, subprocess.Popen[bytes], Any, float]] = []
    try:
        while pending or running:
            while pending and len(running) < workers:
                job = pending.pop(0)
                out = Path(job.spec["out"])
                out.mkdir(parents=True, exist_ok=True)
                (out / "spec.json").write_text(json.dumps(job.spec, indent=1))
                log = (out / "log.txt").open("wb")
                # this module again (as a module: its siblings import as benchmarks.x), from the same folder
                command = [sys.executable, "-m", "benchmarks.bench_quality", "--job", str(out / "spec.json")]
                process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
                )
                running.append((job, process, log, time.perf_counter()))
                print(f"started {job.name}", flush=True)
            time.sleep(0.5)
            for entry in list(running):
                job, process, log, started = entry
                if process.poll() is None:
                    continue
                running.remove(entry)
                log.close()
                out = Path(job.spec["out"])
                if process.returncode != 0:
                    tail = (out / "log.txt").read_text(errors="replace")[-3000:]
                    raise SystemExit(f"job {job.name} failed (exit {process.returncode}):\n{tail}")
                job.result = json.loads((out / "result.json").read_text())
                job.result["wall_s"] = round(time.perf_counter() - started, 1)
                (out / "result.json").write_text(json.dumps(job.result, indent=1))  # a rerun keeps wall_s
                print(f"finished {job.name} in {job.result['wall_s']:.0f} s", flush=True)
    finally:
        for _, process, log, _ in running:  # only after a failure or an interrupt
            process.kill()
            process.wait()
            log.close()


# ---------------------------------------------------------------------------------------- metrics


def distances(features: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, float]:
    """FD and KID (mean over 100 subsets, torch-fidelity's estimator) in every space."""
    out: dict[str, float] = {}
    for space in SPACES:
        x, y = np.asarray(features[space], np.float64), np.asarray(reference[space], np.float64)
        out[f"fd_{space}"] = round(frechet_distance(x, y), 4)
        kid, _, _ = kernel_distance(x, y, subset_size=min(len(x), len(y), 1000))
        out[f"kid_{space}"] = round(kid, 6)
    return out


def load_features(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {space: data[space] for space in SPACES}


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 6), "min": round(min(values), 6),
            "max": round(max(values), 6)}  # fmt: skip


def aggregate(train_jobs: list[Job], key: str) -> list[dict[str, Any]]:
    """One row per (variant, budget): medians over seeds with min and max beside them. ``key`` names the
    row's label ("variant", or "contender" in the comparison); rows are always the spec's variant, the
    contender's own name: ``recipe-scaled`` and ``recipe-tuned`` run the ``recipe-fp32`` or ``recipe-bf16``
    job kind with a setting, and must not be pooled with the recipe as shipped."""
    groups: dict[tuple[str, float], list[Job]] = {}
    for job in train_jobs:
        groups.setdefault((job.spec["variant"], job.spec["budget_s"]), []).append(job)
    rows = []
    for (name, budget), members in sorted(groups.items(), key=lambda item: (item[0][1], item[0][0])):
        row: dict[str, Any] = {key: name, "budget_s": budget, "seeds": len(members)}
        for metric in [f"{m}_{s}" for s in SPACES for m in ("fd", "kid")] + [
            "gap_fd_inception",
            "gap_fd_pixels",
        ]:
            values = spread([job.result[metric] for job in members])
            row[metric] = values["median"]
            if metric.startswith("fd_"):
                row[f"{metric}_min"], row[f"{metric}_max"] = values["min"], values["max"]
        for metric in ("train_seconds", "train_cpu_s", "steps", "images_seen", "train_pflops", "final_loss"):
            row[f"{metric}_median"] = round(
                statistics.median(float(job.result[metric]) for job in members), 4
            )
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------- report


def grid_image(images: np.ndarray, rows: int = GRID_ROWS, scale: int = 2) -> Image.Image:
    grid = make_grid(images[: rows * GRID_COLUMNS], columns=GRID_COLUMNS)
    return grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)


def _row_lookup(rows: list[dict[str, Any]], key: str, name: str, budget: float) -> dict[str, Any]:
    return next(r for r in rows if r[key] == name and r["budget_s"] == budget)


def _budget_tag(budget: float, base: float) -> str:
    """``B`` or ``3B``: summary keys that stay the same whatever ``--budget`` is (docs read them)."""
    return "B" if budget == base else "3B"


def goals(rows: list[dict[str, Any]], floor: dict[str, float], budget: float) -> dict[str, Any]:
    """The issue's two goals, per space: the gap to the floor halves; diffkit at B reaches recipe at 3B."""
    out: dict[str, Any] = {}
    for space in SPACES:
        for b in (budget, 3 * budget):
            ours = _row_lookup(rows, "contender", "diffkit", b)[f"fd_{space}"] - floor[f"fd_{space}"]
            theirs = _row_lookup(rows, "contender", "recipe-fp32", b)[f"fd_{space}"] - floor[f"fd_{space}"]
            out[f"gap_ratio_{space}_{_budget_tag(b, budget)}"] = (
                round(ours / theirs, 3) if theirs > 0 else None
            )
        ours_b = _row_lookup(rows, "contender", "diffkit", budget)[f"fd_{space}"]
        theirs_3b = _row_lookup(rows, "contender", "recipe-fp32", 3 * budget)[f"fd_{space}"]
        out[f"diffkit_at_B_reaches_recipe_fp32_at_3B_{space}"] = ours_b <= theirs_3b
    return out


# contender kind -> (the model's label in the report, the summary keys' suffix)
MODELS = {
    "diffkit": ("diffkit UNet, tiny preset", "diffkit"),
    "recipe-fp32": ("diffusers UNet2DModel twin", "diffusers"),
    "ddpm": ("denoising-diffusion-pytorch Unet(42, (1, 2, 2, 2))", "ddpm"),
}


def model_match_rows(train_jobs: list[Job]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Each network's parameters and forward GFLOPs per image; summary keys once diffkit and a peer ran."""
    rows, keys = [], {}
    for contender, (label, suffix) in MODELS.items():
        job = next((j for j in train_jobs if j.spec["contender"] == contender), None)
        if job is not None:
            gflops = round(job.result["flops_forward_per_image"] / 1e9, 4)
            rows.append({"model": label, "params": job.result["params"], "gflops_forward_per_image": gflops})
            keys |= {f"params_{suffix}": job.result["params"], f"gflops_{suffix}": gflops}
    return rows, keys if len(rows) >= 2 else {}


GOAL_PREFIXES = ("gap_ratio_", "diffkit_at_B_", "best_peer_", "vs_best_peer_", "vs_peer_defaults_")
PEER_DEFAULTS = ("recipe-fp32", "ddpm")  # the peers as they ship, each at its own defaults


def peer_goals(rows: list[dict[str, Any]], floor: dict[str, float], budget: float) -> dict[str, Any]:
    """diffkit against the best peer row (any peer, any setting) and against each peer's defaults, per
    space and budget: the gap ratio, and whether diffkit at B reaches the best peer at 3B."""
    out: dict[str, Any] = {}
    for space in SPACES:
        fd = f"fd_{space}"

        def gap(row: dict[str, Any], fd: str = fd) -> float:
            return row[fd] - floor[fd]

        best: dict[float, dict[str, Any]] = {}
        for b in (budget, 3 * budget):
            tag = _budget_tag(b, budget)
            peers = [r for r in rows if r["budget_s"] == b and r["contender"] != "diffkit"]
            ours = _row_lookup(rows, "contender", "diffkit", b)
            best[b] = min(peers, key=lambda r: r[fd])
            out[f"best_peer_{space}_{tag}"] = best[b]["contender"]
            out[f"vs_best_peer_gap_ratio_{space}_{tag}"] = (
                round(gap(ours) / gap(best[b]), 3) if gap(best[b]) > 0 else None
            )
            for name in PEER_DEFAULTS:
                row = next((r for r in peers if r["contender"] == name), None)
                if row is not None and gap(row) > 0:
                    out[f"vs_peer_defaults_{name.replace('-', '_')}_gap_ratio_{space}_{tag}"] = round(
                        gap(ours) / gap(row), 3
                    )
        ours_b = _row_lookup(rows, "contender", "diffkit", budget)[fd]
        out[f"vs_best_peer_diffkit_at_B_reaches_best_peer_at_3B_{space}"] = ours_b <= best[3 * budget][fd]
    return out


def expand_posthoc(train_jobs: list[Job]) -> list[Job]:
    """A post-hoc EMA job stands for several: one per rebuilt EMA length (its own samples and features,
    the training numbers of the run they came from), named ``<variant>_<sigma_rel>``."""
    out = []
    for job in train_jobs:
        out.append(job)
        for folder in sorted((Path(job.spec["out"]) / "posthoc").glob("*")):
            info = json.loads((folder / "posthoc.json").read_text())
            spec = job.spec | {"variant": f"{job.spec['variant']}_{folder.name}", "out": str(folder)}
            out.append(Job(f"{job.name}-{folder.name}", "train", spec, 0.0, job.result | info))
    return out


def build_report(args: argparse.Namespace, jobs: list[Job], prepared: dict[str, np.ndarray], scratch: Scratch,
                 wall_s: float, estimate_s: float, load: dict[str, list[float]]) -> Report:  # fmt: skip
    from benchmarks._quality_recipe import DEFAULTS as RECIPE

    train_jobs = expand_posthoc([job for job in jobs if job.kind == "train"])
    reference = load_features(scratch.work / "jobs" / "reference" / "reference-features.npz")
    floors = [name for name in scratch.sets if name != "reference"]
    floor_rows = []
    for name in floors:
        values = distances(load_features(scratch.work / "jobs" / "floor" / f"{name}-features.npz"), reference)
        floor_rows.append({"set": f"training images {name}", "n": args.n_samples, **values})
    floor = {
        m: statistics.median(r[m] for r in floor_rows) for m in floor_rows[0] if m.startswith(("fd", "kid"))
    }
    for job in train_jobs:
        job.result |= distances(load_features(Path(job.spec["out"]) / "features.npz"), reference)
        # the measured budget: process CPU seconds of the training steps over the budget
        job.result["budget_used"] = round(job.result["train_cpu_s"] / job.spec["budget_s"], 3)
        for space in SPACES:
            job.result[f"gap_fd_{space}"] = round(job.result[f"fd_{space}"] - floor[f"fd_{space}"], 4)
    swept = args.levers or bool(args.peer_sweep)
    key = "variant" if swept else "contender"
    rows = aggregate(train_jobs, key)
    if swept:
        for row in rows:
            base = _row_lookup(rows, key, args.baseline, row["budget_s"])
            for space in SPACES:
                row[f"fd_{space}_vs_baseline"] = round(row[f"fd_{space}"] / base[f"fd_{space}"], 3)
    per_job = [
        {"job": job.name, key: job.spec["variant"], "job_kind": job.spec["contender"],
         "budget_s": job.spec["budget_s"], "seed": job.spec["seed"],
         **{k: v for k, v in job.result.items() if not isinstance(v, (dict, list))},
         "load_1min_before": job.result["load_before"][0], "load_1min_after": job.result["load_after"][0]}
        for job in train_jobs
    ]  # fmt: skip
    model_match, model_keys = model_match_rows(train_jobs)
    mode = "levers" if args.levers else "peer_sweep" if args.peer_sweep else "contenders"
    summary: dict[str, Any] = {
        "mode": mode, "budget_s": args.budget, "budget_clock": "process CPU seconds of the training steps",
        **({"baseline": args.baseline} if args.levers else {}),
        **(sweep_keys(args.peer_sweep, args.report_dir) if args.peer_sweep else {}),
        "budget_3x_s": 3 * args.budget, "budgets_trained_s": trained_budgets(args),
        "seeds": list(args.seeds), "n_train": args.n_train, "n_reference": args.n_reference,
        "n_samples": args.n_samples, "sampler": "DDIM, 50 steps, eta 0, fp32", "resolution": 32,
        "workers": args.workers, "torch_threads_per_job": 1, "cpu_count": os.cpu_count(),
        "wall_s": round(wall_s, 1), "estimated_wall_s": round(estimate_s, 1),
        "load_avg_before": load["before"], "load_avg_after": load["after"],
        **{f"floor_{m}": round(v, 6) for m, v in floor.items()},
        # training CPU seconds / budget over all jobs (the clock stops each job after the step that uses
        # its budget up, so this is at least 1 unless a planned schedule ended first)
        "budget_used_min": min(job.result["budget_used"] for job in train_jobs),
        "budget_used_max": max(job.result["budget_used"] for job in train_jobs),
    }  # fmt: skip
    summary |= model_keys
    for row in rows:
        for space in SPACES:
            name = row[key].replace("-", "_").replace(".", "_")  # an identifier: the report labels it
            summary[f"fd_{space}_{name}_{_budget_tag(row['budget_s'], args.budget)}"] = row[f"fd_{space}"]
    if not swept:
        summary |= goals(rows, floor, args.budget) | peer_goals(rows, floor, args.budget)
        # the tuned contenders' settings by name, and where each came from
        for peer, name in tuned_choices(args).items():
            summary[f"{peer}_tuned_setting"] = name
            sweep = f"reports/{SWEEP_REPORT.format(peer=peer)}.json"
            summary[f"{peer}_tuned_from"] = f"--{peer}-setting" if getattr(args, f"{peer}_setting") else sweep
    caveat = (
        f"One {os.cpu_count()}-core CPU; {args.workers} jobs at a time, each its own process with one torch "
        f"thread; 1-minute load average {load['before'][0]:.1f} before, {load['after'][0]:.1f} after (each "
        "job's own before/after is in the per-job table). Budgets are measured: every job trains until its "
        "process CPU seconds (one thread: the compute it spent, whatever else ran) reach the budget, checked "
        "after every step; 'train_cpu_s' is what it trained and 'budget used' the ratio to the budget "
        f"({summary['budget_used_min']:.2f} to {summary['budget_used_max']:.2f} here; diffkit's clock also "
        "counts its run-folder work between steps). The recipe plans its cosine LR schedule for the step "
        "count its pilot steps predict (and stops there if the clock has not); as shipped it warms up for "
        f"{RECIPE.warmup_steps} steps, which at small budgets is most of the run; 'recipe-scaled' warms up "
        "for 10% of the planned steps. The Inception "
        "space uses random, BatchNorm-calibrated weights (not the official file): its values compare only "
        "within this report. With 2 seeds the median is the mean; min and max show the seed spread."
    )
    spaces_text = (
        "FD and KID against the held-out reference faces in two fixed offline feature spaces: 'inception' "
        "= pool3 (2048-d) of torch-fidelity's InceptionV3 with random Kaiming weights, BatchNorm calibrated "
        f"on the first {CALIBRATION_IMAGES} training images (seed 0); 'pixels' = 8x8 average-pooled RGB "
        "(192-d). Gap = FD minus the floor (training images vs the same reference, same N)."
    )
    sections = [
        Section(heading=f"Quality per {key} and budget (median over seeds)", text=spaces_text, table=rows),
        Section(heading="Floor: training images against the reference", table=floor_rows),
    ]  # fmt: skip
    if not swept:
        goal_rows = [{"goal": k, "value": v} for k, v in summary.items() if k.startswith(GOAL_PREFIXES)]
        goal_text = (
            "gap_ratio = (diffkit FD - floor) / (recipe fp32 FD - floor) at the same budget (goal: <= 0.5); "
            "diffkit's FD at B is at most the recipe's at 3B (goal: true). best_peer_*: the peer row (any "
            "setting of either peer) with the lowest FD in that space and budget, and the same two goals "
            "against it; vs_peer_defaults_*: against the peers as they ship."
        )
        sections.append(Section(heading="Goals", table=goal_rows, text=goal_text))
    sections += [
        Section(heading="Model match (diffkit tiny vs the diffusers twin)", table=model_match),
        Section(heading="Every job", table=per_job),
        Section(heading="Caveats", text=caveat, badges=["CPU", f"{args.workers} jobs x 1 thread"]),
    ]
    images = [ReportImage(grid_image(prepared["train"]), "training images"),
              ReportImage(grid_image(prepared["reference"]), "held-out reference")]  # fmt: skip
    first_seed, longest = args.seeds[0], max(trained_budgets(args))
    for job in sorted(train_jobs, key=lambda j: (j.spec["budget_s"], j.spec["variant"])):
        # Levers: only the longest budget's grids, two rows each (a dozen levers would bloat the page).
        if job.spec["seed"] == first_seed and not (swept and job.spec["budget_s"] != longest):
            samples = np.load(Path(job.spec["out"]) / "samples.npy")
            fd = job.result["fd_inception"]
            name, budget = job.spec["variant"], job.spec["budget_s"]
            caption = f"{name}, {budget:g} s, seed {first_seed}: FD inception {fd:.1f}"
            images.append(ReportImage(grid_image(samples, LEVER_GRID_ROWS if swept else GRID_ROWS), caption))
    sections.append(Section(heading="Sample grids (the same noise for every contender)", images=images))
    hidden = ("out", "train_dir", "weights")  # scratch paths: meaningless after the run
    job_data = [
        {
            "name": job.name,
            "spec": {k: v for k, v in job.spec.items() if k not in hidden},
            "result": job.result,
        }
        for job in train_jobs
    ]
    data = {"summary": summary, "rows": rows, "floor": floor_rows, "jobs": job_data}
    title = {
        "levers": "bench_quality levers: diffkit config levers at equal training seconds",
        "peer_sweep": f"bench_quality peer sweep: {args.peer_sweep} settings at equal training CPU seconds",
        "contenders": "bench_quality: diffkit vs diffusers' train_unconditional recipe and lucidrains' "
        "denoising-diffusion-pytorch at equal training CPU seconds",
    }[mode]
    return Report(title=title, command="bench_quality", summary=summary, sections=sections, data=data,
                  headline=report_headline(summary, data))  # fmt: skip


def report_headline(summary: dict[str, Any], data: dict[str, Any]) -> str:
    """The index's headline is the README's: the report's one reading (benchmarks/readings/quality.py)."""
    traced = trace({"summary": summary, "data": data}, "bench_quality")
    swept = summary["mode"] in ("levers", "peer_sweep")  # a sweep reads as a lever run: one row per setting
    reading = quality_reading.levers_headline if swept else quality_reading.headline
    return plain(reading(traced))


# -------------------------------------------------------------------------------------- self-test


def self_test() -> None:
    """Fast checks of the harness's own parts against independent computations (seconds, no training)."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDIMPipeline

    from benchmarks._quality_job import pooled_pixels, shared_noise
    from benchmarks._quality_recipe import DEFAULTS, RecipeTrainer, ddim_sample
    from diffkit.models.config import preset_config
    from diffkit.sample.generate import initial_noise

    torch.manual_seed(0)
    images = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    # 1. pooled pixels = torch's 4x4 average pooling of the [0, 1] image
    expected = F.avg_pool2d(torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255, 4)
    assert np.allclose(pooled_pixels(images), expected.permute(0, 2, 3, 1).reshape(40, -1).numpy())
    # 2. image i's noise does not depend on how many images are drawn (diffkit sample's rule)
    assert torch.equal(shared_noise(8, 3)[5:], initial_noise(range(5, 8), 3, 32, 3))
    # 3. the recipe's loader: one epoch = every image once, batches of 16 and a short last one,
    #    pixels x / 127.5 - 1, flipped images exact mirrors
    trainer = RecipeTrainer(images, preset_config("tiny", 32), 10, seed=0, bf16=False)
    batches = [trainer.next_batch() for _ in range(3)]
    assert [len(b) for b in batches] == [16, 16, 8] and DEFAULTS.batch_size == 16
    order = trainer.order
    originals = torch.from_numpy(images[order.numpy()]).permute(0, 3, 1, 2).float() / 127.5 - 1
    got = torch.cat(batches)
    same, mirrored = (got == originals).flatten(1).all(1), (got == originals.flip(-1)).flatten(1).all(1)
    assert sorted(order.tolist()) == list(range(40)) and bool((same | mirrored).all())
    assert all(0 < int(mirrored[i : i + 16].sum()) < 16 for i in (0, 16))  # a coin per image, not per batch
    # 4. the recipe's LR: linear warm-up over 500 steps from 0, then cosine to 0 at the planned end
    lrs = []
    for _ in range(3):
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        trainer.step()
    assert np.allclose(lrs, [0.0, 1e-4 / 500, 2e-4 / 500])
    assert trainer.ema.cur_decay_value == 1 - (1 + 2 / DEFAULTS.ema_inv_gamma) ** -DEFAULTS.ema_power
    # 5. the recipe's DDIM loop = DDIMPipeline(eta=0) from the same noise
    model = trainer.ema_model()
    pipeline = DDIMPipeline(unet=model, scheduler=trainer.noise_scheduler)
    pipeline.set_progress_bar_config(disable=True)
    reference = pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), eta=0.0,
                         num_inference_steps=4, output_type="np").images  # fmt: skip
    noise = torch.randn((2, 3, 32, 32), generator=torch.Generator().manual_seed(0))
    _, final = ddim_sample(model, trainer.noise_scheduler.config, noise, 4, batch_size=2)
    assert np.array_equal((final / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), reference)
    # 6. distances: a set against itself is at 0; a shifted set is further than an unshifted one
    features = {"inception": np.random.default_rng(1).normal(size=(64, 8)),
                "pixels": np.random.default_rng(2).normal(size=(64, 4))}  # fmt: skip
    same_set = distances(features, features)
    assert abs(same_set["fd_inception"]) < 1e-6 and abs(same_set["fd_pixels"]) < 1e-6
    shifted = distances({k: v + 0.5 for k, v in features.items()}, features)
    assert shifted["fd_pixels"] > 0.9 and shifted["kid_pixels"] > same_set["kid_pixels"]
    # 7. the queue estimate and the alternating order
    jobs = [Job(str(i), "train", {}, s) for i, s in enumerate([30.0, 10.0, 10.0, 10.0])]
    assert estimate_wall(jobs, 2) == 30.0 and estimate_wall(jobs, 1) == 60.0
    print("self-test passed")


# ------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--budget", type=float, default=120.0, help="B: training CPU seconds (3B is the other budget)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-samples", type=int, default=256, help="N: samples per job (also the floor's N)")
    parser.add_argument("--n-reference", type=int, default=1000, help="held-out reference faces")
    parser.add_argument("--n-train", type=int, default=2000, help="procedural 32 px training faces")
    parser.add_argument("--floor-sets", type=int, default=2, help="disjoint training subsets for the floor")
    parser.add_argument("--sample-seed", type=int, default=0, help="seed of the shared sample noise")
    parser.add_argument("--pilot-steps", type=int, default=12, help="steps timed to size each job")
    parser.add_argument("--workers", type=int, default=2, help="jobs at a time (one thread each)")
    parser.add_argument(
        "--one-budget", action="store_true",
        help="train at B only, not also at 3B (a sweep that fits one session; the comparison needs both)",
    )  # fmt: skip
    parser.add_argument("--levers", action="store_true", help="diffkit's config levers instead of contenders")
    parser.add_argument(
        "--peer-sweep", choices=PEERS, default=None,
        help="a peer's tuning sweep (its defaults and 12 settings) instead of contenders",
    )  # fmt: skip
    parser.add_argument(
        "--contenders", nargs="+", default=list(CONTENDERS), choices=[*CONTENDERS, *OPTIONAL_CONTENDERS],
        metavar="NAME", help=f"contenders mode: which to run (default: {', '.join(CONTENDERS)}; also "
        f"{', '.join(OPTIONAL_CONTENDERS)}); the tuned peers join when their sweeps' reports exist",
    )  # fmt: skip
    for peer in PEERS:
        parser.add_argument(
            f"--{peer}-setting", default=None, metavar="SETTING",
            help=f"the {peer}-tuned contender's setting (default: the best of reports/"
            f"{SWEEP_REPORT.format(peer=peer)}.json; none without it)",
        )  # fmt: skip
    parser.add_argument(
        "--lever-names",
        nargs="+",
        default=list(LEVERS),
        choices=list(LEVERS),
        metavar="LEVER",
        help=f"levers to run with --levers (default: all of {', '.join(LEVERS)})",
    )
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        choices=[BASELINE, *LEVERS],
        help=f"with --levers: the variant the others are compared with (default: {BASELINE}, no change)",
    )
    parser.add_argument("--report-dir", type=Path, default=Path("reports"))
    parser.add_argument(
        "--report-name",
        default=None,
        help="report name without extension (default: bench_quality, or bench_quality_levers with --levers)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="scratch folder (default: a new temp dir)"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the scratch folder (samples, logs)")
    parser.add_argument("--plan", action="store_true", help="print the jobs and the wall-time estimate only")
    parser.add_argument("--self-test", action="store_true", help="check the harness (seconds) and exit")
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)  # one job, started by this script
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    if args.job is not None:
        from benchmarks._quality_job import run_job

        run_job(args.job)
        return
    if args.self_test:
        self_test()
        return
    if args.levers and args.peer_sweep:
        parser.error("--levers and --peer-sweep are two different runs")
    if args.one_budget and not (args.levers or args.peer_sweep):
        parser.error("--one-budget is for --levers or --peer-sweep: the comparison's goals need B and 3B")
    if args.budget <= 0 or args.n_samples < 16 or args.workers < 1 or len(set(args.seeds)) != len(args.seeds):
        parser.error("--budget must be > 0, --n-samples >= 16, --workers >= 1, --seeds distinct")
    if args.n_reference < args.n_samples or args.n_train < args.n_samples:
        parser.error("--n-reference and --n-train must be at least --n-samples")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        started = time.perf_counter()
        scratch = Scratch(work, min(args.floor_sets, args.n_train // args.n_samples))
        jobs = plan_jobs(args, scratch)
        estimate = estimate_wall(jobs, args.workers) + PREPARE_S
        print(f"{len(jobs)} jobs, {args.workers} at a time; estimated wall time {estimate / 60:.1f} min "
              f"(idle machine)", flush=True)  # fmt: skip
        for job in jobs:
            print(f"  {job.name}: ~{job.estimate_s:.0f} s", flush=True)
        if args.plan:
            return
        prepared = prepare(scratch, args.n_train, args.n_reference, args.n_samples)
        load_before = [round(v, 2) for v in os.getloadavg()]
        run_queue(jobs, args.workers)
        load = {"before": load_before, "after": [round(v, 2) for v in os.getloadavg()]}
        wall = time.perf_counter() - started
        report = build_report(args, jobs, prepared, scratch, wall, estimate, load)
        default_name = "bench_quality_levers" if args.levers else "bench_quality"
        if args.peer_sweep:
            default_name = SWEEP_REPORT.format(peer=args.peer_sweep)
        name = args.report_name or default_name
        paths = write_report(report, args.report_dir / f"{name}.html")
        for row in report.data["rows"]:
            label = row.get("variant", row.get("contender"))
            print(f"{label:>16s} B={row['budget_s']:g}s: FD inception {row['fd_inception']:.2f} "
                  f"pixels {row['fd_pixels']:.4f} (train {row['train_seconds_median']:.0f} s)")  # fmt: skip
        print(
            f"wall {wall / 60:.1f} min (estimated {estimate / 60:.1f}); report: {paths.html} ({paths.json})"
        )
    finally:
        if args.keep_work or args.work_dir is not None:
            print(f"scratch kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
