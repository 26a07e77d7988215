"""What ``diffkit phema`` is asked for, checked before any file is read."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from diffkit.errors import DiffkitError
from diffkit.train.phema import check_sigma_rel


@dataclass(frozen=True)
class PhemaConfig:
    run: Path
    sigma_rel: float
    kimg: float | None = None  # None: at the run's last stored profile; else the last one at or before it
    out: Path | None = None  # None: RUN/phema/posthoc-<sigma_rel>-<nimg>.safetensors

    def __post_init__(self) -> None:
        for name in ("run", "out"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        check_sigma_rel(self.sigma_rel)
        if self.kimg is not None and not (self.kimg >= 0 and math.isfinite(self.kimg)):
            raise DiffkitError(f"--kimg must be a finite number >= 0 (got {self.kimg})")
