"""What ``diffkit export`` returns: which snapshot went where, in which format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, shown


@dataclass
class ExportResult(CommandResult):
    run: Path
    snapshot: Path
    out: Path
    format: str
    files: list[str]  # relative to out
    nimg: int | None  # training images the snapshot had seen
    metrics_report: Path | None  # the eval report the model card quotes, if any

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": str(self.run),
            "snapshot": str(self.snapshot),
            "out": str(self.out),
            "format": self.format,
            "files": self.files,
            "nimg": self.nimg,
            "metrics_report": str(self.metrics_report) if self.metrics_report else None,
        }

    def summary_lines(self) -> list[str]:
        # Paths are user text: shown() keeps `[bold]` in a folder name literal.
        lines = [
            f"[green]exported[/] {shown(self.snapshot)} as {self.format} to {shown(self.out)}",
            f"files: {', '.join(self.files)}",
        ]
        if self.metrics_report is not None:
            lines.append(f"model card metrics from {shown(self.metrics_report)}")
        else:
            lines.append("model card: no eval report of this run found, so it claims no metrics")
        return lines
