"""The HTML training report: loss curve, FID/KID during training, throughput, samples, the forward process
and the resolved config.

Two pictures help a first-time reader judge the samples: a forward-diffusion strip (real training
images noised to several t: what the model learns to undo), and, while the EMA samples are still
noise, a "too early to judge" note instead of a verdict.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.pixels import to_uint8
from diffkit.report.grid import PADDING, make_grid
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.plots import line_plot
from diffkit.report.render import write_report
from diffkit.runs.folder import STATS_FILE, eval_records, list_grids, read_stats
from diffkit.train.result import TrainResult, budget_text, upscale_text

# Grids of 16-64 px samples are tiny on screen; scale them up (nearest: no smoothing) to about this width.
DISPLAY_WIDTH = 768
STRIP_IMAGES = 4  # training images in the forward-diffusion strip
STRIP_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # of the way through the schedule
STRIP_SEED = 0
# Samples whose neighbouring pixels differ this much more than the training images' are still noise.
NOISE_FACTOR, NOISE_MARGIN = 2.0, 20.0


def forward_strip(images: np.ndarray, diffusion: GaussianDiffusion) -> tuple[Image.Image, list[int]]:
    """Rows: up to STRIP_IMAGES training images (spread over the set); columns: x_t at several t.

    One noise draw per image for all t, so a row shows one image sinking into the same noise.
    """
    picks = np.unique(np.linspace(0, len(images) - 1, min(len(images), STRIP_IMAGES)).round().astype(int))
    x0 = torch.from_numpy(np.stack([np.asarray(images[i]) for i in picks])).permute(0, 3, 1, 2)
    x0 = x0.float() / 127.5 - 1.0
    last = diffusion.num_timesteps - 1
    steps = [round(fraction * last) for fraction in STRIP_FRACTIONS]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(STRIP_SEED))
    columns = [diffusion.q_sample(x0, torch.full((len(x0),), t), noise) for t in steps]
    tiles = torch.stack(columns, dim=1).flatten(0, 1)  # image-major: one row per image
    return make_grid(to_uint8(tiles), columns=len(steps)), steps


def roughness(images: np.ndarray) -> float:
    """Mean absolute difference of horizontally neighbouring pixels, in grey levels (noise: ~100)."""
    return float(np.abs(np.diff(images.astype(np.float32), axis=2)).mean())


def grid_tiles(path: Path, resolution: int) -> np.ndarray:
    """The images of a grid written by :func:`diffkit.report.grid.make_grid` (NHWC uint8)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    step = resolution + PADDING
    rows, columns = (pixels.shape[0] - PADDING) // step, (pixels.shape[1] - PADDING) // step
    return np.stack(
        [
            pixels[PADDING + r * step : PADDING + r * step + resolution, PADDING + c * step :][:, :resolution]
            for r in range(rows)
            for c in range(columns)
        ]
    )


def too_early_note(samples: np.ndarray, real: np.ndarray, kimg: float) -> str | None:
    """A note when the samples are still noise; None when they look like images (of any quality)."""
    sample_rough, real_rough = roughness(samples), roughness(real)
    if sample_rough <= max(NOISE_FACTOR * real_rough, real_rough + NOISE_MARGIN):
        return None
    return (
        f"Too early to judge: after {kimg:.2f} kimg these samples are still mostly noise (neighbouring "
        f"pixels differ by {sample_rough:.0f} grey levels on average, {real_rough:.0f} in the training "
        "images). That is expected early in a run, not a sign of a bug: diffusion models first learn "
        "colours and blobs, then shapes. Train longer (diffkit train --out RUN --resume --kimg MORE) "
        "before judging."
    )


def _enlarged(picture: Path | Image.Image) -> Image.Image:
    if isinstance(picture, Image.Image):
        return _scaled(picture.convert("RGB"))
    with Image.open(picture) as image:
        return _scaled(image.convert("RGB"))


