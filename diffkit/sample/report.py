"""The HTML report of ``diffkit sample``: grid, denoising animation, and how the images were made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.report.grid import make_grid
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.render import write_report
from diffkit.sample.provenance import made_by
from diffkit.sample.result import SampleResult

GRID_IMAGES = 64  # the report shows at most this many of the samples
DISPLAY_WIDTH = 768  # small samples are enlarged (nearest neighbour) to about this width
# The rule for "still noise", from the images alone (a sample report has no training images to compare
# with): the mean absolute difference of horizontally neighbouring pixels, in grey levels. Independent
# uniform pixels give 255/3 = 85, the clipped Gaussian noise a sampler starts from about 105 (measured);
# the procedural faces measured 16 at 16 px down to 6 at 256 px, and natural images are alike, edges
# being a small share of the pixels. 40 sits well clear of both, so a note means mostly noise.
NOISE_ROUGHNESS = 40.0


def roughness(images: np.ndarray) -> float:
    """Mean absolute difference of horizontally neighbouring pixels (NHWC uint8), in grey levels."""
    return float(np.abs(np.diff(images.astype(np.float32), axis=2)).mean())


def too_early_note(images: np.ndarray, kimg: float | None) -> str | None:
    """A note when the samples are still noise (an untrained or barely trained snapshot); else None."""
    rough = roughness(images)
    if rough <= NOISE_ROUGHNESS:
        return None
    trained = f"after {kimg:g} kimg of training " if kimg is not None else ""
    return (
        f"Too early to judge: {trained}these samples are still mostly noise (neighbouring pixels differ by "
        f"{rough:.0f} grey levels on average; photographs differ by under {NOISE_ROUGHNESS:.0f}). That is "
        "expected from an untrained or barely trained snapshot, not a sign of a bug: train longer "
        "(diffkit train --out RUN --resume --kimg MORE) before judging the model or computing its FID."
    )


def _enlarged(grid: Image.Image) -> Image.Image:
    factor = max(1, DISPLAY_WIDTH // grid.width)
    return grid.resize((grid.width * factor, grid.height * factor), Image.Resampling.NEAREST)


def write_sample_report(
    result: SampleResult, images: np.ndarray, animation: Path | None, path: Path | None
) -> ReportPaths:
    """``animation``: the denoising animation file, embedded as it is (it plays in the page)."""
    shown = images[:GRID_IMAGES]
    caption = f"{len(shown)} of {result.n} samples" if result.n > len(shown) else f"all {result.n} samples"
    provenance = result.provenance or {}
    note = too_early_note(shown, provenance.get("snapshot_kimg"))
    sections = [
        Section(
            heading="Samples",
            text=note or "",
            badges=["too early to judge"] if note else [],
            images=[ReportImage(_enlarged(make_grid(shown)), caption)],
        )
    ]
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
    if provenance:  # one line naming what made the images, as provenance.json records it
        summary["made_by"] = made_by(provenance)
        summary["snapshot_kimg"] = provenance.get("snapshot_kimg")
    report = Report(
        title=f"Samples from {result.snapshot.parent.name}/{result.snapshot.name}",
        command="sample",
        summary=summary,
        sections=sections,
        data={"result": result.to_dict() | {"report": None}, "warnings": [note] if note else []},
    )
    return write_report(report, path)
