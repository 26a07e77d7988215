"""One optimisation step: ``grad_accum`` micro-batches -> all-reduce -> clip -> AdamW -> EMA update.

The step draws the whole global batch's label-dropout coins, timesteps and noise (in that order) from
the loss generator on every rank and keeps this rank's slice, so global batch position i gets the same
draws for any rank count; dropout in the U-Net is reseeded from (seed, step, rank, micro-batch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from diffkit.device import Precision
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.models.unet import UNet
from diffkit.train import distributed
from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.distributed import World
from diffkit.train.state import TrainingState


def drop_labels(
    labels: torch.Tensor | None, dropout: float, null_label: int, coins: torch.Tensor | None
) -> torch.Tensor | None:
    """Each label becomes ``null_label`` where its coin (uniform, from the loss generator, drawn for the
    whole global batch) is below ``dropout``; resumable and the same for any rank count."""
    if labels is None or coins is None:
        return labels
    return torch.where(coins.to(labels.device) < dropout, torch.full_like(labels, null_label), labels)


def micro_batches(batch_size: int, grad_accum: int, world: World) -> list[slice]:
    """This rank's slice of a global batch, cut into ``grad_accum`` micro-batches."""
    part = distributed.share(batch_size, world)
    micro = (part.stop - part.start) // grad_accum
    return [slice(part.start + j * micro, part.start + (j + 1) * micro) for j in range(grad_accum)]


@dataclass
class StepSetup:
    """What every step uses unchanged: the config, the wrapped model and this rank's micro-batches."""

    config: TrainConfig
    plan: TrainPlan
    diffusion: GaussianDiffusion
    precision: Precision
    world: World
    ddp_model: nn.Module  # DistributedDataParallel on several ranks, else the model itself
    train_model: nn.Module  # ddp_model, compiled with --compile
    micro_parts: list[slice]
    device: torch.device
    labelled: bool  # the data set has class labels (then label dropout draws its coins)
    null_label: int  # the U-Net's class count: the label dropped labels become

    @classmethod
    def create(
        cls,
        config: TrainConfig,
        plan: TrainPlan,
        diffusion: GaussianDiffusion,
        precision: Precision,
        world: World,
        model: UNet,
        device: torch.device,
        labelled: bool,
    ) -> StepSetup:
        """Wrap ``model`` (after a resume has loaded it: DDP broadcasts rank 0's weights to the others)."""
        ddp_model = distributed.wrap(model, world, device)
        train_model = torch.compile(ddp_model) if config.compile else ddp_model
        parts = micro_batches(config.batch_size, config.grad_accum, world)
        null_label = model.config.num_classes
        return cls(
            config,
            plan,
            diffusion,
            precision,
            world,
            ddp_model,
            train_model,
            parts,
            device,
            labelled,
            null_label,
        )


@dataclass(frozen=True)
class StepOutcome:
    loss: float  # the global batch's mean loss (over every rank)
    grad_norm: float
    stop_voted: bool  # some rank was asked to stop (Ctrl-C, SIGTERM) before this step's all-reduce
    seconds: float


def train_step(state: TrainingState, setup: StepSetup, stop_requested: Callable[[], bool]) -> StepOutcome:
    """Take one step from ``state`` and advance it (step, images, training time).

    ``stop_requested`` is asked after the micro-batches, so a signal that arrives during them is voted
    on in this step's all-reduce."""
    config, precision, world = setup.config, setup.precision, setup.world
    started = time.perf_counter()
    optimizer, batcher, generator, device = state.optimizer, state.batcher, state.loss_generator, setup.device
    for group in optimizer.param_groups:
        group["lr"] = setup.plan.lr_at(config.resolved_lr, state.nimg)
    optimizer.zero_grad(set_to_none=True)
    indices, flips = batcher.next_indices()
    # The global batch's coins, timesteps and noise, in that order, on every rank.
    coins = None
    if setup.labelled and config.label_dropout > 0:
        coins = torch.rand(config.batch_size, generator=generator, device=generator.device)
    shape = (config.batch_size, 3, config.resolution, config.resolution)
    noise_levels, noise = setup.diffusion.draw_training_inputs(shape, generator, device)
    loss_sum = torch.zeros((), device=device)
    for j, part in enumerate(setup.micro_parts):
        x0, labels = batcher.gather(indices[part], flips[part])
        labels = drop_labels(
            labels, config.label_dropout, setup.null_label, None if coins is None else coins[part]
        )
        distributed.reseed_dropout(config.seed, state.step, world.rank, j)
        with distributed.no_sync(setup.ddp_model, last=j == len(setup.micro_parts) - 1):
            with precision.autocast():
                loss = setup.diffusion.loss(
                    setup.train_model, x0, labels=labels, inputs=(noise_levels[part], noise[part])
                )
            precision.scaler.scale(loss / config.grad_accum).backward()
        loss_sum += loss.detach()
    # Mean loss over ranks and whether any rank was asked to stop, in one all-reduce.
    flag = torch.tensor(1.0 if stop_requested() else 0.0, device=device)
    shared = world.sum(torch.stack([loss_sum / config.grad_accum, flag]))
    precision.scaler.unscale_(optimizer)
    max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(state.model.parameters(), max_norm)
    loss_total, stop_votes, norm = torch.cat([shared, grad_norm.float()[None]]).tolist()
    loss_value = loss_total / world.size
    # No collective after this point in the step: a peer failure always finds the model as it was
    # before the step (the loop rewinds the data and noise streams to match).
    if state.guard.should_step(loss_value, norm):
        precision.scaler.step(optimizer)
        precision.scaler.update()
        if state.ema is not None:
            state.ema.update(state.model, config.batch_size, state.nimg)
        if state.phema is not None:
            state.phema.update(state.model, state.step + 1)
    else:
        precision.scaler.update()  # fp16: lowers the scale and clears the unscale_ record
        state.guard.raise_if_exhausted(state.step, state.nimg)
    state.step += 1
    state.nimg += config.batch_size
    seconds = time.perf_counter() - started
    state.train_seconds += seconds
    return StepOutcome(loss_value, norm, stop_votes > 0, seconds)
