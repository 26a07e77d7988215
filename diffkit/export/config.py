"""The typed, frozen configuration of ``diffkit export``, validated when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from diffkit.errors import DiffkitError


class ExportFormat(str, Enum):
    """``--format`` choices (Typer lists them; configs also accept the plain strings)."""

    diffusers = "diffusers"


FORMATS = tuple(name.value for name in ExportFormat)


@dataclass(frozen=True)
class ExportConfig:
    run: Path
    out: Path
    format: str = "diffusers"
    snapshot: Path | None = None  # None: the run's latest EMA snapshot
    force: bool = False  # write into a non-empty OUT, replacing what the export writes there
    # Where `diffkit eval --run RUN` wrote its reports: the model card quotes the newest one's metrics.
    reports_dir: Path = Path("reports")

    def __post_init__(self) -> None:
        # The CLI hands over Enum members and maybe strings for paths; keep the declared types.
        if isinstance(self.format, Enum):
            object.__setattr__(self, "format", self.format.value)
        for name in ("run", "out", "snapshot", "reports_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.format not in FORMATS:
            raise DiffkitError(f"unknown export format {self.format!r}; use one of: {', '.join(FORMATS)}")
