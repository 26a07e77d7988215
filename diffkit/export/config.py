"""The typed, frozen configuration of ``diffkit export``, validated when it is made."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from diffkit.errors import DiffkitError

# An SPDX-style id or a Hugging Face licence name: letters, digits, "." "+" "-"; safe as a bare YAML scalar.
LICENSE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")


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
    license: str | None = None  # the card's `license:` (an id such as mit or cc-by-4.0); None: "unknown"

    def __post_init__(self) -> None:
        # The CLI hands over Enum members and maybe strings for paths; keep the declared types.
        if isinstance(self.format, Enum):
            object.__setattr__(self, "format", self.format.value)
        for name in ("run", "out", "snapshot", "reports_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if self.license is not None and not LICENSE_ID.fullmatch(self.license):
            raise DiffkitError(
                "--license must be a licence id such as mit, apache-2.0, cc-by-4.0 or other "
                f"(got {self.license!r})"
            )
        if self.format not in FORMATS:
            raise DiffkitError(f"unknown export format {self.format!r}; use one of: {', '.join(FORMATS)}")
