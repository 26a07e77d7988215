"""What a resume restores, in one place: :class:`TrainingState` is built, saved and restored side by side.

Everything that changes from step to step lives here: the model and its averages (EMA, post-hoc EMA
profiles), the optimiser and grad scaler, the batcher's position, the loss generator (timesteps, noise,
label-dropout coins), the non-finite guard and the counters. A key written by :meth:`TrainingState.save`
and not read back by :meth:`TrainingState.restore` (or the reverse) is the bug this layout makes visible.
The file itself (``state-latest.pt``: its format number, the atomic write, the safe read) is
:mod:`diffkit.runs.state`'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffkit.console import err_console, shown
from diffkit.dataset.labels import DatasetLabels
from diffkit.device import Precision, channels_last_default, fused_adamw
from diffkit.models.unet import UNet
from diffkit.runs.state import save_state
from diffkit.train.batcher import DeviceBatcher
from diffkit.train.config import TrainConfig
from diffkit.train.ema import EMA
from diffkit.train.monitor import NonFiniteGuard
from diffkit.train.phema import PowerEMA

LOSS_SEED_OFFSET = 1  # the loss generator is seeded with seed + 1, the batcher with seed


@dataclass
class TrainingState:
    """The training state of one rank; ``ema`` and ``phema`` only on rank 0 (it alone writes them)."""

    model: UNet
    optimizer: torch.optim.Optimizer
    scaler: Any  # the precision's GradScaler (a no-op one unless fp16)
    batcher: DeviceBatcher
    loss_generator: torch.Generator
    guard: NonFiniteGuard
    ema: EMA | None
    phema: PowerEMA | None
    step: int = 0
    nimg: int = 0
    train_seconds: float = 0.0  # all sessions' training steps

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        model: UNet,
        dataset: Any,
        labels: DatasetLabels | None,
        precision: Precision,
        device: torch.device,
        main: bool,
    ) -> TrainingState:
        """A fresh state (step 0) with ``model`` moved to ``device`` in its memory format."""
        channels_last = (
            config.channels_last if config.channels_last is not None else channels_last_default(device)
        )
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model.to(device=device, memory_format=memory_format).train()
        ema = EMA(model, config.ema_halflife_kimg, config.ema_rampup) if main else None
        phema = PowerEMA(model) if main and config.phema_every_kimg > 0 else None
        optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=config.resolved_lr,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
            fused=fused_adamw(device),
        )
        batcher = DeviceBatcher(
            dataset,
            config.batch_size,
            device,
            config.seed,
            hflip=config.hflip,
            channels_last=channels_last,
            labels=None if labels is None else labels.indices,
        )
        loss_generator = torch.Generator(device=device).manual_seed(config.seed + LOSS_SEED_OFFSET)
        guard = NonFiniteGuard(config.max_bad_steps, tolerate_inf_grads=precision.name == "fp16")
        return cls(model, optimizer, precision.scaler, batcher, loss_generator, guard, ema, phema)

    @property
    def device_type(self) -> str:
        return self.loss_generator.device.type

    def save(self, path: Path, payload: dict[str, Any], world_size: int) -> None:
        """Write ``state-latest.pt`` (rank 0: the one rank that holds the EMA)."""
        assert self.ema is not None
        save_state(
            path,
            {
                "step": self.step,
                "nimg": self.nimg,
                "train_seconds": self.train_seconds,
                "model": self.model.state_dict(),
                "ema": self.ema.state_dict(),
                "phema": self.phema.state_dict() if self.phema is not None else None,
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(),
                "batcher": self.batcher.state_dict(),
                "loss_generator": self.loss_generator.get_state(),
                "device_type": self.device_type,
                "world_size": world_size,
                # Not restored (dropout is reseeded from integers every micro-batch); kept for inspection.
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if self.device_type == "cuda" else None,
                "guard": self.guard.state_dict(),
                "config": payload,
            },
        )

    def restore(self, saved: dict[str, Any], seed: int, world_size: int) -> None:
        """Continue from ``saved`` (a :meth:`save` read back; without ``ema`` on ranks other than 0)."""
        self.model.load_state_dict(saved["model"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        if self.phema is not None:
            self.phema.load_state_dict(saved["phema"])
        self.optimizer.load_state_dict(saved["optimizer"])
        if saved["scaler"]:  # empty when saved without fp16
            self.scaler.load_state_dict(saved["scaler"])
        self.batcher.load_state_dict(saved["batcher"])
        self.step, self.nimg = int(saved["step"]), int(saved["nimg"])
        self.train_seconds = float(saved["train_seconds"])
        saved_device = saved.get("device_type", self.device_type)
        if saved_device == self.device_type:
            self.loss_generator.set_state(saved["loss_generator"])
        else:  # CPU and CUDA generators have different state formats: continue, but not bit-exactly
            self.loss_generator.manual_seed(seed + LOSS_SEED_OFFSET + self.step)
            err_console.print(
                f"[yellow]state was saved on {shown(saved_device)}, resuming on {self.device_type}: "
                "training continues correctly but not bit-identically[/]"
            )
        saved_world = int(saved.get("world_size", 1))
        if saved_world != world_size:
            err_console.print(
                f"[yellow]the run was saved by {saved_world} process(es), resuming with {world_size}: the "
                "data order and noise continue exactly; gradients are summed in another order (float "
                "rounding) and dropout masks differ[/]"
            )
        self.guard.load_state_dict(saved["guard"])

    def position(self) -> tuple[dict[str, Any], torch.Tensor]:
        """Where the data and noise streams stand (what :meth:`rewind` returns to)."""
        return self.batcher.state_dict(), self.loss_generator.get_state()

    def rewind(self, position: tuple[dict[str, Any], torch.Tensor]) -> None:
        self.batcher.load_state_dict(position[0])
        self.loss_generator.set_state(position[1])
