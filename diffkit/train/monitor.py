"""Everything around the optimiser step: NaN/inf guard, stats.jsonl, sample grids, Ctrl-C."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn

from diffkit.atomic import atomic_open, atomic_write_text
from diffkit.console import err_console
from diffkit.device import Precision
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.pixels import to_uint8
from diffkit.diffusion.samplers import DDIMSampler, run_sampler
from diffkit.errors import DiffkitError
from diffkit.report.grid import make_grid, progression_image
from diffkit.runs.folder import (
    EVAL_KIND,
    PROGRESSION_FILE,
    STATE_FILE,
    eval_records,
    grid_path,
    list_grids,
    read_stats,
)
from diffkit.train.config import TrainConfig

GRID_SEED_OFFSET = 2  # fixed grid noise comes from seed + 2 (batcher: seed, loss: seed + 1)
SAMPLE_CHUNK = 64
STOP_KIND = "stop"  # a stats.jsonl line saying that a session stopped on its time budget (no loss key)


class NonFiniteGuard:
    """Skips steps whose loss or gradient norm is NaN/inf; gives up after ``max_bad_steps`` in a row.

    With fp16 the GradScaler already skips steps with inf gradients (that is how it finds its scale),
    so there only a non-finite loss counts as a failure.
    """

    def __init__(self, max_bad_steps: int, tolerate_inf_grads: bool = False) -> None:
        self.max_bad_steps = max_bad_steps
        self.tolerate_inf_grads = tolerate_inf_grads
        self.streak = 0
        self.skipped = 0

    def should_step(self, loss: float, grad_norm: float) -> bool:
        ok = math.isfinite(loss) and (self.tolerate_inf_grads or math.isfinite(grad_norm))
        if ok:
            self.streak = 0
            return True
        self.streak += 1
        self.skipped += 1
        return False

    def raise_if_exhausted(self, step: int, nimg: int) -> None:
        if self.streak >= self.max_bad_steps:
            raise DiffkitError(
                f"loss or gradients were NaN/inf for {self.streak} steps in a row (step {step}, "
                f"{nimg / 1000:.2f} kimg); lower --lr or use --precision bf16/fp32; "
                f"{STATE_FILE} still holds the last good state"
            )

    def state_dict(self) -> dict[str, int]:
        return {"streak": self.streak, "skipped": self.skipped}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.streak, self.skipped = int(state["streak"]), int(state["skipped"])


class StatsWriter:
    """Appends one JSON line per logging window to stats.jsonl; on resume drops lines past the state.

    Evaluation records (FID/KID during training, ``"kind": "eval"``) go into the same file with their
    step, so the resume truncation treats them like the loss lines: a record past the saved state is
    dropped and measured again when training passes that step again. Loss readers skip them, since
    they have no ``loss`` key.
    """

    def __init__(self, path: Path, resume_step: int) -> None:
        self.path = path
        kept = [r for r in read_stats(path) if r["step"] <= resume_step] if resume_step > 0 else []
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self._eval_steps = {r["step"] for r in eval_records(kept)}
        self.smoothed = math.nan
        self._reset()

    def _reset(self) -> None:
        self.loss_sum = self.norm_sum = self.seconds = 0.0
        self.count = self.finite = self.images = 0

    def add(self, loss: float, grad_norm: float, seconds: float, images: int) -> None:
        self.count += 1
        self.seconds += seconds
        self.images += images
        if math.isfinite(loss) and math.isfinite(grad_norm):
            self.finite += 1
            self.loss_sum += loss
            self.norm_sum += grad_norm
            self.smoothed = loss if math.isnan(self.smoothed) else 0.9 * self.smoothed + 0.1 * loss

    def flush(
        self, step: int, nimg: int, lr: float, train_seconds: float, skipped: int, loss_scale: float | None
    ) -> dict[str, Any] | None:
        """Append the window's line and return it (None when no step was added since the last one)."""
        if self.count == 0:
            return None
        record: dict[str, Any] = {
            "step": step,
            "kimg": nimg / 1000,
            "loss": self.loss_sum / self.finite if self.finite else None,
            "grad_norm": self.norm_sum / self.finite if self.finite else None,
            "lr": lr,
            "img_per_s": self.images / self.seconds if self.seconds > 0 else None,
            "train_seconds": train_seconds,
            "skipped_steps": skipped,
        }
        if loss_scale is not None:
            record["loss_scale"] = loss_scale
        self._append(record)
        self._reset()
        return record

    def log_eval(self, record: dict[str, Any]) -> None:
        """Append an evaluation record (``TrainingEvaluator.evaluate``'s; it carries ``step``)."""
        self._append({"kind": EVAL_KIND} | record)
        self._eval_steps.add(record["step"])

    def log_stop(self, record: dict[str, Any]) -> None:
        """Append why the session stopped early on its own (a time budget: ``TimeBudget.record``)."""
        self._append({"kind": STOP_KIND} | record)

    def has_eval(self, step: int) -> bool:
        """Whether stats.jsonl already holds an evaluation at ``step`` (a finished run resumed as is)."""
        return step in self._eval_steps

    def _append(self, record: dict[str, Any]) -> None:
        # O_NOFOLLOW: a stats.jsonl swapped for a symlink mid-run is refused, not appended through.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o666)
        except OSError as error:
            raise DiffkitError(f"cannot append to {self.path} ({error.strerror})") from None
        with os.fdopen(fd, "a") as handle:
            handle.write(json.dumps(record) + "\n")

    def first_and_last_loss(self) -> tuple[float | None, float | None]:
        return first_and_last_loss(self.path)


def first_and_last_loss(stats_path: Path) -> tuple[float | None, float | None]:
    """The mean loss of the first and the last window in stats.jsonl (evaluation lines have none)."""
    losses = [r["loss"] for r in read_stats(stats_path) if r.get("loss") is not None]
    if not losses:
        return None, None
    return (losses[0] if len(losses) > 1 else None), losses[-1]  # one window: nothing to compare


class StopOnInterrupt:
    """First Ctrl-C: finish the current step, save, exit cleanly. Second Ctrl-C: abort at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        err_console.print(
            "[yellow]Ctrl-C: saving state after this step (press again to abort without saving)[/]"
        )

    def __enter__(self) -> StopOnInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


@torch.no_grad()
def write_sample_grid(
    ema_model: nn.Module,
    diffusion: GaussianDiffusion,
    config: TrainConfig,
    precision: Precision,
    run_dir: Path,
    nimg: int,
) -> Path:
    """DDIM samples from the same fixed noise every time, so grids over a run are comparable."""
    device = next(ema_model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed + GRID_SEED_OFFSET)
    noise = torch.randn(config.sample_grid, 3, config.resolution, config.resolution, generator=generator)
    sampler = DDIMSampler(diffusion, eta=0.0)
    chunks = []
    for chunk in noise.split(SAMPLE_CHUNK):
        with precision.autocast():
            chunks.append(to_uint8(run_sampler(ema_model, sampler, chunk.to(device), config.sample_steps)))
    path = grid_path(run_dir, nimg)
    with atomic_open(path, "wb", durable=False) as handle:
        make_grid(torch.cat([torch.from_numpy(c) for c in chunks]).numpy()).save(handle, format="PNG")
    return path


def write_progression(run_dir: Path, resolution: int) -> Path | None:
    image = progression_image(list_grids(run_dir), resolution)
    if image is None:
        return None
    path = run_dir / PROGRESSION_FILE
    with atomic_open(path, "wb", durable=False) as handle:
        image.save(handle, format="PNG")
    return path
