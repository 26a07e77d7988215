"""``diffkit export``: ``export(ExportConfig) -> ExportResult``: a run's EMA snapshot as a diffusers folder.

The folder is written beside OUT under a temporary name and renamed into place when complete, so a
failed or interrupted export leaves no half-written model that diffusers would load; two exports into
one OUT cannot mix their files either (the second rename finds OUT taken). With ``--force`` into a
non-empty OUT, only the entries the export writes are replaced, one rename each.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from diffkit.atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from diffkit.errors import DiffkitError
from diffkit.export.card import CardInputs, model_card, newest_evaluation
from diffkit.export.config import ExportConfig
from diffkit.export.mapping import (
    PREDICTION_TYPES,
    model_index,
    scheduler_config,
    unet_config,
    unet_state_dict,
    unsupported_reasons,
)
from diffkit.export.result import ExportResult
from diffkit.runs.folder import STATS_FILE, read_stats
from diffkit.runs.snapshots import load_snapshot, resolve_snapshot

UNET_DIR, SCHEDULER_DIR = "unet", "scheduler"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
FILES = (
    "model_index.json",
    f"{SCHEDULER_DIR}/scheduler_config.json",
    f"{UNET_DIR}/config.json",
    f"{UNET_DIR}/{WEIGHTS_FILE}",
    "README.md",
)
TOP_LEVEL = ("model_index.json", SCHEDULER_DIR, UNET_DIR, "README.md")


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DiffkitError(f"{out} exists and is not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DiffkitError(
            f"{out} exists and is not empty; choose another OUT or pass --force to replace "
            "the exported files in it"
        )


def _progress(snapshot: Path) -> tuple[int | None, int | None]:
    """(nimg, step) from the snapshot's metadata, where the training loop records them."""
    with safe_open(str(snapshot), framework="pt") as handle:
        metadata = handle.metadata() or {}
    values = []
    for key in ("nimg", "step"):
        try:
            values.append(int(metadata[key]))
        except (KeyError, ValueError):
            values.append(None)
    return values[0], values[1]


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def export(config: ExportConfig) -> ExportResult:
    run = config.run
    if not run.is_dir():
        raise DiffkitError(f"run folder {run} not found; pass a training run folder such as runs/00000-small")
    snapshot = resolve_snapshot(run, config.snapshot)
    _check_out(config.out, config.force)
    model, diffusion, payload = load_snapshot(snapshot, torch.device("cpu"))
    if diffusion.prediction not in PREDICTION_TYPES:
        raise DiffkitError(
            f"{snapshot} was trained with --prediction {diffusion.prediction}: EDM's preconditioning scales "
            "the U-Net's input by a per-step factor, which diffusers' UNet2DModel and DDIMScheduler cannot "
            "hold, so it cannot be exported exactly. diffkit does not approximate; runs trained with "
            "--prediction v or eps export"
        )
    reasons = unsupported_reasons(model.config)
    if reasons:
        raise DiffkitError(
            f"{snapshot} cannot be exported to diffusers exactly: "
            + "; ".join(reasons)
            + ". diffkit does not approximate. Runs of this diffkit's presets all export; a small run (or a "
            "tiny one at 8 px) trained before every preset had one group count and head size does not: "
            "train it again to export it"
        )
    nimg, step = _progress(snapshot)
    evaluation = newest_evaluation(run, config.reports_dir)
    card = model_card(
        CardInputs(
            run=run.resolve(),
            snapshot=snapshot,
            out_name=config.out.resolve().name,
            payload=payload,
            parameters=sum(p.numel() for p in model.parameters()),
            nimg=nimg,
            step=step,
            stats=read_stats(run / STATS_FILE),
            evaluation=evaluation,
        )
    )
    weights = unet_state_dict({k: v.detach().cpu() for k, v in model.state_dict().items()})
    contents: dict[str, bytes] = {
        "model_index.json": _json(model_index()).encode(),
        f"{SCHEDULER_DIR}/scheduler_config.json": _json(scheduler_config(diffusion)).encode(),
        f"{UNET_DIR}/config.json": _json(unet_config(model.config)).encode(),
        f"{UNET_DIR}/{WEIGHTS_FILE}": safetensors_save(weights, metadata={"format": "pt"}),
        "README.md": card.encode(),
    }
    _publish(config.out, contents)
    return ExportResult(
        run=run,
        snapshot=snapshot,
        out=config.out,
        format=config.format,
        files=list(FILES),
        nimg=nimg,
        metrics_report=evaluation.json_path if evaluation is not None else None,
    )


def _publish(out: Path, contents: dict[str, bytes]) -> None:
    """Write ``contents`` into a temporary sibling of ``out``, then rename it (or its entries) into place."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}.export-"))
    except OSError as error:
        raise DiffkitError(f"cannot create {out} ({error.strerror}); choose another OUT") from None
    try:
        for name, data in contents.items():
            if name.endswith((".json", ".md")):
                atomic_write_text(staging / name, data.decode())
            else:
                atomic_write_bytes(staging / name, data)
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700; OUT is an ordinary folder
        if out.is_dir() and any(out.iterdir()):
            _replace_entries(staging, out)
        else:
            try:
                os.rename(staging, out)  # POSIX: replaces an empty folder, fails on a non-empty one
            except OSError as error:
                raise DiffkitError(
                    f"cannot move the export into {out} ({error.strerror}); was it filled meanwhile?"
                ) from None
        fsync_dir(parent)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _replace_entries(staging: Path, out: Path) -> None:
    """``--force``: each exported entry replaces the one of that name in ``out`` (links are not followed)."""
    for name in TOP_LEVEL:
        target = out / name
        if target.is_dir() and not target.is_symlink():
            old = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}.old-"))
            os.rename(target, old / name)
            os.rename(staging / name, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            if target.is_symlink():  # replace the link itself, never what it points to
                target.unlink()
            os.replace(staging / name, target)
    fsync_dir(out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
