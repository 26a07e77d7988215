"""The run folder: its file names, numbered folders, ``config.json``, and the symlink check.

A run folder holds (NVlabs/edm style, ``runs/00000-small``, ``runs/00001-tiny``, ...):

- ``config.json``: the resolved run config (train options, model config, diffusion, plan), the one
  file that says how to rebuild the network.
- ``state-latest.pt``: everything ``--resume`` needs (see :mod:`diffkit.runs.state`).
- ``ema-<kimg:06d>.safetensors``: EMA weights only (see :mod:`diffkit.runs.snapshots`).
- ``stats.jsonl``, ``samples/grid-<nimg:09d>.png``, ``progression.png``: the training's record.
- ``generated/`` (``diffkit sample``) and ``eval-samples-<n>-seed<s>/`` (``diffkit eval --run``).

A run folder is written to for hours, so before any of that it is checked for symlinks: a planted
``state-latest.pt -> ~/.bashrc`` or ``samples -> /elsewhere`` would otherwise be read from, or written
through, on the next run or resume.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from diffkit.atomic import atomic_write_text
from diffkit.errors import DiffkitError
from diffkit.safepath import unsafe_reason

CONFIG_FILE = "config.json"
STATE_FILE = "state-latest.pt"
STATS_FILE = "stats.jsonl"
EVAL_KIND = "eval"  # the "kind" of a FID/KID-while-training line in stats.jsonl (loss lines have none)
SAMPLES_DIR = "samples"
PROGRESSION_FILE = "progression.png"
GENERATED_DIR = "generated"
RUN_FORMAT = "diffkit-run-v1"
_RUN_NAME = re.compile(r"^(\d{5})-")
_GRID_NAME = re.compile(r"^grid-(\d+)\.png$")
SNAPSHOT_NAME = re.compile(r"^ema-(\d{6,})\.safetensors$")
# Post-hoc EMA (--phema-every-kimg): phema/pema-<sigma_rel>-<nimg>.safetensors, the stored profiles.
PHEMA_DIR = "phema"
TENSORBOARD_DIR = "tensorboard"  # TensorBoard event files (diffkit train --tensorboard), one per session
PHEMA_NAME = re.compile(r"^pema-(\d\.\d{3})-(\d{9,})\.safetensors$")
# Files and folders a training run writes, and the patterns of those it writes many of.
_WRITTEN = (CONFIG_FILE, STATE_FILE, STATS_FILE, PROGRESSION_FILE, SAMPLES_DIR, PHEMA_DIR, TENSORBOARD_DIR)
_WRITTEN_PATTERNS = (re.compile(r"^ema-\d+\.safetensors$"),)


def snapshot_name(nimg: int) -> str:
    return f"ema-{nimg // 1000:06d}.safetensors"


def phema_path(run_dir: Path, sigma_rel: float, nimg: int) -> Path:
    return run_dir / PHEMA_DIR / f"pema-{sigma_rel:.3f}-{nimg:09d}.safetensors"


def list_phema(run_dir: Path) -> list[tuple[float, int, Path]]:
    """The stored post-hoc EMA profiles as (sigma_rel, nimg, path), oldest first."""
    found = [
        (float(m.group(1)), int(m.group(2)), p)
        for p in (run_dir / PHEMA_DIR).glob("pema-*.safetensors")
        if (m := PHEMA_NAME.match(p.name))
    ]
    return sorted(found, key=lambda item: (item[1], item[0]))


def grid_path(run_dir: Path, nimg: int) -> Path:
    return run_dir / SAMPLES_DIR / f"grid-{nimg:09d}.png"


def list_grids(run_dir: Path) -> list[tuple[int, Path]]:
    """The fixed-noise training grids as (nimg, path), oldest first."""
    found = [
        (int(m.group(1)), p)
        for p in (run_dir / SAMPLES_DIR).glob("grid-*.png")
        if (m := _GRID_NAME.match(p.name))
    ]
    return sorted(found)


def eval_samples_dir(run_dir: Path, n: int, seed: int) -> Path:
    """Where ``diffkit eval --run`` keeps the ``n`` images it sampled with ``seed``."""
    return run_dir / f"eval-samples-{n}-seed{seed}"


# --- numbered run folders --------------------------------------------------------------------------------


def run_ids(runs_dir: Path) -> list[tuple[int, Path]]:
    if not runs_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in runs_dir.iterdir() if p.is_dir() and (m := _RUN_NAME.match(p.name))
    ]
    return sorted(found)


def next_run_dir(runs_dir: Path, name: str, create: bool = True) -> Path:
    """The next free ``NNNNN-<name>`` folder under ``runs_dir`` (created unless ``create`` is False)."""
    ids = run_ids(runs_dir)
    number = ids[-1][0] + 1 if ids else 0
    while True:
        path = runs_dir / f"{number:05d}-{name}"
        if not create:
            return path
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:  # another process took this number meanwhile (or a link holds it)
            number += 1


def latest_run_dir(runs_dir: Path, marker: str = STATE_FILE) -> Path | None:
    """The highest-numbered run folder that contains ``marker`` (a file name), if any."""
    for _, path in reversed(run_ids(runs_dir)):
        if (path / marker).exists():
            return path
    return None


# --- config.json -----------------------------------------------------------------------------------------


def run_config_payload(
    *,
    train: dict[str, Any],
    model: dict[str, Any],
    diffusion: dict[str, Any],
    plan: dict[str, Any],
    labels: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` of a run (also stored in every snapshot's metadata).

    ``labels`` (class-conditional runs only): ``{"classes": [names], "source", "counts",
    "label_dropout"}``; class ``i`` of the U-Net is ``classes[i]``, its null label is ``len(classes)``.
    """
    payload = {"format": RUN_FORMAT, "train": train, "model": model, "diffusion": diffusion, "plan": plan}
    if labels is not None:
        payload["labels"] = labels
    return payload


