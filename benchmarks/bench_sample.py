"""Samplers ranked by their error against the answer they approximate, per step count, and their speed.

DDIM (eta = 0) and DPM-Solver++(2M) are solvers of one probability-flow ODE: from the same starting
noise, with enough steps, both land on the same image. So a sampler at k steps is scored by how far its
image is from that image, for the same noise:

* **Trained model.** One tiny model is trained inside the benchmark (procedural faces at 8 px, CPU), or
  ``--run`` reuses a run folder. Image i starts from the noise ``diffkit sample`` draws for it (seeded
  by (seed, i)); the reference is DPM-Solver++ at ``--reference-steps`` (500: in the Gaussian case
  DPM++-500 is within a hundredth of a level of the exact answer, the report's
  ``gaussian_reference_to_exact_levels``). Each sampler at each step count starts from the same
  noise, and its error is the RMSE of image i against reference image i in 8-bit levels (floats,
  clipped to [-1, 1] as the images are shown, 1 level = 1/255 of the range), median and spread over
  the images. DPM++ at 200 steps against the reference bounds how far the reference itself is from
  converged (its own error is smaller). Sampling as users sample: x0 clipped to [-1, 1] at each step
  (the samplers' default).
* **Known Gaussian.** Data x0 ~ N(mu, s^2) per pixel, independent (mu and s fitted to the held-out
  faces, s at least ``MIN_STD``). The exact denoiser is E[x0 | x_t] = mu + a s^2 / (a^2 s^2 + sigma^2)
  (x_t - a mu) (a = sqrt(abar_t), sigma = sqrt(1 - abar_t)), and the probability-flow ODE moves each
  pixel's standardised value unchanged, so the exact answer from noise z at the first timestep T is
  mu + s (z - a_T mu) / sqrt(a_T^2 s^2 + sigma_T^2). diffkit's samplers run on that denoiser (written in
  the run's own prediction type, x0 not clipped so that every map stays affine); an affine map of z is
  read off exactly from z = 0 and z = 1, so the RMSE over all z ~ N(0, 1) is exact, not sampled.
* **DDPM** is stochastic: from the same start it lands on another image, so its distance to the ODE's
  image does not shrink with steps and says nothing of its accuracy. It is scored in the Gaussian case
  by its output distribution: each step is affine in x_t plus independent noise, read off step by step
  (the step's noise replaced by 0 and 1), which gives the exact mean and variance of its output; the
  score is the 2-Wasserstein distance (per pixel, root mean square over pixels) to the data
  N(mu, s^2). The deterministic samplers get the same distance beside their error. In the model case
  DDPM-1000 is shown for context only (and as the old table's reference).

A sampler "needs k steps" at a tolerance when its error (the median over images, for the model) is
within the tolerance at k and at every larger step count measured. The old table (the Fréchet distance of
2x2-pooled pixels to held-out faces, which put every sampler within 0.81-0.84 of DDPM-1000 and so could
not rank them) is kept beside it, computed from the same images.

Speed: seconds per image on CPU, each sampler timed on the same batch in >= 3 rounds whose order
alternates (the machine is shared and its load drifts), median and spread reported with the load
average before and after. The denoising animation is encoded in all three formats once, to back the
GIF choice in docs/sample.md. Torch runs on ``--threads`` (1): on a shared 2-core machine two OpenMP
threads mostly spin-wait for each other (the tiny U-Net's forward at batch 16 took 4.0 s and 1.05 CPU
seconds with two threads at a load of 7, 0.05 s with one), which would time the machine's load, not
the samplers.

    .venv/bin/python -m benchmarks.bench_sample [--quick] [--run RUN] [--n 64] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.pixels import to_uint8
from diffkit.diffusion.samplers import make_sampler, run_sampler
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.fid import frechet_distance
from diffkit.report.model import Report, Section
from diffkit.report.render import write_report
from diffkit.runs.snapshots import latest_snapshot, load_snapshot
from diffkit.sample.animation import encode_animation
from diffkit.sample.generate import generate, initial_noise
from diffkit.train.cache import load_image_dataset
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

CONTENDERS = [("ddpm", 1000), ("ddim", 10), ("ddim", 20), ("ddim", 50), ("dpmpp", 10), ("dpmpp", 20)]
RES = 8
WITHIN = 0.05
LEVELS = 127.5  # 8-bit levels per unit of [-1, 1]
REFERENCE_STEPS = 500
ODE_STEPS = (5, 8, 10, 15, 20, 30, 50, 100, 200)  # DDIM and DPM++ against the reference
GAUSSIAN_STEPS = (1, 2, 3, 5, 8, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000)
TOLERANCES = (2.0, 1.0, 0.5)  # 8-bit levels
TOLERANCE = 1.0  # the headline's
MIN_STD = 0.02  # the Gaussian's smallest per-pixel std in [-1, 1] units
STEP_NOISE_SEED = 2**40  # DDPM's per-step noise (a seed range initial_noise never uses)
ODE_SAMPLERS = ("ddim", "dpmpp")

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def features(images: np.ndarray) -> np.ndarray:
    """NHWC uint8 at 8 px -> 2x2-average-pooled pixels in [0, 1], 48 per image."""
    x = images.astype(np.float64) / 255.0
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)).reshape(n, -1)


# ------------------------------------------------------------------------------ the error measure


def shared_noise(n: int, seed: int = 0, channels: int = 3, resolution: int = RES) -> torch.Tensor:
    """Image i's starting noise, exactly as ``diffkit sample`` draws it (seeded by (seed, i))."""
    return initial_noise(range(n), channels, resolution, seed)


