"""The typed, frozen training config and the run length it resolves to.

``TrainConfig`` is what the user asked for (the CLI fills it; tests build it directly) and is saved in
the run's ``config.json``; ``TrainPlan`` is what that means for a given dataset (total steps and images,
micro-batch, warm-up). Length is given by at most one of ``steps``, ``kimg`` or ``epochs``; with none,
the run is ``DEFAULT_EPOCHS`` passes over the data (what the seed project trained).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from diffkit.dataset.labels import LabelsMode
from diffkit.device import PRECISIONS, device_choices, is_device_name
from diffkit.diffusion.names import PREDICTIONS, SCHEDULES, TIMESTEP_SAMPLINGS
from diffkit.errors import DiffkitError
from diffkit.runs.folder import train_options

DEFAULT_EPOCHS = 50.0
LENGTH_FIELDS = ("steps", "kimg", "epochs")
# On --resume these come from the command line, not from the saved config.json.
# The time budgets and TensorBoard are per session: a resume gets a fresh budget, or none.
ALWAYS_FROM_REQUEST = (
    "resume", "dry_run", "progress", "report", "max_minutes", "max_cpu_seconds", "tensorboard", "given",
)  # fmt: skip
# On --resume these change only when given (as a value other than the default); otherwise the saved
# value holds, so that `--resume` alone continues exactly as the run started (same device, precision).
RESUMABLE_OVERRIDES = (
    *LENGTH_FIELDS, "device", "precision", "compile", "sample_every_kimg", "snapshot_every_kimg",
    "state_every_minutes", "log_every_steps", "cache_dir", "eval_every_kimg", "eval_samples", "eval_steps",
    "eval_reference",
)  # fmt: skip


def plain(value: Any) -> Any:
    """An Enum member as its value: config.json, file names and messages get ``"ddim"``, not a repr."""
    return value.value if isinstance(value, Enum) else value


# The default learning rate per preset. tiny: 4e-4, kept from benchmarks/bench_quality.py --levers (better
# than 2e-4 on both seeds at both budgets; its distance to the floor in 8x8-pixel FD was 0.86x 2e-4's at
# 120 s and 0.45x at 360 s, reports/bench_quality_levers.json); small and base keep 2e-4 (DDPM's), not
# yet measured at their size.
PRESET_LR: dict[str, float] = {"tiny": 4e-4, "small": 2e-4, "base": 2e-4}
# The default global batch per preset. tiny: 32, kept from the third lever run
# (reports/bench_quality_levers_3.json: at 4e-4 and equal CPU seconds, batch 32's distance to the floor was
# 0.46x / 0.65x batch 64's in 8x8-pixel FD at 120 s / 360 s, 0.80x / 0.93x in Inception space). On a CPU
# images per second barely depend on the batch, so halving it doubles the optimiser steps; on a GPU a
# smaller batch costs throughput, so small and base (the GPU presets) keep 64, not measured at their size.
PRESET_BATCH: dict[str, int] = {"tiny": 32, "small": 64, "base": 64}


@dataclass(frozen=True)
class TrainConfig:
    data: Path = Path("data/faces")
    out: Path | None = None  # the run folder; None: a new numbered folder under runs_dir
    runs_dir: Path = Path("runs")
    preset: str = "small"
    resolution: int = 64
    dropout: float | None = None  # None: the preset's dropout
    # The U-Net's base width and residual blocks per level; None: the preset's (width vs depth is a lever
    # benchmarks/bench_quality.py measures; see docs/train.md).
    channels: int | None = None
    num_res_blocks: int | None = None
    # Images per optimiser step (global batch). None: the preset's (PRESET_BATCH); train() fills it in before
    # anything reads it, so config.json records the value used and a resume keeps the saved one.
    batch_size: int | None = None
    grad_accum: int = 1  # micro-batches per step; batch_size must divide by it
    steps: int | None = None
    kimg: float | None = None
    epochs: float | None = None
    lr: float | None = None  # None: the preset's (PRESET_LR); config.json records the value used
    # Linear LR warm-up over the first warmup_kimg; a function of images seen only (not of the run's
    # length), so a run that is extended by --resume follows the same schedule as one planned long.
    warmup_kimg: float = 2.0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    ema_halflife_kimg: float = 50.0
    ema_rampup: float | None = 0.05  # half-life <= rampup * images seen, so short runs get a usable EMA
    # Post-hoc EMA (Karras et al. 2024): save the sigma_rel 0.05 and 0.10 power-function EMAs every K kimg
    # under phema/, so `diffkit phema` can make the EMA of any length afterwards; 0: off.
    phema_every_kimg: float = 0.0
    schedule: str = "cosine"
    prediction: str = "v"
    min_snr_gamma: float | None = 5.0
    # How each image's timestep is drawn: "uniform" or EDM's "lognormal" noise levels (a lever that
    # benchmarks/bench_quality.py measures; see docs/train.md for why the default stays).
    timestep_sampling: str = "uniform"
    timesteps: int = 1000
    hflip: bool = True
    # Class labels (subfolders or a metadata.jsonl label column): "auto" uses them when the data has
    # them, "none" trains unconditionally. Each label is replaced by the null label with probability
    # label_dropout, which trains the unconditional model classifier-free guidance needs (Ho & Salimans
    # 2022: 0.1-0.2 works best).
    labels: str = "auto"
    label_dropout: float = 0.1
    precision: str = "auto"
    compile: bool = False
    channels_last: bool | None = None  # None: on CUDA only (on CPU it made bf16 steps 1.6x slower)
    sample_every_kimg: float = 50.0  # fixed-noise EMA grid; 0: only at the end of the run
    snapshot_every_kimg: float = 250.0  # EMA safetensors; 0: only at the end of the run
    sample_grid: int = 64  # images in the fixed-noise grid
    sample_steps: int = 50  # DDIM steps for the grid
    # FID/KID of eval_samples fixed-noise EMA samples (eval_steps sampler steps) against the training
    # data every eval_every_kimg; 0: off. Same engine and feature cache as `diffkit eval`.
    eval_every_kimg: float = 0.0
    eval_samples: int = 256
    eval_steps: int = 25
    # Training images in that reference: a fixed random subset (seeded by the run's seed), 0: all. The
    # reference's features are extracted before the first step; all of a 30k-face folder is ~170 TFLOP of
    # Inception, tens of minutes on a CPU, for an FID of 256 samples whose noise a 5k reference no longer
    # sets (benchmarks/rehearsal.py found it at size).
    eval_reference: int = 5000
    state_every_minutes: float = 10.0  # how often state-latest.pt is refreshed (also at every snapshot)
    log_every_steps: int = 50  # stats.jsonl line every N steps (and at the end)
    max_bad_steps: int = 20  # consecutive non-finite steps before giving up
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    dry_run: bool = False
    progress: bool = True
    report: bool = True
    cache_dir: Path | None = None
    # Stop cleanly (state, snapshot, report; resumable) at the first step boundary after this many minutes
    # of the training loop's wall clock (the data cache and model building not counted); None: no budget.
    max_minutes: float | None = None
    # The same on the process's CPU time (all its threads): benchmarks give one-thread jobs equal compute.
    max_cpu_seconds: float | None = None
    # TensorBoard event files under the run folder's tensorboard/; None: on when tensorboard is installed.
    tensorboard: bool | None = None
    # The options the user gave explicitly (the CLI fills it): on --resume a given option that differs
    # from the saved run is refused even when it equals the default (`--preset small` on a tiny run).
    # Not saved in config.json.
    given: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        # JSON and the CLI may hand over strings for paths; keep the declared types.
        for name in ("data", "runs_dir", "out", "cache_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        for name in ("preset", "schedule", "prediction", "precision", "labels", "timestep_sampling"):
            object.__setattr__(self, name, plain(getattr(self, name)))
        self.validate()  # a bad option fails when the config is made, before any file is touched

    def validate(self) -> None:
        problems: list[str] = []
        given = [name for name in LENGTH_FIELDS if getattr(self, name) is not None]
        if len(given) > 1:
            problems.append(f"give only one of --steps, --kimg, --epochs (got {', '.join(given)})")
        for name in given:
            if getattr(self, name) <= 0:
                problems.append(f"--{name} must be positive")
        batch = self.resolved_batch_size  # None only for an unknown preset, which preset_config refuses
        if self.grad_accum < 1 or (batch is not None and (batch < 1 or batch % self.grad_accum)):
            problems.append(
                f"--batch-size ({batch}) must be a positive multiple of grad_accum ({self.grad_accum})"
            )
        for name in ("channels", "num_res_blocks"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                problems.append(f"--{name.replace('_', '-')} must be a positive integer (got {value!r})")
        if self.lr is not None and not self.lr > 0:  # also refuses NaN
            problems.append("--lr must be positive")
        choices = {
            "schedule": SCHEDULES,
            "prediction": PREDICTIONS,
            "timestep_sampling": TIMESTEP_SAMPLINGS,
            "precision": PRECISIONS,
            "labels": tuple(mode.value for mode in LabelsMode),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                problems.append(f"--{name} must be one of {', '.join(allowed)} (got {getattr(self, name)!r})")
        if not is_device_name(self.device):
            problems.append(f"--device must be one of {device_choices()} (got {self.device!r})")
        if self.sample_every_kimg < 0 or self.snapshot_every_kimg < 0:
            problems.append("--sample-every-kimg and snapshot_every_kimg must be >= 0")
        if not self.phema_every_kimg >= 0:  # also refuses NaN
            problems.append("--phema-every-kimg must be >= 0")
        if self.eval_every_kimg < 0:
            problems.append("--eval-every-kimg must be >= 0")
        if self.eval_samples < 2 or self.eval_steps < 1:
            problems.append("--eval-samples must be >= 2 and --eval-steps >= 1")
        if self.eval_reference < 0 or self.eval_reference == 1:
            problems.append("--eval-reference must be 0 (all training images) or >= 2")
        if (
            self.sample_grid < 1
            or self.sample_steps < 1
            or self.log_every_steps < 1
            or self.max_bad_steps < 1
        ):
            problems.append("sample_grid, sample_steps, log_every_steps and max_bad_steps must be >= 1")
        if not 0.0 <= self.label_dropout < 1.0:  # also refuses NaN
            problems.append(f"--label-dropout must be in [0, 1) (got {self.label_dropout})")
        for name in ("max_minutes", "max_cpu_seconds"):
            value = getattr(self, name)
            if value is not None and not value > 0:  # also refuses NaN
                problems.append(f"{name.replace('_', '-')} must be positive (got {value})")
        if self.ema_halflife_kimg <= 0:
            problems.append("ema_halflife_kimg must be positive")
        if problems:
            raise DiffkitError("invalid training options: " + "; ".join(problems))

    @property
    def resolved_batch_size(self) -> int | None:
        """The global batch: ``batch_size``, or the preset's default (:data:`PRESET_BATCH`)."""
        return self.batch_size if self.batch_size is not None else PRESET_BATCH.get(self.preset)

    @property
    def resolved_lr(self) -> float:
        """The learning rate after warm-up: ``lr``, or the preset's default (:data:`PRESET_LR`)."""
        return self.lr if self.lr is not None else PRESET_LR[self.preset]

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: (str(v) if isinstance(v, Path) else v)
            for f in dataclasses.fields(self)
            if f.name != "given"
            for v in [getattr(self, f.name)]
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DiffkitError(
                f"unknown training config keys {unknown}; was the run made by a newer diffkit?"
            )
        hints = typing.get_type_hints(cls)
        values = {name: _coerce(hints[name], value) for name, value in data.items()}
        return cls(**values)

    @classmethod
    def from_options(cls, **options: Any) -> TrainConfig:
        """Build from CLI options where ``None`` means "not given" (so the field keeps its default)."""
        return cls(**{name: value for name, value in options.items() if value is not None})


