"""``diffkit sample``: PNG files (and optionally a grid) from a run's EMA snapshot."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from diffkit.atomic import atomic_open
from diffkit.console import shown
from diffkit.errors import DiffkitError
from diffkit.report.grid import make_grid
from diffkit.runs import GENERATED_DIR, resolve_snapshot
from diffkit.safepath import unsafe_reason
from diffkit.sample.generate import generate_images

GRID_FILE = "grid.png"


@dataclass(frozen=True)
class SampleConfig:
    run: Path | None = None
    n: int = 64
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    seed: int = 0
    out: Path | None = None  # default: <run>/generated/<snapshot>-<sampler><steps>-seed<seed>
    grid: bool = False
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    snapshot: Path | None = None
    progress: bool = True


@dataclass
class SampleResult:
    snapshot: Path
    out_dir: Path
    n: int
    sampler: str
    steps: int
    seed: int
    files: list[str]
    grid: Path | None
    seconds: float

    @property
    def img_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "snapshot": str(self.snapshot),
            "out_dir": str(self.out_dir),
            "n": self.n,
            "sampler": self.sampler,
            "steps": self.steps,
            "seed": self.seed,
            "files": self.files,
            "grid": str(self.grid) if self.grid else None,
            "seconds": self.seconds,
            "img_per_s": self.img_per_s,
        }

    def summary_lines(self) -> list[str]:
        # Paths are user text: shown() keeps `[bold]` in a folder name literal.
        lines = [
            f"[green]wrote[/] {self.n} images to {shown(self.out_dir)}",
            f"sampler: {shown(self.sampler)}, {self.steps} steps, seed {self.seed}",
            f"snapshot: {shown(self.snapshot)}",
            f"time: {self.seconds:.1f} s ({self.img_per_s:.2f} img/s)",
        ]
        if self.grid:
            lines.append(f"grid: {shown(self.grid)}")
        return lines


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