def solve(
    model: Model, diffusion: GaussianDiffusion, sampler: str, steps: int, noise: torch.Tensor,
    seed: int = 0, clip_sample: bool = True,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """The sampler's images from ``noise`` in ``steps`` steps, and the network calls it made."""
    calls = [0]

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return model(x, t)

    generator = torch.Generator().manual_seed(STEP_NOISE_SEED + seed)  # DDPM's per-step noise only
    chosen = make_sampler(sampler, diffusion, clip_sample=clip_sample)
    return run_sampler(counted, chosen, noise, steps, generator), calls[0]


def pixel_rmse(images: torch.Tensor, reference: torch.Tensor) -> np.ndarray:
    """Per image: the RMSE in 8-bit levels, both clipped to [-1, 1] as they are shown."""
    if images.shape != reference.shape:
        raise ValueError(f"images {tuple(images.shape)} against a reference of {tuple(reference.shape)}")
    difference = (images.double().clamp(-1, 1) - reference.double().clamp(-1, 1)) * LEVELS
    return difference.square().mean(dim=(1, 2, 3)).sqrt().numpy()


def error_row(sampler: str, steps: int, nfe: int, errors: np.ndarray, stochastic: bool) -> dict[str, Any]:
    q10, q25, q50, q75, q90 = np.quantile(errors, [0.1, 0.25, 0.5, 0.75, 0.9])
    return {
        "sampler": sampler, "steps": steps, "network_calls": nfe,
        "rmse_median": round(float(q50), 4), "rmse_q25": round(float(q25), 4),
        "rmse_q75": round(float(q75), 4), "rmse_q10": round(float(q10), 4), "rmse_q90": round(float(q90), 4),
        "rmse_max": round(float(errors.max()), 4), "stochastic": stochastic,
    }  # fmt: skip


def convergence(
    model: Model, diffusion: GaussianDiffusion, noise: torch.Tensor, plan: dict[str, Sequence[int]],
    reference_steps: int = REFERENCE_STEPS, clip_sample: bool = True,
) -> tuple[torch.Tensor, list[dict[str, Any]], dict[tuple[str, int], torch.Tensor]]:  # fmt: skip
    """The DPM++ reference from ``noise``, and per (sampler, steps) of ``plan`` the per-image RMSE of its
    images from the same noise against it. Returns the reference, the rows and every set of images."""
    reference, _ = solve(model, diffusion, "dpmpp", reference_steps, noise, clip_sample=clip_sample)
    rows, images = [], {}
    for sampler, counts in plan.items():
        for steps in counts:
            if sampler == "dpmpp" and steps >= reference_steps:
                raise ValueError("DPM++ is scored against itself at the reference's step count")
            x, nfe = solve(model, diffusion, sampler, steps, noise, clip_sample=clip_sample)
            images[(sampler, steps)] = x
            rows.append(error_row(sampler, steps, nfe, pixel_rmse(x, reference), sampler not in ODE_SAMPLERS))
            print(f"{sampler}-{steps}: median RMSE {rows[-1]['rmse_median']:.3f} levels", flush=True)
    return reference, rows, images


def steps_within(rows: list[dict[str, Any]], sampler: str, tolerance: float, key: str) -> int | None:
    """The fewest measured steps from which on (every larger count measured too) ``key`` <= tolerance."""
    measured = sorted((row["steps"], row[key]) for row in rows if row["sampler"] == sampler)
    needed = None
    for steps, error in reversed(measured):
        if error > tolerance:
            break
        needed = steps
    return needed


# ---------------------------------------------------------------------------- the known Gaussian


@dataclass(frozen=True)
class GaussianData:
    """x0 ~ N(mean, std^2) per pixel, independent; (C, H, W) float64 in [-1, 1] units."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, images: np.ndarray, min_std: float = MIN_STD) -> GaussianData:
        """Per-pixel mean and std of NHWC uint8 images."""
        x = torch.from_numpy(np.array(images)).double().permute(0, 3, 1, 2) / LEVELS - 1.0
        return cls(x.mean(dim=0), x.std(dim=0).clamp(min=min_std))

    def denoise(self, x_t: torch.Tensor, abar: torch.Tensor) -> torch.Tensor:
        """E[x0 | x_t] for x_t = sqrt(abar) x0 + sqrt(1 - abar) eps; ``abar`` broadcasts against x_t."""
        a, var = abar.sqrt(), self.std.square()
        return self.mean + a * var / (abar * var + 1.0 - abar) * (x_t - a * self.mean)

    def flow(self, x_start: torch.Tensor, abar_start: float, abar: float) -> torch.Tensor:
        """The probability-flow ODE's exact solution at ``abar`` from ``x_start`` at ``abar_start``:
        x_t = a_t mu + sqrt(a_t^2 s^2 + sigma_t^2) z, with z, the standardised value, constant."""
        var = self.std.square()
        z = (x_start.double() - abar_start**0.5 * self.mean) / (abar_start * var + 1.0 - abar_start).sqrt()
        return abar**0.5 * self.mean + (abar * var + 1.0 - abar).sqrt() * z

    def exact_gain_offset(self, abar_start: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The exact answer flow(z, abar_start, 1) = gain z + offset, per pixel."""
        offset = self.flow(torch.zeros_like(self.mean), abar_start, 1.0)
        return self.flow(torch.ones_like(self.mean), abar_start, 1.0) - offset, offset


def start_abar(diffusion: GaussianDiffusion) -> float:
    """abar at the first sampling timestep (T - 1 with trailing spacing, whatever the step count)."""
    return float(diffusion.schedule.alphas_cumprod[diffusion.num_timesteps - 1])


def exact_model(data: GaussianData, diffusion: GaussianDiffusion) -> Model:
    """The exact denoiser of ``data`` as a network of ``diffusion``'s prediction type would output it."""
    table = diffusion.schedule.alphas_cumprod

    def model(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = table[t.long()].reshape(-1, 1, 1, 1)
        a, s = abar.sqrt(), (1.0 - abar).sqrt()
        x_t = x_in.double()
        sd = diffusion.sigma_data
        r = (s.square() + sd**2 * abar).sqrt()
        if diffusion.prediction == "edm":
            x_t = x_t * r  # the network sees x_t / r
        x0 = data.denoise(x_t, abar)
        eps = (x_t - a * x0) / s
        if diffusion.prediction == "eps":
            out = eps
        elif diffusion.prediction == "edm":
            out = (x0 - sd**2 * a / r.square() * x_t) / (s * sd / r)
        else:
            out = a * eps - s * x0
        return out.float()

    return model


def gaussian_affine(
    model: Model, diffusion: GaussianDiffusion, sampler: str, steps: int, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """The sampler's output from noise z as gain z + offset + (noise of variance ``var``), per pixel, exact
    (x0 not clipped, so every map is affine), and the network calls of one run."""
    basis = torch.stack([torch.zeros(shape), torch.ones(shape)])  # z = 0 and z = 1, every pixel
    if sampler in ODE_SAMPLERS:
        out, nfe = solve(model, diffusion, sampler, steps, basis, clip_sample=False)
        out = out.double()
        return out[1] - out[0], out[0], torch.zeros(shape, dtype=torch.float64), nfe
    # DDPM: x_{t'} = alpha x_t + beta + gamma n per step (n a fresh unit Gaussian): propagated step by step
    chosen = make_sampler(sampler, diffusion, clip_sample=False)
    chosen.set_timesteps(steps)
    gain, offset = torch.ones(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
    var = torch.zeros(shape, dtype=torch.float64)
    for t in chosen.timesteps.tolist():
        t_batch = torch.full((2,), float(t))
        output = model(diffusion.model_input(basis, t_batch), t_batch)
        taken = {}
        for level in (0.0, 1.0):  # the step's noise replaced by 0, then by 1
            chosen._noise = lambda like, generator, level=level: torch.full_like(like, level)  # type: ignore[method-assign]
            taken[level] = chosen.step(output, t, basis).prev_sample.double()
        beta = taken[0.0][0]
        alpha = taken[0.0][1] - beta
        gamma = taken[1.0][0] - beta
        gain, offset, var = alpha * gain, alpha * offset + beta, alpha.square() * var + gamma.square()
    return gain, offset, var, len(chosen.timesteps)


def gaussian_row(
    data: GaussianData, abar_start: float, sampler: str, steps: int,
    gain: torch.Tensor, offset: torch.Tensor, var: torch.Tensor, nfe: int,
) -> dict[str, Any]:  # fmt: skip
    """RMSE to the exact ODE answer from the same z (over z ~ N(0, 1) and the pixels) and the
    2-Wasserstein distance of the output distribution N(offset, gain^2 + var) to the data, in levels."""
    exact_gain, exact_offset = data.exact_gain_offset(abar_start)
    to_exact = ((gain - exact_gain).square() + (offset - exact_offset).square() + var).mean().sqrt()
    spread = (gain.square() + var).sqrt()
    w2 = ((offset - data.mean).square() + (spread - data.std).square()).mean().sqrt()
    return {
        "sampler": sampler, "steps": steps, "network_calls": nfe,
        "rmse_to_exact_ode": round(float(to_exact) * LEVELS, 5), "w2_to_data": round(float(w2) * LEVELS, 5),
        "stochastic": bool((var > 0).any()),
    }  # fmt: skip


def gaussian_case(
    data: GaussianData, diffusion: GaussianDiffusion, plan: dict[str, Sequence[int]]
) -> list[dict[str, Any]]:
    model, abar_start = exact_model(data, diffusion), start_abar(diffusion)
    rows = []
    for sampler, counts in plan.items():
        for steps in counts:
            gain, offset, var, nfe = gaussian_affine(model, diffusion, sampler, steps, tuple(data.mean.shape))
            rows.append(gaussian_row(data, abar_start, sampler, steps, gain, offset, var, nfe))
    return rows


# ----------------------------------------------------------------------------------------- the run


def train_model(work: Path, n_train: int, steps: int) -> Path:
    write_face_folder(work / "train", n_train, size=32, seed=0)
    config = TrainConfig(data=work / "train", out=work / "run", preset="tiny", resolution=RES, batch_size=32,
                         steps=steps, lr=1e-3, warmup_kimg=1.0, ema_halflife_kimg=2.0, seed=0, device="cpu",
                         precision="fp32", progress=False, report=False, sample_every_kimg=0.0,
                         sample_grid=16, sample_steps=20)  # fmt: skip
    started = time.perf_counter()
    train(config)
    print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s", flush=True)
    return work / "run"


def draw(run: Path, sampler: str, steps: int, n: int, batch: int, record: int = 0):  # noqa: ANN201
    return generate(run, n, sampler=sampler, steps=steps, seed=0, batch_size=batch, device="cpu",
                    precision="fp32", progress=False, record=record)  # fmt: skip


def model_plan(ode_steps: Sequence[int]) -> dict[str, list[int]]:
    """DDIM and DPM++ at ``ode_steps`` plus the old table's step counts; DDPM-1000 (context, old table)."""
    plan = {name: sorted({*ode_steps, *(k for s, k in CONTENDERS if s == name)}) for name in ODE_SAMPLERS}
    return {"ddpm": [k for s, k in CONTENDERS if s == "ddpm"], **plan}


def ranking(model_rows: list[dict[str, Any]], gaussian_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for sampler in ("ddim", "dpmpp", "ddpm"):
        for tolerance in TOLERANCES:
            row: dict[str, Any] = {"sampler": sampler, "tolerance_levels": tolerance}
            ode = sampler in ODE_SAMPLERS
            row["model_steps"] = steps_within(model_rows, sampler, tolerance, "rmse_median") if ode else None
            row["gaussian_steps_to_exact"] = (
                steps_within(gaussian_rows, sampler, tolerance, "rmse_to_exact_ode") if ode else None
            )
            row["gaussian_steps_w2"] = steps_within(gaussian_rows, sampler, tolerance, "w2_to_data")
            out.append(row)
    return out


def error_figure(model_rows: list[dict[str, Any]], gaussian_rows: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.6))
    left, right = figure.subplots(1, 2)
    for name in ODE_SAMPLERS:
        rows = [r for r in model_rows if r["sampler"] == name]
        left.loglog([r["steps"] for r in rows], [r["rmse_median"] for r in rows], "o-", label=name)
        rows = [r for r in gaussian_rows if r["sampler"] == name]
        right.loglog([r["steps"] for r in rows], [r["rmse_to_exact_ode"] for r in rows], "o-", label=name)
    rows = [r for r in gaussian_rows if r["sampler"] == "ddpm"]
    right.loglog(
        [r["steps"] for r in rows], [r["w2_to_data"] for r in rows], "s--", label="ddpm (W2 to data)"
    )
    for axis, title in ((left, "trained model: median RMSE to DPM++ reference"),
                        (right, "known Gaussian: RMSE to the exact ODE answer")):  # fmt: skip
        axis.axhline(TOLERANCE, color="grey", linewidth=0.8)
        axis.set_xlabel("steps")
        axis.set_ylabel("8-bit levels")
        axis.set_title(title, fontsize=9)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short training, 32 images, 1 timing round")
    parser.add_argument("--run", type=Path, help="reuse this run folder instead of training one")
    parser.add_argument("--n", type=int, default=64, help="generated and held-out images")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--train-steps", type=int, default=800)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (quality and timing)")
    parser.add_argument("--reference-steps", type=int, default=REFERENCE_STEPS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timing-batch", type=int, default=4)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_sample.html"))
    args = parser.parse_args()
    n, train_steps, rounds = (32, 150, 1) if args.quick else (args.n, args.train_steps, args.rounds)
    ode_steps = (5, 10, 20, 50) if args.quick else ODE_STEPS
    reference_steps = 200 if args.quick else args.reference_steps
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-sample-"))
    try:
        run = args.run or train_model(work, args.train_images, train_steps)
        run_config = json.loads((run / "config.json").read_text())["train"]
        write_face_folder(work / "held-out", n, size=32, seed=99)  # another seed: faces never trained on
        held_out_images = np.asarray(load_image_dataset(work / "held-out", RES, progress=False).images)
        held_out = features(held_out_images)
        model, diffusion, _ = load_snapshot(latest_snapshot(run), torch.device("cpu"))
        noise = shared_noise(n, seed=0, channels=model.config.in_channels, resolution=model.config.resolution)
        started = time.perf_counter()
        with torch.no_grad():
            _, model_rows, images = convergence(
                model, diffusion, noise, model_plan(ode_steps), reference_steps
            )
        quality_seconds = time.perf_counter() - started
        distances = {f"{s}-{k}": frechet_distance(features(to_uint8(images[(s, k)])), held_out)
                     for s, k in CONTENDERS}  # fmt: skip
        data = GaussianData.fit(held_out_images)
        gaussian_steps = {name: list(GAUSSIAN_STEPS) for name in ("ddim", "dpmpp", "ddpm")}
        with torch.no_grad():
            gaussian_rows = gaussian_case(data, diffusion, gaussian_steps)
        timings: dict[str, list[float]] = {f"{s}-{k}": [] for s, k in CONTENDERS}
        for round_index in range(rounds):  # alternate the order: forward, backward, forward ...
            order = CONTENDERS if round_index % 2 == 0 else CONTENDERS[::-1]
            for sampler, steps in order:
                started = time.perf_counter()
                draw(run, sampler, steps, args.timing_batch, batch=args.timing_batch)
                timings[f"{sampler}-{steps}"].append((time.perf_counter() - started) / args.timing_batch)
        trajectory = draw(run, "dpmpp", 20, 4, batch=4, record=4).trajectory
        animation_kib = {suffix: round(len(encode_animation(trajectory, suffix)[0]) / 1024, 1)
                         for suffix in (".gif", ".webp", ".png")}  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()
    run_options = {key: run_config[key] for key in ("preset", "resolution", "batch_size", "steps", "lr")}
    reference = distances["{}-{}".format(*CONTENDERS[0])]  # DDPM-1000, the first contender
    rows = []
    for sampler, steps in CONTENDERS:
        key = f"{sampler}-{steps}"
        seconds = timings[key]
        rows.append({
            "sampler": sampler, "steps": steps, "fd_pixels": round(distances[key], 5),
            "fd_vs_ddpm1000": round(distances[key] / reference, 3),
            "within_5pct": distances[key] <= (1 + WITHIN) * reference,
            "s_per_image_median": round(statistics.median(seconds), 4),
            "s_per_image_min": round(min(seconds), 4), "s_per_image_max": round(max(seconds), 4),
            "speedup_vs_ddpm1000": None,
        })  # fmt: skip
    ddpm_time = rows[0]["s_per_image_median"]
    for row in rows:
        row["speedup_vs_ddpm1000"] = round(ddpm_time / row["s_per_image_median"], 1)
    needed = {}
    for name in ODE_SAMPLERS:
        ok = [row["steps"] for row in rows if row["sampler"] == name and row["within_5pct"]]
        needed[name] = min(ok) if ok else None
    ranked = ranking(model_rows, gaussian_rows)

    def pick(table: list[dict[str, Any]], sampler: str, steps: int, key: str) -> float | None:
        found = [r[key] for r in table if r["sampler"] == sampler and r["steps"] == steps]
        return found[0] if found else None

    def at(sampler: str, column: str, tolerance: float = TOLERANCE) -> int | None:
        return next(
            r[column] for r in ranked if r["sampler"] == sampler and r["tolerance_levels"] == tolerance
        )

    summary = {
        "n_images": n, "resolution": RES,
        "error_measure": "per-image RMSE in 8-bit levels against DPM-Solver++ at the reference's steps from "
        "the same initial noise (median over images)",
        "reference": f"dpmpp-{reference_steps}", "reference_steps": reference_steps,
        "tolerance_levels": TOLERANCE,
        "ddim_steps_within_tolerance": at("ddim", "model_steps"),
        "dpmpp_steps_within_tolerance": at("dpmpp", "model_steps"),
        "rmse_ddim10_levels": pick(model_rows, "ddim", 10, "rmse_median"),
        "rmse_dpmpp10_levels": pick(model_rows, "dpmpp", 10, "rmse_median"),
        "rmse_ddim20_levels": pick(model_rows, "ddim", 20, "rmse_median"),
        "rmse_dpmpp20_levels": pick(model_rows, "dpmpp", 20, "rmse_median"),
        "rmse_ddpm1000_levels": pick(model_rows, "ddpm", 1000, "rmse_median"),
        "reference_check_dpmpp200_levels": pick(model_rows, "dpmpp", 200, "rmse_median"),
        "gaussian_ddim_steps_within_tolerance": at("ddim", "gaussian_steps_to_exact"),
        "gaussian_dpmpp_steps_within_tolerance": at("dpmpp", "gaussian_steps_to_exact"),
        "gaussian_ddpm_steps_w2_within_tolerance": at("ddpm", "gaussian_steps_w2"),
        "gaussian_dpmpp1000_to_exact_levels": pick(gaussian_rows, "dpmpp", 1000, "rmse_to_exact_ode"),
        "gaussian_reference_to_exact_levels": pick(
            gaussian_rows, "dpmpp", reference_steps, "rmse_to_exact_ode"
        ),
        "gaussian_ddim20_to_exact_levels": pick(gaussian_rows, "ddim", 20, "rmse_to_exact_ode"),
        "gaussian_dpmpp20_to_exact_levels": pick(gaussian_rows, "dpmpp", 20, "rmse_to_exact_ode"),
        "gaussian_min_std": MIN_STD,
        "feature_space": "pixels, 2x2-average-pooled to 4x4 RGB (48-d)",
        "fd_ddpm1000": round(reference, 5),
        "ddim_steps_within_5pct": needed["ddim"], "dpmpp_steps_within_5pct": needed["dpmpp"],
        "fd_ddim20_over_ddpm1000": rows[2]["fd_vs_ddpm1000"],
        "fd_dpmpp20_over_ddpm1000": rows[5]["fd_vs_ddpm1000"],
        "s_per_image_ddpm1000": ddpm_time, "s_per_image_dpmpp20": rows[5]["s_per_image_median"],
        "timing_rounds": rounds, "load_before": [round(v, 2) for v in load_before],
        "load_after": [round(v, 2) for v in load_after], "torch_threads": args.threads,
        "quality_seconds": round(quality_seconds, 1),
        "trained_here": args.run is None, "run_train_options": run_options,
        "diffusion": {"schedule": diffusion.schedule.name, "prediction": diffusion.prediction,
                      "timesteps": diffusion.num_timesteps},
        "animation_kib": animation_kib,
    }  # fmt: skip
    rank_text = (
        f"Steps each sampler needs to come within a tolerance (8-bit levels) and stay there at every larger "
        f"step count measured: 'model_steps' on the median per-image RMSE against DPM++-{reference_steps} "
        "from the same noise; 'gaussian_steps_to_exact' on the RMSE against the exact ODE answer of the "
        "known Gaussian; 'gaussian_steps_w2' on the 2-Wasserstein distance of the output distribution to the "
        "Gaussian data (the only score that applies to DDPM, which is stochastic). None: not within it at "
        "the largest step count measured, or not applicable."
    )
    model_text = (
        f"{n} images, each from the noise `diffkit sample` draws for it; the reference is DPM++ at "
        f"{reference_steps} steps from the same noise. RMSE per image in 8-bit levels (clipped to [-1, 1]), "
        "quantiles over the images. DDPM (stochastic) lands on another image from the same start: its row "
        "is context, not a convergence error."
    )
    gaussian_text = (
        f"x0 ~ N(mu, s^2) per pixel (mu, s of the {n} held-out faces, s >= {MIN_STD}), the run's schedule "
        f"and prediction type ({diffusion.schedule.name}, {diffusion.prediction}), the exact denoiser, x0 "
        "not clipped. 'rmse_to_exact_ode': over z ~ N(0, 1) and the pixels, against the exact ODE answer "
        "from the same z; 'w2_to_data': the output distribution's 2-Wasserstein distance to the data, both "
        "exact (affine maps read off at z = 0 and z = 1; DDPM propagated step by step)."
    )
    fd_text = ("The old measure, kept for comparison: Fréchet distance to held-out faces in pooled pixel "
               "space (same images as above); 'within_5pct': FD at most 1.05x DDPM-1000's. It does not rank "
               "the samplers. Seconds per image: median of the rounds (batch of "
               f"{args.timing_batch}, alternating order, {args.threads} torch threads), min and max beside "
               "it, each call including loading the snapshot.")  # fmt: skip
    report = Report(
        title=f"bench_sample: samplers ranked by pixel error against a DPM++-{reference_steps} reference and "
        f"against the exact Gaussian answer ({n} images, {RES} px, CPU)",
        command="bench_sample", summary=summary,
        sections=[Section(heading="Steps needed per sampler (the ranking)", text=rank_text, table=ranked,
                          figure=error_figure(model_rows, gaussian_rows)),
                  Section(heading=f"Trained model: error against DPM++-{reference_steps} from the same noise",
                          text=model_text, table=model_rows),
                  Section(heading="Known Gaussian: error against the exact answer", text=gaussian_text,
                          table=gaussian_rows),
                  Section(heading="Old measure (FD to held-out faces) and speed per sampler", text=fd_text,
                          table=rows),
                  Section(heading="Animation size (4 images, 20 DPM++ steps, 64 px tiles)",
                          table=[{"format": k, "KiB": v} for k, v in animation_kib.items()])],
        data={"rows": rows, "summary": summary, "timings": timings, "model_rows": model_rows,
              "gaussian_rows": gaussian_rows, "ranking": ranked, "fd": distances},
    )  # fmt: skip
    paths = write_report(report, args.out)
    print(f"wrote {paths.html} and {paths.json}")


if __name__ == "__main__":
    main()
