"""Images from a training run's EMA snapshot: safetensors + JSON only, nothing is ever unpickled.

Image ``i`` starts from noise drawn by its own generator (seeded from ``seed`` and ``i``), so with the
deterministic samplers (DDIM with eta = 0, DPM-Solver++) image ``i`` is the same whatever ``n`` and
``batch_size`` are: a 1,000-image sample is the first 1,000 of a 10,000-image one. DDPM and DDIM with
eta > 0 also draw noise at every step, per batch, so there the images depend on ``batch_size`` too.

A class-conditional run samples one class with ``label`` and classifier-free ``guidance``
(:mod:`diffkit.diffusion.guidance`), or unconditionally (its null label) without ``label``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffkit.console import Bar
from diffkit.device import Precision, resolve_device
from diffkit.diffusion.guidance import guided_model
from diffkit.diffusion.pixels import to_uint8
from diffkit.diffusion.samplers import SamplerOutput, make_sampler, run_sampler
from diffkit.runs.snapshots import load_snapshot
from diffkit.sample.options import SamplingOptions

_SEED_STRIDE = 1_000_003  # image i of seed s uses generator seed s * stride + i
_STEP_NOISE_OFFSET = 2**40  # per-step noise of a batch: a seed range the initial noise never uses


@dataclass
class Trajectory:
    """The first ``traced`` images' denoising: per step, the input x_t and the predicted x_0 (NHWC uint8)."""

    traced: int = 0
    timesteps: list[int] = field(default_factory=list)
    x_t: list[np.ndarray] = field(default_factory=list)
    x0: list[np.ndarray] = field(default_factory=list)
    final: np.ndarray | None = None


@dataclass
class Generated:
    images: np.ndarray  # (N, H, W, 3) uint8
    label_index: int | None
    guidance: float | None
    trajectory: Trajectory | None


def initial_noise(indices: range, channels: int, resolution: int, seed: int) -> torch.Tensor:
    noises = []
    for index in indices:
        generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + index)
        noises.append(torch.randn(channels, resolution, resolution, generator=generator))
    return torch.stack(noises)


@torch.no_grad()
def generate_batches(
    options: SamplingOptions, *, progress: bool = True, trajectory: Trajectory | None = None
) -> Iterator[np.ndarray]:
    """The ``options.n`` images in order, as (B, H, W, 3) uint8 batches of at most ``options.batch_size``.

    One batch is held at a time, so memory does not grow with N. ``trajectory`` (when given) records
    the denoising of the first batch's first ``trajectory.traced`` images.
    """
    torch_device = resolve_device(options.device)
    autocast = Precision.create(options.precision, torch_device)
    model, diffusion, _ = load_snapshot(options.snapshot, torch_device)
    config = model.config
    network = model
    if options.label_index is not None:
        assert options.guidance is not None  # resolve() gives a label its weight
        network = guided_model(model, options.label_index, options.guidance, config.num_classes)
    sampler = make_sampler(options.sampler, diffusion, eta=options.eta)
    record = trajectory.traced if trajectory is not None else 0

    def trace(t: int, x_t: torch.Tensor, output: SamplerOutput) -> None:
        assert trajectory is not None
        trajectory.timesteps.append(int(t))
        trajectory.x_t.append(to_uint8(x_t[:record]))
        trajectory.x0.append(to_uint8(output.pred_original_sample[:record]))

    n, seed = options.n, options.seed
    with Bar("sample", total=n, enabled=progress) as bar:
        for start in range(0, n, options.batch_size):
            indices = range(start, min(start + options.batch_size, n))
            noise = initial_noise(indices, config.in_channels, config.resolution, seed).to(torch_device)
            generator = torch.Generator().manual_seed(_STEP_NOISE_OFFSET + seed * _SEED_STRIDE + start)
            on_output = trace if record > 0 and start == 0 else None
            with autocast.autocast():
                sampled = run_sampler(network, sampler, noise, options.steps, generator, on_output=on_output)
            images = to_uint8(sampled)
            if on_output is not None and trajectory is not None and trajectory.x_t:
                # only the first batch is traced: it may hold fewer images than asked for
                trajectory.final = images[: len(trajectory.x_t[0])].copy()
            bar.update(advance=len(indices))
            yield images


def generate(
    run: Path | None,
    n: int,
    *,
    sampler: str = "ddim",
    steps: int = 50,
    eta: float = 0.0,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "auto",
    snapshot: Path | None = None,
    progress: bool = True,
    precision: str = "auto",
    label: str | None = None,
    guidance: float | None = None,
    record: int = 0,
) -> Generated:
    """All ``n`` images in one array, for library use (``diffkit sample`` writes them batch by batch).

    ``record``: the first images traced for an animation.
    """
    options = SamplingOptions.resolve(
        run, n, snapshot=snapshot, sampler=sampler, steps=steps, eta=eta, seed=seed, batch_size=batch_size,
        device=device, precision=precision, label=label, guidance=guidance,
    )  # fmt: skip
    trajectory = Trajectory(traced=record) if record > 0 else None
    out: np.ndarray | None = None
    start = 0
    for batch in generate_batches(options, progress=progress, trajectory=trajectory):
        if out is None:
            out = np.empty((n, *batch.shape[1:]), dtype=np.uint8)
        out[start : start + len(batch)] = batch
        start += len(batch)
    assert out is not None and start == n
    return Generated(out, options.label_index, options.guidance, trajectory)


def generate_images(run: Path | None, n: int, **options: Any) -> np.ndarray:
    """``n`` images (N, H, W, 3) uint8; the options are :func:`generate`'s."""
    return generate(run, n, **options).images
