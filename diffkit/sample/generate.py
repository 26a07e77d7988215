"""Images from a training run's EMA snapshot: safetensors + JSON only, nothing is ever unpickled.

Image ``i`` starts from noise drawn by its own generator (seeded from ``seed`` and ``i``), so with the
deterministic samplers (DDIM with eta = 0, DPM-Solver++) image ``i`` is the same whatever ``n`` and
``batch_size`` are: a 1,000-image sample is the first 1,000 of a 10,000-image one. DDPM and DDIM with
eta > 0 also draw noise at every step, per batch, so there the images depend on ``batch_size`` too.

A class-conditional run samples one class with ``label`` and classifier-free ``guidance``
(:mod:`diffkit.diffusion.guidance`), or unconditionally (its null label) without ``label``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffkit.console import Bar, shown
from diffkit.device import Precision, resolve_device
from diffkit.diffusion.guidance import guided_model
from diffkit.diffusion.pixels import to_uint8
from diffkit.diffusion.samplers import SamplerOutput, make_sampler, run_sampler
from diffkit.errors import DiffkitError
from diffkit.runs.folder import class_names
from diffkit.runs.snapshots import load_snapshot, resolve_snapshot
from diffkit.sample.config import DEFAULT_GUIDANCE

_SEED_STRIDE = 1_000_003  # image i of seed s uses generator seed s * stride + i
_STEP_NOISE_OFFSET = 2**40  # per-step noise of a batch: a seed range the initial noise never uses


@dataclass
class Trajectory:
    """The first few images' denoising: per step, the input x_t and the predicted x_0 (NHWC uint8)."""

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


def resolve_label(payload: dict[str, Any], label: str | None, guidance: float | None) -> int | None:
    """The class index of ``label`` in the run, with one clear error for every way it can be wrong."""
    names = class_names(payload)
    labels = payload.get("labels") or {}
    dropout = labels.get("label_dropout") if isinstance(labels, dict) else None
    if label is None:
        if guidance is not None:
            raise DiffkitError("--guidance needs --label NAME (unconditional samples use no guidance)")
        if names and dropout == 0:
            raise DiffkitError(
                "this run was trained with --label-dropout 0, so its unconditional (null) label was never "
                f"trained; pass --label NAME with one of: {', '.join(map(shown, names))}"
            )
        return None
    if not names:
        raise DiffkitError(
            f"--label {shown(label)}: this run was trained without labels; train on labelled data "
            "(one subfolder per class, or a label column in metadata.jsonl) to sample a class"
        )
    if label not in names:
        raise DiffkitError(
            f"--label {shown(label)} is not a class of this run; its classes: {', '.join(map(shown, names))}"
        )
    if dropout == 0 and (guidance is None or guidance > 0):
        raise DiffkitError(
            "this run was trained with --label-dropout 0 (no unconditional model), so it cannot be "
            "guided; pass --guidance 0"
        )
    return names.index(label)


@torch.no_grad()
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
    """``n`` images from the run's latest EMA snapshot (or ``snapshot``); ``record`` first ones traced."""
    if n < 1 or batch_size < 1:
        raise DiffkitError(f"n and batch_size must be at least 1 (got n={n}, batch_size={batch_size})")
    path = resolve_snapshot(run, snapshot)
    torch_device = resolve_device(device)
    autocast = Precision.create(precision, torch_device)
    model, diffusion, payload = load_snapshot(path, torch_device)
    label_index = resolve_label(payload, label, guidance)
    weight = None if label_index is None else (DEFAULT_GUIDANCE if guidance is None else guidance)
    network = (
        model if label_index is None else guided_model(model, label_index, weight, model.config.num_classes)
    )
    sampler_impl = make_sampler(sampler, diffusion, eta=eta)
    config = model.config
    out = np.empty((n, config.resolution, config.resolution, config.output_channels), dtype=np.uint8)
    trajectory = Trajectory() if record > 0 else None

    def trace(t: int, x_t: torch.Tensor, output: SamplerOutput) -> None:
        assert trajectory is not None
        trajectory.timesteps.append(int(t))
        trajectory.x_t.append(to_uint8(x_t[:record]))
        trajectory.x0.append(to_uint8(output.pred_original_sample[:record]))

    with Bar("sample", total=n, enabled=progress) as bar:
        for start in range(0, n, batch_size):
            indices = range(start, min(start + batch_size, n))
            noise = initial_noise(indices, config.in_channels, config.resolution, seed).to(torch_device)
            generator = torch.Generator().manual_seed(_STEP_NOISE_OFFSET + seed * _SEED_STRIDE + start)
            on_output = trace if trajectory is not None and start == 0 else None
            with autocast.autocast():
                images = run_sampler(network, sampler_impl, noise, steps, generator, on_output=on_output)
            out[start : start + len(indices)] = to_uint8(images)
            bar.update(advance=len(indices))
    if trajectory is not None and trajectory.x_t:  # only the first batch is traced: it may hold fewer
        trajectory.final = out[: len(trajectory.x_t[0])].copy()
    return Generated(out, label_index, weight, trajectory)


def generate_images(run: Path | None, n: int, **options: Any) -> np.ndarray:
    """``n`` images (N, H, W, 3) uint8; the options are :func:`generate`'s."""
    return generate(run, n, **options).images
