"""What ``diffkit sample`` returns: where the PNGs went, how they were made, how fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, shown


@dataclass
class SampleResult(CommandResult):
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

    def to_dict(self) -> dict[str, Any]:
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
