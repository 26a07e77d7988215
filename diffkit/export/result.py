"""What ``diffkit export`` returns: which snapshot went where, in which format."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, shown
from diffkit.report.render import visible
from diffkit.report.sidecars import Skipped


@dataclass
class ExportResult(CommandResult):
    run: Path
    snapshot: Path
    out: Path
    format: str
    files: list[str]  # relative to out
    nimg: int | None  # training images the snapshot had seen
    metrics_report: Path | None  # the eval report the model card quotes, if any
    # files among the reports that could not be read (a pipe, too large, invalid JSON): not quoted
    skipped_reports: list[Skipped] = field(default_factory=list)
    # staging folders that killed exports had left beside OUT, removed before this one
    removed_staging: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run": str(self.run),
            "snapshot": str(self.snapshot),
            "out": str(self.out),
            "format": self.format,
            "files": self.files,
            "nimg": self.nimg,
            "metrics_report": str(self.metrics_report) if self.metrics_report else None,
        }
        # Only when there is something to say: the usual answer keeps its keys.
        if self.skipped_reports:
            out["skipped_reports"] = [skipped.to_dict() for skipped in self.skipped_reports]
        if self.removed_staging:
            out["removed_staging"] = self.removed_staging
        return out

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
        lines += [
            f"[yellow]skipped[/] report {shown(visible(skipped.name))}: {shown(skipped.reason)}"
            for skipped in self.skipped_reports
        ]
        lines += [f"removed {shown(name)}, left by an interrupted export" for name in self.removed_staging]
        return lines
