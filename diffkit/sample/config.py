"""The typed, frozen configuration of ``diffkit sample``, validated when it is made."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from diffkit.device import PRECISIONS, device_choices, is_device_name
from diffkit.diffusion.guidance import guidance_problem
from diffkit.diffusion.names import SAMPLERS
from diffkit.errors import DiffkitError

ANIMATION_SUFFIXES = (".gif", ".webp", ".png", ".apng")
GRID_MAX = 256  # --grid shows at most this many images (the first): a grid of all N would grow with N
# (1 + w) = 2: twice the conditional direction. Ho & Salimans 2022 find small w best for FID and
# larger w best for class fidelity; a user who names a label wants that label.
DEFAULT_GUIDANCE = 1.0


def guidance_problems(label: str | None, guidance: float | None) -> list[str]:
    """The guidance rules that need no run: a usable weight, and only with a label."""
    if guidance is None:
        return []
    problems = [problem] if (problem := guidance_problem(guidance)) is not None else []
    if label is None:
        problems.append("--guidance needs --label NAME (unconditional samples use no guidance)")
    return problems


@dataclass(frozen=True)
class SampleConfig:
    run: Path | None = None
    n: int = 64
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0  # DDIM noise: 0 deterministic, 1 like DDPM
    seed: int = 0
    out: Path | None = None  # default: <run>/generated/<snapshot>-<sampler><steps>-seed<seed>
    grid: bool = False
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    snapshot: Path | None = None
    progress: bool = True
    label: str | None = None  # a class of a labelled run; None: unconditional (the null label)
    guidance: float | None = None  # classifier-free guidance w; None: DEFAULT_GUIDANCE with --label
    gif: Path | None = None  # also write the denoising animation here (.gif, .webp or .png/.apng)
    report: Path | None = None  # None: reports/sample-<time>.html
    write_report: bool = True

    def __post_init__(self) -> None:
        # The CLI hands over Enum members and maybe strings for paths; keep the declared types.
        for name in ("sampler", "precision"):
            value = getattr(self, name)
            object.__setattr__(self, name, value.value if isinstance(value, Enum) else value)
        for name in ("run", "out", "snapshot", "gif", "report"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        self.validate()

    def validate(self) -> None:
        """All problems in one line (a ``DiffkitError``), before a snapshot is read."""
        problems = []
        for name, flag in (("n", "--n"), ("steps", "--steps"), ("batch_size", "--batch-size")):
            if getattr(self, name) < 1:
                problems.append(f"{flag} must be at least 1 (got {getattr(self, name)})")
        if not self.eta >= 0:  # also refuses NaN
            problems.append(f"--eta must be >= 0 (got {self.eta})")
        problems += guidance_problems(self.label, self.guidance)
        if self.gif is not None and self.gif.suffix.lower() not in ANIMATION_SUFFIXES:
            problems.append(f"--gif must end in {', '.join(ANIMATION_SUFFIXES)} (got {self.gif.name!r})")
        if self.sampler not in SAMPLERS:
            problems.append(f"--sampler must be one of {', '.join(SAMPLERS)} (got {self.sampler!r})")
        if self.precision not in PRECISIONS:
            problems.append(f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        if not is_device_name(self.device):
            problems.append(f"--device must be one of {device_choices()} (got {self.device!r})")
        if problems:
            raise DiffkitError("invalid sample options: " + "; ".join(problems))
