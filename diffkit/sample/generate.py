"""Images from a training run's EMA snapshot: safetensors + JSON only, nothing is ever unpickled.

Image ``i`` starts from noise drawn by its own generator (seeded from ``seed`` and ``i``), so with the
deterministic DDIM sampler (eta = 0) image ``i`` is the same whatever ``n`` and ``batch_size`` are: a
1,000-image sample is the first 1,000 of a 10,000-image one. DDPM and DDIM with eta > 0 also draw noise
at every step, per batch, so there the images depend on ``batch_size`` too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffkit.console import Bar
from diffkit.device import Precision, resolve_device
from diffkit.diffusion import make_sampler, run_sampler
from diffkit.errors import DiffkitError
from diffkit.report.grid import to_uint8
from diffkit.runs import load_snapshot, resolve_snapshot

_SEED_STRIDE = 1_000_003  # image i of seed s uses generator seed s * stride + i
_STEP_NOISE_OFFSET = 2**40  # per-step noise of a batch: a seed range the initial noise never uses


def initial_noise(indices: range, channels: int, resolution: int, seed: int) -> torch.Tensor:
    noises = []
    for index in indices:
        generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + index)
        noises.append(torch.randn(channels, resolution, resolution, generator=generator))
    return torch.stack(noises)


@torch.no_grad()
def generate_images(
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
) -> np.ndarray:
    """``n`` images (N, H, W, 3) uint8 from the run's latest EMA snapshot (or ``snapshot``)."""
    if n < 1 or batch_size < 1:
        raise DiffkitError(f"n and batch_size must be at least 1 (got n={n}, batch_size={batch_size})")
    path = resolve_snapshot(run, snapshot)
    torch_device = resolve_device(device)
    autocast = Precision.create(precision, torch_device)
    model, diffusion, _ = load_snapshot(path, torch_device)
    sampler_impl = make_sampler(sampler, diffusion, eta=eta)
    config = model.config
    out = np.empty((n, config.resolution, config.resolution, config.output_channels), dtype=np.uint8)
    with Bar("sample", total=n, enabled=progress) as bar:
        for start in range(0, n, batch_size):
            indices = range(start, min(start + batch_size, n))
            noise = initial_noise(indices, config.in_channels, config.resolution, seed).to(torch_device)
            generator = torch.Generator().manual_seed(_STEP_NOISE_OFFSET + seed * _SEED_STRIDE + start)
            with autocast.autocast():
                images = run_sampler(model, sampler_impl, noise, steps, generator)
            out[start : start + len(indices)] = to_uint8(images)
            bar.update(advance=len(indices))
    return out