def class_names(payload: dict[str, Any]) -> list[str]:
    """The class names of a run config (empty for an unconditional run); a damaged section is an error."""
    labels = payload.get("labels")
    if labels is None:
        return []
    names = labels.get("classes") if isinstance(labels, dict) else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise DiffkitError("the run config's labels section has no list of class names; it is damaged")
    return names


def write_run_config(run_dir: Path, payload: dict[str, Any]) -> Path:
    path = run_dir / CONFIG_FILE
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise DiffkitError(f"{path} not found; is {run_dir} a diffkit training run folder?")
    try:
        payload = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DiffkitError(f"{path} is not readable JSON ({exc}); the run folder is damaged") from None
    if not isinstance(payload, dict):
        raise DiffkitError(f"{path} holds a JSON {type(payload).__name__}, not an object; it is damaged")
    return payload


def train_options(run_dir: Path) -> dict[str, Any]:
    """The ``train`` section of ``config.json``: the options the run was started with, as JSON."""
    train = read_run_config(run_dir).get("train")
    if not isinstance(train, dict):
        raise DiffkitError(f"{run_dir / CONFIG_FILE} has no train section; the run folder is damaged")
    return train


def run_data_dir(run_dir: Path) -> Path | None:
    """The training data folder the run recorded (absolute since diffkit writes it so), if any."""
    data = train_options(run_dir).get("data")
    return Path(data) if isinstance(data, str) and data else None


# --- symlinks --------------------------------------------------------------------------------------------


def _symlinked_entries(
    folder: Path, pattern_names: tuple[str, ...], patterns: tuple[re.Pattern[str], ...]
) -> list[str]:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:
        raise DiffkitError(f"cannot read the run folder {folder} ({error.strerror})") from None
    return sorted(
        entry.name
        for entry in entries
        if entry.is_symlink() and (entry.name in pattern_names or any(p.match(entry.name) for p in patterns))
    )


def check_run_dir(run_dir: Path, runs_dir: Path | None = None) -> None:
    """Raise ``DiffkitError`` when writing the run into ``run_dir`` could follow a symlink.

    ``runs_dir``: set when ``run_dir`` was picked inside it (a numbered run, ``--resume`` without
    ``--out``); then ``run_dir`` itself must not be a link either. A folder given with ``--out`` may
    be a link: the user chose it. What diffkit writes inside (state, config, stats, snapshots,
    ``samples/`` and its grids) must be real files and folders; atomic replacement would replace a
    linked file, but the resume state is read through it first and ``samples/`` is written into.
    """
    if runs_dir is not None:
        reason = unsafe_reason(runs_dir, run_dir.name)
        if reason is not None:
            raise DiffkitError(
                f"the run folder {run_dir} {reason}; diffkit does not write through links: "
                "pass the real folder with --out"
            )
    linked = _symlinked_entries(run_dir, _WRITTEN, _WRITTEN_PATTERNS)
    for folder, pattern in ((SAMPLES_DIR, _GRID_NAME), (PHEMA_DIR, PHEMA_NAME)):
        if folder not in linked:
            linked += [f"{folder}/{name}" for name in _symlinked_entries(run_dir / folder, (), (pattern,))]
    if linked:
        more = f" (and {len(linked) - 1} more)" if len(linked) > 1 else ""
        raise DiffkitError(
            f"{run_dir / linked[0]} is a symlink{more}; diffkit does not read or write run files through "
            "links: replace it with the real file or choose another --out"
        )


def read_stats(path: Path) -> list[dict[str, Any]]:
    """The records of a run's stats.jsonl (a line cut short by a kill is skipped)."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def eval_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation records (FID/KID during training) among stats.jsonl's records."""
    return [r for r in records if r.get("kind") == EVAL_KIND]
