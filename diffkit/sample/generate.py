"""Images from a training run's EMA snapshot: safetensors + JSON only, nothing is ever unpickled.

Image ``i`` starts from noise drawn by its own generator (seeded from ``seed`` and ``i``), so with the
deterministic DDIM sampler (eta = 0) image ``i`` is the same whatever ``n`` and ``batch_size`` are: a
1,000-image sample is the first 1,000 of a 10,000-image one. DDPM and DDIM with eta > 0 also draw noise
at every step, per batch, so there the images depend on ``batch_size`` too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from safetensors import safe_open
from safetensors.torch import load_file

from diffkit.diffusion import PREDICTIONS, SCHEDULES, GaussianDiffusion, make_sampler, run_sampler
from diffkit.errors import DiffkitError
from diffkit.models import UNet, UNetConfig
from diffkit.sample.grid import to_uint8
from diffkit.train.checkpoint import SNAPSHOT_FORMAT, latest_snapshot, read_run_config
from diffkit.train.config import TrainConfig
from diffkit.train.precision import Precision, resolve_device

_SEED_STRIDE = 1_000_003  # image i of seed s uses generator seed s * stride + i
_STEP_NOISE_OFFSET = 2**40  # per-step noise of a batch: a seed range the initial noise never uses
# The schedule tables are allocated per timestep; a config asking for 10**12 of them is damaged.
MAX_TIMESTEPS = 100_000
_DIFFUSION_KEYS = ("schedule", "prediction", "timesteps", "min_snr_gamma")
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


def load_run_config(run: Path) -> TrainConfig:
    """The training options a run was made with (its ``config.json``)."""
    return TrainConfig.from_dict(read_run_config(Path(run))["train"])


def _damaged(snapshot: Path, what: str) -> DiffkitError:
    return DiffkitError(f"snapshot {snapshot}: {what}; it is damaged or not a diffkit EMA snapshot")


def snapshot_payload(snapshot: Path) -> dict[str, Any]:
    """The run config stored in a snapshot's metadata, else the ``config.json`` beside it."""
    try:
        with safe_open(str(snapshot), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # not a safetensors file, or truncated
        raise DiffkitError(f"cannot read {snapshot} as safetensors ({exc})") from None
    if metadata.get("format") == SNAPSHOT_FORMAT and "config" in metadata:
        try:
            payload = json.loads(metadata["config"])
        except json.JSONDecodeError as exc:
            raise _damaged(snapshot, f"the config in its metadata is not valid JSON ({exc})") from None
    else:
        payload = read_run_config(snapshot.parent)
    _check_payload(snapshot, payload)
    return payload


def _check_payload(snapshot: Path, payload: Any) -> None:
    """The parts of the run config sampling needs, present and of the right types."""
    if not isinstance(payload, dict):
        raise _damaged(snapshot, f"its config is a JSON {type(payload).__name__}, not an object")
    missing = [key for key in ("model", "diffusion") if not isinstance(payload.get(key), dict)]
    if missing:
        raise _damaged(snapshot, f"its config has no {' or '.join(missing)} section")
    d = payload["diffusion"]
    problems = [f"diffusion.{key} is missing" for key in _DIFFUSION_KEYS if key not in d]
    if not problems:
        if d["schedule"] not in SCHEDULES or d["prediction"] not in PREDICTIONS:
            problems.append(
                f"unknown diffusion schedule or prediction ({d['schedule']!r}, {d['prediction']!r})"
            )
        steps = d["timesteps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= MAX_TIMESTEPS:
            problems.append(
                f"diffusion.timesteps must be an integer from 2 to {MAX_TIMESTEPS} (got {steps!r})"
            )
        gamma = d["min_snr_gamma"]
        if gamma is not None and (
            isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0
        ):
            problems.append(f"diffusion.min_snr_gamma must be a positive number or null (got {gamma!r})")
    if problems:
        raise _damaged(snapshot, "; ".join(problems))


def _model_config(snapshot: Path, payload: dict[str, Any]) -> UNetConfig:
    try:  # validates types and size (parameter count) before anything is allocated
        config = UNetConfig.from_dict(payload["model"])
    except DiffkitError as exc:
        raise _damaged(snapshot, str(exc).rstrip(".")) from None
    if config.in_channels != 3 or config.output_channels != 3:
        raise _damaged(snapshot, "its model is not an RGB model (in and out channels must be 3)")
    return config


def _check_tensors(snapshot: Path, config: UNetConfig) -> None:
    """Names, shapes and dtypes of the stored tensors against the config, read from the header only."""
    with torch.device("meta"):  # the expected shapes, without allocating the weights
        expected = {name: tuple(t.shape) for name, t in UNet(config).state_dict().items()}
    with safe_open(str(snapshot), framework="pt") as handle:
        stored = {name: handle.get_slice(name) for name in handle.keys()}  # noqa: SIM118 (not a dict)
        shapes = {name: tuple(part.get_shape()) for name, part in stored.items()}
        dtypes = {name: part.get_dtype() for name, part in stored.items()}
    missing, unexpected = sorted(expected.keys() - shapes.keys()), sorted(shapes.keys() - expected.keys())
    if missing or unexpected:
        parts = [f"{len(missing)} tensors missing (first: {missing[0]})"] if missing else []
        parts += [f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})"] if unexpected else []
        raise _damaged(snapshot, "its tensors do not match its model config: " + ", ".join(parts))
    for name, shape in expected.items():
        if shapes[name] != shape:
            raise _damaged(
                snapshot,
                f"tensor {name} has shape {list(shapes[name])}, its model config needs {list(shape)}",
            )
        if dtypes[name] not in _FLOAT_DTYPES:
            raise _damaged(snapshot, f"tensor {name} has dtype {dtypes[name]}, not a floating-point type")


def load_snapshot(snapshot: Path, device: torch.device) -> tuple[UNet, GaussianDiffusion, dict[str, Any]]:
    """An eval-mode EMA U-Net and its diffusion process, from safetensors and JSON only.

    Everything in the file is checked before it is used (config types and size, tensor names, shapes,
    dtypes, finite values), so a damaged or foreign snapshot gives one ``DiffkitError`` naming the file.
    """
    payload = snapshot_payload(snapshot)
    config = _model_config(snapshot, payload)
    _check_tensors(snapshot, config)
    tensors = load_file(str(snapshot), device="cpu")
    bad = next((name for name, value in tensors.items() if not torch.isfinite(value).all()), None)
    if bad is not None:
        raise _damaged(snapshot, f"tensor {bad} holds NaN or infinite values")
    model = UNet(config)
    model.load_state_dict(tensors)
    model.to(device).eval().requires_grad_(False)
    d = payload["diffusion"]
    diffusion = GaussianDiffusion.create(d["schedule"], d["prediction"], d["timesteps"], d["min_snr_gamma"])
    return model, diffusion, payload


def resolve_snapshot(run: Path | None, snapshot: Path | None) -> Path:
    if snapshot is not None:
        if not Path(snapshot).is_file():
            raise DiffkitError(f"snapshot {snapshot} not found")
        return Path(snapshot)
    if run is None or not Path(run).is_dir():
        raise DiffkitError(f"run folder {run} not found; pass --run runs/NNNNN-name")
    return latest_snapshot(Path(run))


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
    columns = (TextColumn("[bold]sample"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress, transient=True) as bar:
        task = bar.add_task("sample", total=n)
        for start in range(0, n, batch_size):
            indices = range(start, min(start + batch_size, n))
            noise = initial_noise(indices, config.in_channels, config.resolution, seed).to(torch_device)
            generator = torch.Generator().manual_seed(_STEP_NOISE_OFFSET + seed * _SEED_STRIDE + start)
            with autocast.autocast():
                images = run_sampler(model, sampler_impl, noise, steps, generator)
            out[start : start + len(indices)] = to_uint8(images)
            bar.update(task, advance=len(indices))
    return out
