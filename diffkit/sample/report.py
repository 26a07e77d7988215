"""The HTML report of ``diffkit sample``: grid, denoising animation, and how the images were made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.report.grid import make_grid
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.render import write_report
from diffkit.sample.result import SampleResult

GRID_IMAGES = 64  # the report shows at most this many of the samples
DISPLAY_WIDTH = 768  # small samples are enlarged (nearest neighbour) to about this width


def _enlarged(grid: Image.Image) -> Image.Image:
    factor = max(1, DISPLAY_WIDTH // grid.width)
    return grid.resize((grid.width * factor, grid.height * factor), Image.Resampling.NEAREST)


def write_sample_report(
    result: SampleResult, images: np.ndarray, animation: Path | None, path: Path | None
) -> ReportPaths:
    """``animation``: the denoising animation file, embedded as it is (it plays in the page)."""
    shown = images[:GRID_IMAGES]
    caption = f"{len(shown)} of {result.n} samples" if result.n > len(shown) else f"all {result.n} samples"
    sections = [Section(heading="Samples", images=[ReportImage(_enlarged(make_grid(shown)), caption)])]
    if animation is not None:
        text = (
            "The first images being denoised: in each row x_t (left) and the model's prediction of the "
            "clean image x_0 at that step (right), from pure noise to the finished sample."
        )
        sections.append(
            Section(heading="Denoising", text=text, images=[ReportImage(animation, animation.name)])
        )
    summary = {
        "snapshot": str(result.snapshot),
        "sampler": result.sampler,
        "steps": result.steps,
        "seed": result.seed,
        "label": result.label if result.label is not None else "(unconditional)",
        "guidance": result.guidance,
        "images": result.n,
        "seconds": round(result.seconds, 3),
        "seconds_per_image": round(result.seconds_per_image, 4),
        "out_dir": str(result.out_dir),
    }
    report = Report(
        title=f"Samples from {result.snapshot.parent.name}/{result.snapshot.name}",
        command="sample",
        summary=summary,
        sections=sections,
        data={"result": result.to_dict() | {"report": None}},
    )
    return write_report(report, path)
