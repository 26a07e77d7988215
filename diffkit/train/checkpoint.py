"""What a run folder holds, written so that a kill at any moment leaves a usable run.

- ``config.json``: the resolved config (train options, model config, plan), the one file that says
  how to rebuild the network.
- ``state-latest.pt``: everything ``--resume`` needs for a bit-exact continuation (model, EMA,
  optimiser, grad scaler, step/nimg, RNG states, the batcher's position). Written atomically; read
  with ``weights_only=True``, so even this file cannot run code when loaded.
- ``ema-<kimg:06d>.safetensors``: EMA weights only, with the config in the safetensors metadata too.
  Sampling and eval use these and never unpickle anything.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_save
from torch import nn

from diffkit.atomic import atomic_open, atomic_write_bytes, atomic_write_text
from diffkit.errors import DiffkitError

CONFIG_FILE = "config.json"
STATE_FILE = "state-latest.pt"
STATS_FILE = "stats.jsonl"
SAMPLES_DIR = "samples"
PROGRESSION_FILE = "progression.png"
SNAPSHOT_FORMAT = "diffkit-ema-v1"
STATE_FORMAT = 1
_SNAPSHOT_NAME = re.compile(r"^ema-(\d{6,})\.safetensors$")


def snapshot_name(nimg: int) -> str:
    return f"ema-{nimg // 1000:06d}.safetensors"


def write_run_config(run_dir: Path, payload: dict[str, Any]) -> Path:
    path = run_dir / CONFIG_FILE
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise DiffkitError(f"{path} not found; is {run_dir} a diffkit training run folder?")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DiffkitError(f"{path} is not readable JSON ({exc}); the run folder is damaged") from None


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_open(path, "wb") as handle:
        torch.save({"format": STATE_FORMAT, **state}, handle)


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DiffkitError(f"{path} not found; nothing to resume (start the run without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file, or one that holds pickled code: say which one
        raise DiffkitError(f"cannot read {path} ({_load_error(exc)}); the resume state is damaged") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DiffkitError(f"{path} is not a diffkit resume state (format {STATE_FORMAT})")
    return state


def _load_error(exc: Exception) -> str:
    """One line for torch.load's error; a refused global is named, not followed by torch's page of advice."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    refused = next((line for line in lines if "Unsupported global" in line), None)
    if refused is not None:
        found = refused.split("Unsupported global:", 1)[-1].strip().split(" was not")[0]
        return f"it holds a pickled object ({found}), which diffkit never unpickles"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]


def save_ema_snapshot(run_dir: Path, model: nn.Module, nimg: int, step: int, config: dict[str, Any]) -> Path:
    """EMA weights as safetensors (contiguous, CPU) with the run config in the metadata."""
    tensors = {name: value.detach().to("cpu").contiguous() for name, value in model.state_dict().items()}
    metadata = {
        "format": SNAPSHOT_FORMAT,
        "nimg": str(nimg),
        "step": str(step),
        "config": json.dumps(config, sort_keys=False),
    }
    path = run_dir / snapshot_name(nimg)
    atomic_write_bytes(path, safetensors_save(tensors, metadata=metadata))
    return path


def list_snapshots(run_dir: Path) -> list[Path]:
    """Snapshots in the run folder, oldest first (by the kimg in the name)."""
    found = [
        (int(m.group(1)), p) for p in run_dir.glob("ema-*.safetensors") if (m := _SNAPSHOT_NAME.match(p.name))
    ]
    return [p for _, p in sorted(found)]


def latest_snapshot(run_dir: Path) -> Path:
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise DiffkitError(
            f"no ema-*.safetensors snapshot in {run_dir}; train longer or resume the run to write one"
        )
    return snapshots[-1]