def _scaled(image: Image.Image) -> Image.Image:
    factor = max(1, DISPLAY_WIDTH // image.width)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def _series(records: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["kimg"], r[key]) for r in records if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _eval_sections(records: list[dict[str, Any]]) -> list[Section]:
    """FID and KID over the run (``--eval-every-kimg``), with what they depend on and a table."""
    evals = eval_records(records)
    if not evals:
        return []
    last = evals[-1]
    n, m = last["n"], last["n_reference"]
    kimg = [r["kimg"] for r in evals]
    text = (
        f"{last['fid_label']}: {n} EMA samples from the same fixed noise at every point ({last['sampler']}, "
        f"{last['sampler_steps']} steps) against the {m} training images, {last['engine']} engine, "
        f"{last['weights']}; last: {last['headline']}. At N = {n} FID is biased upwards (roughly in "
        "proportion to 1/N) and compares only with FIDs at the same N, reference and engine: read the "
        "trend, not the value. KID is unbiased in N. Against the training data both also reward "
        "memorization. Time spent here is not in the throughput."
    )
    if len(evals) == 1:
        text += " One evaluation so far: a single point."
    fid_plot = _marked(line_plot({last["fid_label"]: (kimg, [r["fid"] for r in evals])}, "kimg", "FID"))
    kid_plot = _marked(line_plot({f"KID@{n}": (kimg, [r["kid"] for r in evals])}, "kimg", "KID"))
    rows = [
        {
            "kimg": r["kimg"],
            "step": r["step"],
            "FID": r["fid"],
            "KID": r["kid"],
            "KID std": r["kid_std"],
            "N": r["n"],
            "seconds": r["seconds"],
        }
        for r in evals
    ]
    return [
        Section(heading="FID during training", text=text, figure=fid_plot),
        Section(heading="KID during training", figure=kid_plot, table=rows),
    ]


def _marked(figure: Any) -> Any:
    """Each evaluation is a measurement: show it as a dot (a line alone hides a single point)."""
    for line in figure.axes[0].lines:
        line.set_marker("o")
    return figure


def _samples_section(
    run_dir: Path, result: TrainResult, real: np.ndarray | None, resolution: int
) -> Section | None:
    images, note = [], None
    if result.progression is not None:
        caption = "Fixed-noise EMA samples over training (rows: kimg)"
        images.append(ReportImage(_enlarged(result.progression), caption))
    grids = list_grids(run_dir)
    if grids:
        nimg, path = grids[-1]
        images.append(ReportImage(_enlarged(path), f"EMA samples at {nimg / 1000:.2f} kimg (DDIM)"))
        if real is not None and len(real):
            note = too_early_note(grid_tiles(path, resolution), np.asarray(real[:64]), nimg / 1000)
    if not images:
        return None
    badges = ["too early to judge"] if note else []
    return Section(heading="Samples", text=note or "", badges=badges, images=images)


def _forward_section(real: np.ndarray, diffusion: GaussianDiffusion) -> Section:
    strip, steps = forward_strip(real, diffusion)
    text = (
        "What the model learns to undo: training images noised by the forward process "
        "x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one noise draw per row, at "
        + ", ".join(f"t = {t}" for t in steps)
        + f" (of {diffusion.num_timesteps}). Sampling runs these columns right to left."
    )
    return Section(heading="Forward diffusion", text=text, images=[ReportImage(_enlarged(strip), "")])


def _labels_section(payload: dict[str, Any]) -> Section | None:
    labels = payload.get("labels")
    if not isinstance(labels, dict):
        return None
    counts = labels.get("counts") or {}
    rows = [
        {"class": index, "name": name, "images": counts.get(name)}
        for index, name in enumerate(labels.get("classes", []))
    ]
    text = (
        f"Class-conditional: labels from {labels.get('source')}, each replaced by the null label with "
        f"probability {labels.get('label_dropout')} during training (for classifier-free guidance). "
        "The fixed-noise grids above are unconditional (null label); diffkit sample --label NAME "
        "--guidance W draws one class."
    )
    return Section(heading="Labels", text=text, table=rows)


def write_train_report(
    run_dir: Path,
    result: TrainResult,
    payload: dict[str, Any],
    real: np.ndarray | None = None,
    diffusion: GaussianDiffusion | None = None,
) -> ReportPaths:
    """``real``: the training images (NHWC uint8; a few are shown noised, and judge the samples)."""
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
        sections += _eval_sections(records)
        sections.append(
            Section(
                heading="Throughput",
                text="Training images per second per logging window (sampling and checkpoint time excluded).",
                figure=line_plot({"img/s": _series(records, "img_per_s")}, "kimg", "img/s"),
            )
        )
    sections += _budget_and_upscale_sections(result)
    samples = _samples_section(run_dir, result, real, result.resolution)
    if samples is not None:
        sections.append(samples)
    if real is not None and len(real) and diffusion is not None:
        sections.append(_forward_section(real, diffusion))
    labels = _labels_section(payload)
    if labels is not None:
        sections.append(labels)
    if result.skipped_images:
        sections.append(Section(heading="Skipped images", table=result.skipped_images[:200]))
    config_rows = [{"option": k, "value": v} for k, v in payload["train"].items()]
    config_rows += [{"option": f"model.{k}", "value": v} for k, v in payload["model"].items()]
    config_rows += [{"option": f"plan.{k}", "value": v} for k, v in payload["plan"].items()]
    sections.append(Section(heading="Config", table=config_rows))
    summary = {
        "run": str(run_dir),
        "status": _status(result),
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
    if result.budget_stop is not None:
        summary["trained_seconds_this_session"] = round(result.budget_stop["wall_seconds"], 3)
    if result.upscaled is not None:
        summary["upscaled_images"] = result.upscaled["count"]
    evals = eval_records(records)
    if evals:  # the last FID/KID during training, the FID with its N, reference N, engine and weights
        summary["fid_during_training"] = evals[-1]["headline"]
        summary["kid_during_training"] = evals[-1]["kid"]
    report = Report(
        title=f"Training {run_dir.name}",
        command="train",
        summary=summary,
        sections=sections,
        data={"result": dataclasses.asdict(result) | {"report": None}, "config": payload, "stats": records},
    )
    return write_report(report)


def _status(result: TrainResult) -> str:
    if result.budget_stop is not None:
        return f"stopped on the {result.budget_stop['reason']}"
    return "interrupted" if result.interrupted else "done"


def _budget_and_upscale_sections(result: TrainResult) -> list[Section]:
    """Where a time budget stopped the session, and how much training enlarges small images."""
    sections = []
    if result.budget_stop is not None:
        sections.append(
            Section(
                heading="Stopped on the time budget",
                text=f"The session stopped cleanly at step {result.step} ({result.kimg:.2f} kimg) of "
                f"{result.total_steps}: {budget_text(result.budget_stop)}. The state and an EMA snapshot "
                "are saved; --resume continues the run (with a fresh budget when one is given again).",
            )
        )
    if result.upscaled is not None:
        sections.append(
            Section(
                heading="Upscaled images",
                text=upscale_text(result.upscaled, result.resolution)
                + f". The smallest image's shorter side is {result.upscaled['smallest_side']} px: an "
                "enlarged image has no detail beyond its own size, so the model learns blur at that scale.",
            )
        )
    return sections
