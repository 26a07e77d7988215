"""``diffkit sample``: ``sample(SampleConfig) -> SampleResult``: PNGs, a grid, an animation and a report."""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.atomic import atomic_open, check_writable_dir
from diffkit.errors import DiffkitError
from diffkit.report.grid import make_grid
from diffkit.report.render import DEFAULT_REPORTS_DIR
from diffkit.runs.folder import GENERATED_DIR
from diffkit.runs.snapshots import resolve_snapshot, snapshot_payload
from diffkit.safepath import unsafe_reason
from diffkit.sample.animation import write_animation
from diffkit.sample.config import DEFAULT_GUIDANCE, SampleConfig
from diffkit.sample.generate import generate, resolve_label
from diffkit.sample.report import write_sample_report
from diffkit.sample.result import SampleResult

GRID_FILE = "grid.png"
ANIMATED_IMAGES = 4  # the first images are traced for the denoising animation


def default_out_dir(snapshot: Path, config: SampleConfig, guidance: float | None = None) -> Path:
    """``<run>/generated/<name>``; refused when a link inside the run folder would lead elsewhere."""
    name = f"{snapshot.stem}-{config.sampler}{config.steps}-seed{config.seed}"
    if config.label is not None:  # a label is user text: only name-safe characters go into the folder
        name += f"-{re.sub(r'[^A-Za-z0-9_.-]', '_', config.label)[:40]}-w{guidance:g}"
    relative = f"{GENERATED_DIR}/{name}"
    reason = unsafe_reason(snapshot.parent, relative)
    if reason is not None:
        raise DiffkitError(
            f"cannot write samples to {snapshot.parent / relative}: it {reason}; pass --out FOLDER"
        )
    return snapshot.parent / relative


@contextlib.contextmanager
def _animation_file(config: SampleConfig, out_dir: Path) -> Iterator[Path | None]:
    """``--gif FILE``, or a temporary WebP (lossless and the smallest) that only the report embeds."""
    if config.gif is not None:
        yield config.gif
    elif config.write_report:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".animation-") as folder:
            yield Path(folder) / "denoising.webp"
    else:
        yield None


def sample(config: SampleConfig) -> SampleResult:
    if config.run is None and config.snapshot is None:
        raise DiffkitError("pass --run RUN (a training run folder) to sample from")
    snapshot = resolve_snapshot(config.run, config.snapshot)
    # Checked before any folder is made or any image sampled: a wrong --label is one line at once.
    resolve_label(snapshot_payload(snapshot), config.label, config.guidance)
    out_dir = config.out or default_out_dir(snapshot, config, _guidance(config))
    try:  # before sampling, so a bad --out fails at once instead of after minutes of work
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffkitError(
            f"cannot create the output folder {out_dir} ({exc.strerror}); pass another --out"
        ) from None
    if config.gif is not None:
        check_writable_dir(config.gif.parent, "the animation (--gif)")
    if config.write_report:
        check_writable_dir(config.report.parent if config.report else DEFAULT_REPORTS_DIR, "the report")
    with _animation_file(config, out_dir) as animation:
        started = time.perf_counter()
        generated = generate(
            config.run,
            config.n,
            sampler=config.sampler,
            steps=config.steps,
            eta=config.eta,
            seed=config.seed,
            batch_size=config.batch_size,
            device=config.device,
            snapshot=snapshot,
            progress=config.progress,
            precision=config.precision,
            label=config.label,
            guidance=config.guidance,
            record=ANIMATED_IMAGES if animation is not None else 0,
        )
        seconds = time.perf_counter() - started
        if animation is not None and generated.trajectory is not None:
            write_animation(generated.trajectory, animation)
        result = SampleResult(
            snapshot, out_dir, config.n, config.sampler, config.steps, config.seed, [], None, seconds,
            label=config.label, guidance=generated.guidance, animation=config.gif,
        )  # fmt: skip
        _write_images(result, generated.images, config.grid)
        if config.write_report:
            result.report = write_sample_report(result, generated.images, animation, config.report).html
    return result


def _guidance(config: SampleConfig) -> float | None:
    if config.label is None:
        return None
    return DEFAULT_GUIDANCE if config.guidance is None else config.guidance


def _write_images(result: SampleResult, images: np.ndarray, grid: bool) -> None:
    for index, image in enumerate(images):
        name = f"{index:06d}.png"
        with atomic_open(result.out_dir / name, "wb", durable=False) as handle:
            Image.fromarray(image).save(handle, format="PNG")
        result.files.append(name)
    if grid:
        result.grid = result.out_dir / GRID_FILE
        with atomic_open(result.grid, "wb", durable=False) as handle:
            make_grid(images).save(handle, format="PNG")
