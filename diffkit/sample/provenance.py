"""Which run made a folder of generated images: ``provenance.json``, written beside the PNGs.

``diffkit sample`` and ``diffkit eval --run`` write it after the last PNG (and remove a stale one before
the first), so a folder that carries it holds exactly the images it describes. ``diffkit eval`` copies it
into its sidecar, and the run page credits an eval to a run only when this file names that run: an eval
of any two folders is never mistaken for a run's result because its reference is the run's data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open

from diffkit.atomic import atomic_write_text
from diffkit.runs.snapshots import snapshot_step
from diffkit.sample.options import SamplingOptions

PROVENANCE_FILE = "provenance.json"
SCHEMA = "diffkit.provenance/1"
# A provenance file is a few hundred bytes; anything far larger is not one (never read it whole).
MAX_BYTES = 64 * 1024


def snapshot_kimg(snapshot: Path) -> float | None:
    """How far the snapshot was trained, in thousands of training images, from its metadata.

    The metadata, not the name: ``ema-000000.safetensors`` is any snapshot before 1 kimg.
    """
    try:
        with safe_open(str(snapshot), framework="pt") as handle:
            return int((handle.metadata() or {})["nimg"]) / 1000
    except Exception:  # not safetensors, truncated, or no nimg in the metadata
        return None


def provenance_of(options: SamplingOptions, command: str) -> dict[str, Any]:
    """What made ``options.n`` images: the run, its snapshot (and how far it was trained), the sampling."""
    snapshot = options.snapshot
    return {
        "schema": SCHEMA,
        "command": command,
        "run": str(snapshot.parent),
        "snapshot": str(snapshot),
        "snapshot_kimg": snapshot_kimg(snapshot),
        "snapshot_step": snapshot_step(snapshot),
        "sampler": options.sampler,
        "steps": options.steps,
        "eta": options.eta,
        "seed": options.seed,
        "n": options.n,
        "resolution": options.resolution,
        "label": options.label,
        "guidance": options.guidance,
    }


def clear_provenance(folder: Path) -> None:
    """Before the first PNG: a folder being (re)written must not keep the old images' provenance."""
    (folder / PROVENANCE_FILE).unlink(missing_ok=True)


def write_provenance(folder: Path, options: SamplingOptions, command: str) -> Path:
    """After the last PNG: atomically, so a reader sees the whole record or none."""
    path = folder / PROVENANCE_FILE
    atomic_write_text(path, json.dumps(provenance_of(options, command), indent=2) + "\n", durable=False)
    return path


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """The folder's provenance, or None when it has none (or one that is not a diffkit provenance)."""
    path = folder / PROVENANCE_FILE
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_BYTES:
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        return None
    if not isinstance(record.get("run"), str):
        return None
    return record


def made_by(record: dict[str, Any]) -> str:
    """``ema-000010.safetensors of runs/00001-tiny (10 kimg), DDIM 50 steps, seed 0, N=64``."""
    snapshot = Path(str(record.get("snapshot", "?")))
    kimg = record.get("snapshot_kimg")
    trained = f" ({kimg:g} kimg)" if isinstance(kimg, (int, float)) else ""
    parts = [
        f"{snapshot.name} of {record.get('run')}{trained}",
        f"{str(record.get('sampler', '?')).upper()} {record.get('steps')} steps",
        f"seed {record.get('seed')}",
        f"N={record.get('n')}",
    ]
    if record.get("label") is not None:
        parts.append(f"label {record['label']}, guidance {record.get('guidance')}")
    return ", ".join(parts)
