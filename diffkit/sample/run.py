"""``diffkit sample``: ``sample(SampleConfig) -> SampleResult``: PNGs, a grid, an animation and a report."""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from diffkit.atomic import atomic_open, check_writable_dir
from diffkit.errors import DiffkitError
from diffkit.report.grid import make_grid
from diffkit.report.render import DEFAULT_REPORTS_DIR
from diffkit.runs.folder import GENERATED_DIR
from diffkit.safepath import unsafe_reason
from diffkit.sample.animation import write_animation
from diffkit.sample.config import GRID_MAX, SampleConfig
from diffkit.sample.generate import Trajectory, generate_batches
from diffkit.sample.options import SamplingOptions
from diffkit.sample.pngs import check_disk_space, write_png
from diffkit.sample.provenance import clear_provenance, provenance_of, write_provenance
from diffkit.sample.report import GRID_IMAGES, write_sample_report
from diffkit.sample.result import NumberedNames, SampleResult

GRID_FILE = "grid.png"
ANIMATED_IMAGES = 4  # the first images are traced for the denoising animation


def default_out_dir(options: SamplingOptions) -> Path:
    """``<run>/generated/<name>``; refused when a link inside the run folder would lead elsewhere."""
    snapshot = options.snapshot
    name = f"{snapshot.stem}-{options.sampler}{options.steps}-seed{options.seed}"
    if options.label is not None:  # a label is user text: only name-safe characters go into the folder
        name += f"-{re.sub(r'[^A-Za-z0-9_.-]', '_', options.label)[:40]}-w{options.guidance:g}"
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
    # Resolved before any folder is made or any image sampled: a wrong --label is one line at once.
    options = SamplingOptions.from_config(config)
    out_dir = config.out or default_out_dir(options)
    check_disk_space(out_dir, options.n, options.resolution, "lower --n or pass --out on a larger disk")
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
        trajectory = Trajectory(traced=ANIMATED_IMAGES) if animation is not None else None
        clock = _Clock()
        clear_provenance(out_dir)  # the old images' record must not outlive them
        batches = clock.timed(generate_batches(options, progress=config.progress, trajectory=trajectory))
        first = _write_images(out_dir, batches, GRID_MAX if config.grid else GRID_IMAGES)
        write_provenance(out_dir, options, "sample")  # last: present only beside a complete set
        if animation is not None and trajectory is not None:
            write_animation(trajectory, animation)
        result = SampleResult(
            options.snapshot, out_dir, options.n, options.sampler, options.steps, options.seed,
            NumberedNames(options.n), None, clock.seconds, label=options.label, guidance=options.guidance,
            animation=config.gif, provenance=provenance_of(options, "sample"),
        )  # fmt: skip
        if config.grid:
            result.grid = out_dir / GRID_FILE
            with atomic_open(result.grid, "wb", durable=False) as handle:
                make_grid(first).save(handle, format="PNG")
        if config.write_report:
            result.report = write_sample_report(result, first, animation, config.report).html
    return result


class _Clock:
    """Seconds spent producing batches (loading and sampling), without the writing in between."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        iterator = iter(batches)
        while True:
            started = time.perf_counter()
            batch = next(iterator, None)
            self.seconds += time.perf_counter() - started
            if batch is None:
                return
            yield batch


def _write_images(out_dir: Path, batches: Iterable[np.ndarray], keep: int) -> np.ndarray:
    """Every image as ``NNNNNN.png``, batch by batch; returns the first ``keep`` (the grid, the report)."""
    first: list[np.ndarray] = []
    index = 0
    for batch in batches:
        for image in batch:
            write_png(out_dir / NumberedNames.name(index), image)
            index += 1
        if sum(map(len, first)) < keep:
            first.append(batch[: keep - sum(map(len, first))].copy())
    return np.concatenate(first)
