"""What ``diffkit phema`` returns: the snapshot it wrote, the profile and how well the fit matches it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, shown


@dataclass
class PhemaResult(CommandResult):
    run: Path
    snapshot: Path
    sigma_rel: float
    gamma: float
    step: int
    nimg: int
    relative_error: float
    sources: list[dict[str, Any]]

    def summary_lines(self) -> list[str]:
        # Paths are user text: shown() keeps `[bold]` in a folder name literal.
        return [
            f"post-hoc EMA sigma_rel {self.sigma_rel:g} (gamma {self.gamma:.2f}) at step {self.step} "
            f"({self.nimg / 1000:g} kimg) from {len(self.sources)} stored profiles; the profile fit is "
            f"off by {100 * self.relative_error:.2f} % (L2)",
            f"snapshot: {shown(self.snapshot)}",
            f"use it: diffkit sample --run {shown(self.run)} --snapshot {shown(self.snapshot)}",
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run), "snapshot": str(self.snapshot), "sigma_rel": self.sigma_rel,
            "gamma": round(self.gamma, 4), "step": self.step, "kimg": self.nimg / 1000,
            "relative_error": self.relative_error, "sources": self.sources,
        }  # fmt: skip
