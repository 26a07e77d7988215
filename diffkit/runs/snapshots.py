"""``ema-<kimg:06d>.safetensors``: EMA weights with the run config in the metadata.

Sampling and eval use these and never unpickle anything. Everything in a snapshot is checked before it
is used (config types and size, tensor names, shapes, dtypes, finite values), so a damaged or foreign
snapshot gives one ``DiffkitError`` naming the file, and an absurd config is refused from its numbers
before anything is allocated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_save
from torch import nn

from diffkit.atomic import atomic_write_bytes
from diffkit.diffusion.gaussian import EDM_SIGMA_DATA, GaussianDiffusion
from diffkit.diffusion.names import PREDICTIONS, SCHEDULES
from diffkit.errors import DiffkitError
from diffkit.models.config import UNetConfig
from diffkit.models.unet import UNet
from diffkit.runs.folder import SNAPSHOT_NAME, class_names, read_run_config, snapshot_name

SNAPSHOT_FORMAT = "diffkit-ema-v1"
# The schedule tables are allocated per timestep; a config asking for 10**12 of them is damaged.
MAX_TIMESTEPS = 100_000
DIFFUSION_KEYS = ("schedule", "prediction", "timesteps", "min_snr_gamma")
_FLOAT_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})


def save_ema_snapshot(
    run_dir: Path,
    model: nn.Module | dict[str, torch.Tensor],
    nimg: int,
    step: int,
    config: dict[str, Any],
    *,
    path: Path | None = None,
    extra: dict[str, str] | None = None,
) -> Path:
    """EMA weights as safetensors (contiguous, CPU) with the run config in the metadata.

    ``path``: where (default ``run_dir/ema-<kimg>.safetensors``); ``extra``: more metadata (a post-hoc
    EMA profile's sigma_rel). ``model`` may be a state dict (a reconstructed post-hoc EMA).
    """
    state = model if isinstance(model, dict) else model.state_dict()
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in state.items()}
    metadata = {
        "format": SNAPSHOT_FORMAT,
        "nimg": str(nimg),
        "step": str(step),
        "config": json.dumps(config, sort_keys=False),
    } | (extra or {})
    path = path if path is not None else run_dir / snapshot_name(nimg)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, safetensors_save(tensors, metadata=metadata))
    return path


def snapshot_step(snapshot: Path) -> int | None:
    """The step a snapshot was taken after, from its metadata (None when it does not say)."""
    try:
        with safe_open(str(snapshot), framework="pt") as handle:
            return int((handle.metadata() or {})["step"])
    except Exception:  # not safetensors, truncated, or no step in the metadata
        return None


def list_snapshots(run_dir: Path) -> list[Path]:
    """Snapshots in the run folder, oldest first (by the kimg in the name)."""
    found = [
        (int(m.group(1)), p) for p in run_dir.glob("ema-*.safetensors") if (m := SNAPSHOT_NAME.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_snapshot(run_dir: Path) -> Path:
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise DiffkitError(
            f"no ema-*.safetensors snapshot in {run_dir}; train longer or resume the run to write one"
        )
    return snapshots[-1]


def resolve_snapshot(run: Path | None, snapshot: Path | None) -> Path:
    """``snapshot`` when given, else the latest snapshot of the run folder ``run``."""
    if snapshot is not None:
        if not Path(snapshot).is_file():
            raise DiffkitError(f"snapshot {snapshot} not found")
        return Path(snapshot)
    if run is None or not Path(run).is_dir():
        raise DiffkitError(f"run folder {run} not found; pass --run runs/NNNNN-name")
    return latest_snapshot(Path(run))


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


def _diffusion_problems(d: dict[str, Any]) -> list[str]:
    problems = [f"diffusion.{key} is missing" for key in DIFFUSION_KEYS if key not in d]
    if problems:
        return problems
    if d["schedule"] not in SCHEDULES or d["prediction"] not in PREDICTIONS:
        problems.append(f"unknown diffusion schedule or prediction ({d['schedule']!r}, {d['prediction']!r})")
    steps = d["timesteps"]
    if not isinstance(steps, int) or isinstance(steps, bool) or not 2 <= steps <= MAX_TIMESTEPS:
        problems.append(f"diffusion.timesteps must be an integer from 2 to {MAX_TIMESTEPS} (got {steps!r})")
    gamma = d["min_snr_gamma"]
    if gamma is not None and (isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0):
        problems.append(f"diffusion.min_snr_gamma must be a positive number or null (got {gamma!r})")
    sigma_data = d.get("sigma_data", EDM_SIGMA_DATA)  # written by edm runs only
    if isinstance(sigma_data, bool) or not isinstance(sigma_data, (int, float)) or not 0 < sigma_data < 1e3:
        problems.append(f"diffusion.sigma_data must be a positive number (got {sigma_data!r})")
    return problems


def _check_payload(snapshot: Path, payload: Any) -> None:
    """The parts of the run config sampling needs, present and of the right types."""
    if not isinstance(payload, dict):
        raise _damaged(snapshot, f"its config is a JSON {type(payload).__name__}, not an object")
    missing = [key for key in ("model", "diffusion") if not isinstance(payload.get(key), dict)]
    if missing:
        raise _damaged(snapshot, f"its config has no {' or '.join(missing)} section")
    problems = _diffusion_problems(payload["diffusion"])
    if problems:
        raise _damaged(snapshot, "; ".join(problems))


def _model_config(snapshot: Path, payload: dict[str, Any]) -> UNetConfig:
    try:  # validates types and size (parameter count) before anything is allocated
        config = UNetConfig.from_dict(payload["model"])
    except DiffkitError as exc:
        raise _damaged(snapshot, str(exc).rstrip(".")) from None
    if config.in_channels != 3 or config.output_channels != 3:
        raise _damaged(snapshot, "its model is not an RGB model (in and out channels must be 3)")
    try:
        names = class_names(payload)
    except DiffkitError as exc:
        raise _damaged(snapshot, str(exc).split(";")[0]) from None
    if len(names) != config.num_classes:
        raise _damaged(snapshot, f"it names {len(names)} classes but its model has {config.num_classes}")
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
    """An eval-mode EMA U-Net and its diffusion process, from safetensors and JSON only."""
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
    diffusion = GaussianDiffusion.create(
        d["schedule"], d["prediction"], d["timesteps"], d["min_snr_gamma"],
        sigma_data=float(d.get("sigma_data", EDM_SIGMA_DATA)),
    )  # fmt: skip
    return model, diffusion, payload