def load_run_config(run: Path) -> TrainConfig:
    """The training options a run was made with (the ``train`` section of its ``config.json``)."""
    return TrainConfig.from_dict(train_options(Path(run)))


def _coerce(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else hint
    if base is Path:
        return Path(value)
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _comparable(value: Any) -> Any:
    return value.absolute() if isinstance(value, Path) else value


def merge_for_resume(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    """The saved run config, with the few fields a resume may change taken from ``requested``.

    A field the user set (given explicitly, or to something other than the default) to a value other than
    the saved one is a conflict: resuming with a different model or schedule would silently train
    something else.
    """
    defaults = TrainConfig()

    def given(name: str) -> bool:
        return name in requested.given or getattr(requested, name) != getattr(defaults, name)

    conflicts = [
        f.name
        for f in dataclasses.fields(TrainConfig)
        if f.name not in (*RESUMABLE_OVERRIDES, *ALWAYS_FROM_REQUEST, "out", "runs_dir")
        and _comparable(getattr(requested, f.name)) != _comparable(getattr(saved, f.name))
        and given(f.name)
    ]
    if conflicts:
        raise DiffkitError(
            f"--resume continues the saved run, but {', '.join(conflicts)} differ from its config.json; "
            "drop those options or start a new run"
        )
    overrides = {name: getattr(requested, name) for name in ALWAYS_FROM_REQUEST}
    overrides |= {
        name: getattr(requested, name)
        for name in RESUMABLE_OVERRIDES
        if name not in LENGTH_FIELDS and given(name)
    }
    if any(getattr(requested, name) is not None for name in LENGTH_FIELDS):
        overrides.update({name: getattr(requested, name) for name in LENGTH_FIELDS})
    return dataclasses.replace(saved, **overrides)


@dataclass(frozen=True)
class TrainPlan:
    """The run length and batching that a config means for a dataset of ``dataset_size`` images."""

    total_steps: int
    total_nimg: int
    batch_size: int
    micro_batch: int
    warmup_nimg: int
    dataset_size: int

    @classmethod
    def resolve(cls, config: TrainConfig, dataset_size: int) -> TrainPlan:
        if config.steps is not None:
            steps = int(config.steps)
        elif config.kimg is not None:
            steps = math.ceil(config.kimg * 1000 / config.batch_size)
        else:
            epochs = config.epochs if config.epochs is not None else DEFAULT_EPOCHS
            steps = math.ceil(epochs * dataset_size / config.batch_size)
        steps = max(steps, 1)
        total_nimg = steps * config.batch_size
        warmup = int(config.warmup_kimg * 1000)
        return cls(
            steps, total_nimg, config.batch_size, config.batch_size // config.grad_accum, warmup, dataset_size
        )

    def lr_at(self, base_lr: float, nimg: int) -> float:
        if self.warmup_nimg <= 0:
            return base_lr
        return base_lr * min((nimg + self.batch_size) / self.warmup_nimg, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
