"""``diffkit export``: ``export(ExportConfig) -> ExportResult``: a run's EMA snapshot as a diffusers folder.

The folder is written beside OUT under a temporary name and renamed into place when complete, so a
failed or interrupted export leaves no half-written model that diffusers would load; two exports into
one OUT cannot mix their files either (the second rename finds OUT taken). With ``--force`` into a
non-empty OUT, only the entries the export writes are replaced, after every one of them was checked
to be the export's own (see :mod:`diffkit.export.publish`).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_save

from diffkit.dataset.manifest import MANIFEST_NAME, Manifest
from diffkit.errors import DiffkitError
from diffkit.export.card import SAMPLES_FILE, CardInputs, model_card, newest_evaluation
from diffkit.export.config import ExportConfig
from diffkit.export.mapping import (
    PREDICTION_TYPES,
    model_index,
    scheduler_config,
    unet_config,
    unet_state_dict,
    unsupported_reasons,
)
from diffkit.export.publish import FILES, SCHEDULER_DIR, UNET_DIR, WEIGHTS_FILE, check_targets, publish
from diffkit.export.result import ExportResult
from diffkit.report.sidecars import SidecarScan, scan_sidecars
from diffkit.runs.folder import STATS_FILE, list_grids, read_stats
from diffkit.runs.snapshots import load_snapshot, resolve_snapshot


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise DiffkitError(f"{out} exists and is not a folder; choose another OUT")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DiffkitError(
                f"{out} exists and is not empty; choose another OUT or pass --force to replace "
                "the exported files in it"
            )
        check_targets(out)  # before the work: a folder in the way is refused at once


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


def _sample_grid(run: Path, nimg: int | None) -> tuple[int, Path] | None:
    """The newest fixed-noise training grid at or before the snapshot (else the newest): (nimg, path)."""
    grids = list_grids(run)
    before = [grid for grid in grids if nimg is None or grid[0] <= nimg]
    chosen = before or grids
    return chosen[-1] if chosen else None


def scrape_source(payload: dict[str, Any]) -> str | None:
    """The URL the run's training images were scraped from, when its data folder is a scrape folder.

    The run's config names the data folder (as given to train: relative to where it ran, taken here
    from the current folder); the manifest records its endpoint. Read-only: nothing is created there.
    """
    train = payload.get("train")
    data = train.get("data") if isinstance(train, dict) else None
    if not isinstance(data, str) or not (Path(data) / MANIFEST_NAME).is_file():
        return None
    try:
        uri = (Path(data) / MANIFEST_NAME).resolve().as_uri() + "?mode=ro"
        db = sqlite3.connect(uri, uri=True)
    except (sqlite3.Error, OSError):
        return None
    manifest = Manifest(Path(data), db)
    try:
        return manifest.endpoint()
    except sqlite3.Error:  # not a manifest after all, or locked: the card then names no source
        return None
    finally:
        manifest.close()


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
    grid = _sample_grid(run, nimg)
    # A pipe or a huge file among the reports is skipped (and said so), never read.
    scan = scan_sidecars(config.reports_dir) if config.reports_dir.is_dir() else SidecarScan()
    evaluation = newest_evaluation(run, config.reports_dir, scan.sidecars)
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
            license=config.license,
            source_url=scrape_source(payload),
            grid_nimg=grid[0] if grid is not None else None,
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
    if grid is not None:
        contents[SAMPLES_FILE] = grid[1].read_bytes()  # byte for byte the grid training wrote
    removed = publish(config.out, contents)
    return ExportResult(
        run=run,
        snapshot=snapshot,
        out=config.out,
        format=config.format,
        files=[name for name in FILES if name in contents],
        nimg=nimg,
        metrics_report=evaluation.json_path if evaluation is not None else None,
        skipped_reports=scan.skipped,
        removed_staging=removed,
    )
