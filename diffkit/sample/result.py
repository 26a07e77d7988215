"""What ``diffkit sample`` returns: where the PNGs went, how they were made, how fast."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from diffkit.console import CommandResult, shown
from diffkit.sample.provenance import PROVENANCE_FILE


class NumberedNames(Sequence[str]):
    """The names of ``count`` samples, ``000000.png`` on, made when asked for: no list that grows with N."""

    def __init__(self, count: int) -> None:
        self._indices = range(count)

    @staticmethod
    def name(index: int) -> str:
        return f"{index:06d}.png"

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self.name(i) for i in self._indices[index]]
        return self.name(self._indices[index])


@dataclass
class SampleResult(CommandResult):
    snapshot: Path
    out_dir: Path
    n: int
    sampler: str
    steps: int
    seed: int
    files: Sequence[str]
    grid: Path | None
    seconds: float
    label: str | None = None
    guidance: float | None = None
    animation: Path | None = None
    report: Path | None = None
    provenance: dict[str, Any] | None = None  # as written to out_dir/provenance.json

    @property
    def img_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_per_image(self) -> float:
        return self.seconds / self.n if self.n else 0.0

    def report_paths(self) -> list[Path]:
        return [self.report] if self.report is not None else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "snapshot": str(self.snapshot),
            "out_dir": str(self.out_dir),
            "n": self.n,
            "sampler": self.sampler,
            "steps": self.steps,
            "seed": self.seed,
            "label": self.label,
            "guidance": self.guidance,
            "files": list(self.files),
            "grid": str(self.grid) if self.grid else None,
            "animation": str(self.animation) if self.animation else None,
            "report": str(self.report) if self.report else None,
            "seconds": self.seconds,
            "img_per_s": self.img_per_s,
            "seconds_per_image": self.seconds_per_image,
            "provenance": self.provenance,
        }

    def summary_lines(self) -> list[str]:
        # Paths are user text: shown() keeps `[bold]` in a folder name literal.
        lines = [
            f"[green]wrote[/] {self.n} images to {shown(self.out_dir)}",
            f"sampler: {shown(self.sampler)}, {self.steps} steps, seed {self.seed}",
            f"snapshot: {shown(self.snapshot)}",
            f"time: {self.seconds:.1f} s ({self.img_per_s:.2f} img/s)",
        ]
        if self.label is not None:
            lines.insert(2, f"label: {shown(self.label)}, guidance {self.guidance:g}")
        if self.provenance is not None:  # eval and the run pages credit these images to this run by it
            lines.append(f"provenance: {shown(self.out_dir / PROVENANCE_FILE)}")
        if self.grid:
            lines.append(f"grid: {shown(self.grid)}")
        if self.animation:
            lines.append(f"animation: {shown(self.animation)}")
        if self.report:
            lines.append(f"report: {shown(self.report)}")
        return lines
