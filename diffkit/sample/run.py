"""``diffkit sample``: ``sample(SampleConfig) -> SampleResult``, PNG files (and a grid) from a snapshot."""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from diffkit.atomic import atomic_open
from diffkit.errors import DiffkitError
from diffkit.report.grid import make_grid
from diffkit.runs import GENERATED_DIR, resolve_snapshot
from diffkit.safepath import unsafe_reason
from diffkit.sample.config import SampleConfig
from diffkit.sample.generate import generate_images
from diffkit.sample.result import SampleResult

GRID_FILE = "grid.png"


def default_out_dir(snapshot: Path, config: SampleConfig) -> Path:
    """``<run>/generated/<name>``; refused when a link inside the run folder would lead elsewhere."""
    relative = f"{GENERATED_DIR}/{snapshot.stem}-{config.sampler}{config.steps}-seed{config.seed}"
    reason = unsafe_reason(snapshot.parent, relative)
    if reason is not None:
        raise DiffkitError(
            f"cannot write samples to {snapshot.parent / relative}: it {reason}; pass --out FOLDER"
        )
    return snapshot.parent / relative


def sample(config: SampleConfig) -> SampleResult:
    if config.run is None and config.snapshot is None:
        raise DiffkitError("pass --run RUN (a training run folder) to sample from")
    snapshot = resolve_snapshot(config.run, config.snapshot)
    out_dir = config.out or default_out_dir(snapshot, config)
    try:  # before sampling, so a bad --out fails at once instead of after minutes of work
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffkitError(
            f"cannot create the output folder {out_dir} ({exc.strerror}); pass another --out"
        ) from None
    started = time.perf_counter()
    images = generate_images(
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
    )
    seconds = time.perf_counter() - started
    files = []
    for index, image in enumerate(images):
        name = f"{index:06d}.png"
        with atomic_open(out_dir / name, "wb", durable=False) as handle:
            Image.fromarray(image).save(handle, format="PNG")
        files.append(name)
    grid = None
    if config.grid:
        grid = out_dir / GRID_FILE
        with atomic_open(grid, "wb", durable=False) as handle:
            make_grid(images).save(handle, format="PNG")
    return SampleResult(
        snapshot, out_dir, config.n, config.sampler, config.steps, config.seed, files, grid, seconds
    )
