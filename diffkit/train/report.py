"""The HTML training report: loss curve, throughput, sample progression and the resolved config."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from PIL import Image

from diffkit.report import Report, ReportImage, ReportPaths, Section, line_plot, write_report
from diffkit.runs import STATS_FILE, list_grids
from diffkit.train.monitor import read_stats
from diffkit.train.result import TrainResult

# Grids of 16-64 px samples are tiny on screen; scale them up (nearest: no smoothing) to about this width.
DISPLAY_WIDTH = 768


def _enlarged(path: Path) -> Image.Image:
    with Image.open(path) as image:
        factor = max(1, DISPLAY_WIDTH // image.width)
        size = (image.width * factor, image.height * factor)
        return image.convert("RGB").resize(size, Image.Resampling.NEAREST)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["kimg"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def write_train_report(run_dir: Path, result: TrainResult, payload: dict[str, Any]) -> ReportPaths:
    records = read_stats(run_dir / STATS_FILE)
    sections: list[Section] = []
    if records:
        losses = [v for v in _series(records, "loss")[1] if v > 0]
        sections.append(
            Section(
                heading="Loss",
                text="Min-SNR-weighted training loss, mean per logging window. It is noisy by nature (random "
                "timesteps); the trend matters, and the samples matter more.",
                figure=line_plot({"loss": _series(records, "loss")}, "kimg", "loss", logy=bool(losses)),
            )
        )
        sections.append(
            Section(
                heading="Throughput",
                text="Training images per second per logging window (sampling and checkpoint time excluded).",
                figure=line_plot({"img/s": _series(records, "img_per_s")}, "kimg", "img/s"),
            )
        )
    images = []
    if result.progression is not None:
        caption = "Fixed-noise EMA samples over training (rows: kimg)"
        images.append(ReportImage(_enlarged(result.progression), caption))
    grids = list_grids(run_dir)
    if grids:
        nimg, path = grids[-1]
        images.append(ReportImage(_enlarged(path), f"EMA samples at {nimg / 1000:.2f} kimg (DDIM)"))
    if images:
        sections.append(Section(heading="Samples", images=images))
    if result.skipped_images:
        sections.append(Section(heading="Skipped images", table=result.skipped_images[:200]))
    config_rows = [{"option": k, "value": v} for k, v in payload["train"].items()]
    config_rows += [{"option": f"model.{k}", "value": v} for k, v in payload["model"].items()]
    config_rows += [{"option": f"plan.{k}", "value": v} for k, v in payload["plan"].items()]
    sections.append(Section(heading="Config", table=config_rows))
    summary = {
        "run": str(run_dir),
        "status": "interrupted" if result.interrupted else "done",
        "steps": result.step,
        "kimg": round(result.kimg, 3),
        "params_M": round(result.params / 1e6, 3),
        "GFLOPs_per_image_forward": round(result.flops_per_image / 1e9, 4),
        "first_loss": result.first_loss,
        "final_loss": result.final_loss,
        "img_per_s": result.img_per_s,
        "device": result.device,
        "precision": result.precision,
        "dataset_images": result.dataset_size,
        "skipped_images": len(result.skipped_images),
        "skipped_steps": result.skipped_steps,
    }
    report = Report(
        title=f"Training {run_dir.name}",
        command="train",
        summary=summary,
        sections=sections,
        data={"result": dataclasses.asdict(result) | {"report": None}, "config": payload, "stats": records},
    )
    return write_report(report)
