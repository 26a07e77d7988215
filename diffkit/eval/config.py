"""The typed, frozen configuration of ``diffkit eval``.

The CLI only builds an :class:`EvalConfig` (validated when it is made); :func:`diffkit.eval.run.evaluate`
does the work.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from diffkit.device import device_choices, is_device_name
from diffkit.errors import DiffkitError

ALL_METRICS = ("fid", "kid", "is", "prc", "memorization")
DEFAULT_METRICS = ("fid", "kid", "is")
ENGINES = ("torch-fidelity", "clean-fid")
FEATURE_SPACES = ("inception", "dinov2")


class EngineName(str, Enum):
    """The ``--engine`` choices (their numbers are not comparable with each other)."""

    torch_fidelity = "torch-fidelity"
    clean_fid = "clean-fid"


class FeatureSpace(str, Enum):
    """The ``--features`` choices: the space FID/KID and the k-NN metrics are computed in (IS: Inception)."""

    inception = "inception"
    dinov2 = "dinov2"


def parse_metrics(text: str) -> tuple[str, ...]:
    """``"fid,kid"`` -> ``("fid", "kid")``; unknown names are a user error that lists the valid ones."""
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    aliases = {"isc": "is", "pr": "prc", "prdc": "prc", "memo": "memorization"}
    names = [aliases.get(name, name) for name in names]
    unknown = [name for name in names if name not in ALL_METRICS]
    if unknown:
        raise DiffkitError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(ALL_METRICS)}")
    if not names:
        raise DiffkitError(f"--metrics is empty; choose from {', '.join(ALL_METRICS)}")
    return tuple(dict.fromkeys(names))  # keep order, drop repeats


@dataclass(frozen=True)
class EvalConfig:
    """Everything one evaluation depends on; two equal configs give the same numbers."""

    samples: int = 1000
    metrics: tuple[str, ...] = DEFAULT_METRICS
    run: Path | None = None
    generated: Path | None = None
    reference: Path | None = None
    reference_samples: int | None = None  # None = every image of the reference folder
    engine: str = "torch-fidelity"
    features: str = "inception"  # the space of fid/kid/prc (see FEATURE_SPACES); IS stays Inception's
    weights: Path | None = None
    vgg_weights: Path | None = None
    dinov2_weights: Path | None = None
    save_stats: Path | None = None  # write the reference's feature statistics here (.npz)
    batch_size: int = 64
    device: str = "auto"
    report: Path | None = None
    cache_dir: Path | None = None
    seed: int = 0  # sampling seed for --run; bootstrap and subset draws derive from it
    sampler: str = "ddim"
    steps: int = 50
    bootstrap: int = 50
    kid_subsets: int = 100
    prc_k: int = 3
    write_report: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        # The CLI hands over Enum members; keep plain strings (they go into JSON and messages).
        for name in ("engine", "sampler", "features"):
            value = getattr(self, name)
            object.__setattr__(self, name, value.value if isinstance(value, Enum) else value)
        self.validate()

    def validate(self) -> None:
        if self.samples < 2:
            raise DiffkitError(f"--samples must be at least 2 (got {self.samples})")
        if (self.run is None) == (self.generated is None):
            raise DiffkitError("give exactly one of --run runs/NAME or --generated DIR")
        if self.engine not in ENGINES:
            raise DiffkitError(f"--engine must be one of {', '.join(ENGINES)} (got {self.engine!r})")
        if self.features not in FEATURE_SPACES:
            raise DiffkitError(
                f"--features must be one of {', '.join(FEATURE_SPACES)} (got {self.features!r})"
            )
        if self.save_stats is not None and self.save_stats.suffix.lower() != ".npz":
            raise DiffkitError(f"--save-stats must name an .npz file (got {self.save_stats})")
        if (
            self.save_stats is not None
            and self.reference is not None
            and self.reference.suffix.lower() == ".npz"
        ):
            raise DiffkitError(
                "--save-stats needs reference images; --reference is already a statistics file"
            )
        if not is_device_name(self.device):
            raise DiffkitError(f"--device must be one of {device_choices()} (got {self.device!r})")
        if self.batch_size < 1:
            raise DiffkitError(f"--batch-size must be positive (got {self.batch_size})")
        if self.reference_samples is not None and self.reference_samples < 2:
            raise DiffkitError(f"--reference-samples must be at least 2 (got {self.reference_samples})")
        if self.bootstrap < 0:
            raise DiffkitError(f"--bootstrap must be >= 0 (got {self.bootstrap})")
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown or not self.metrics:
            raise DiffkitError(f"metrics must be a non-empty subset of {', '.join(ALL_METRICS)}")
        if self.run is None and self.reference is None:
            raise DiffkitError(
                "--reference DIR is required with --generated (with --run it defaults to the "
                "run's training data)"
            )
