"""The training loop (internals of ``diffkit train``; the entry is :func:`diffkit.train.run.train`).

One step = ``grad_accum`` micro-batches -> clip -> AdamW -> EMA update, counted in images (kimg).
Every source of randomness is fixed by integers or by an explicit generator whose state goes into
``state-latest.pt`` (the batcher's position; the loss generator for timesteps, noise and label-dropout
coins; the global torch RNG used by dropout is reseeded from (seed, step, rank, micro-batch)), so on
CPU in fp32 a resumed run is bit-identical to an uninterrupted one. Sampling grids use their own
generators and the EMA model in eval mode, so they never disturb training randomness.

Under torchrun (:mod:`diffkit.train.distributed`) every rank runs this loop on its slice of each global
batch; rank 0 alone keeps the EMA and writes the run folder, the others wait for it at the end.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from diffkit.console import Bar, err_console, shown
from diffkit.dataset.labels import DatasetLabels
from diffkit.device import Precision, apply_backend_settings, channels_last_default, fused_adamw
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.models.unet import UNet
from diffkit.runs.folder import PROGRESSION_FILE, STATE_FILE, STATS_FILE, phema_path, write_run_config
from diffkit.runs.snapshots import save_ema_snapshot
from diffkit.train import distributed
from diffkit.train.batcher import DeviceBatcher
from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.distributed import World
from diffkit.train.ema import EMA
from diffkit.train.evaluation import TrainingEvaluator
from diffkit.train.monitor import (
    NonFiniteGuard,
    StatsWriter,
    StopOnInterrupt,
    write_progression,
    write_sample_grid,
)
from diffkit.train.phema import PowerEMA
from diffkit.train.report import write_train_report
from diffkit.train.result import TrainResult

LOSS_SEED_OFFSET = 1  # the loss generator is seeded with seed + 1, the batcher with seed
MIN_LOG_POINTS = 20


def _kimg(nimg: int) -> str:
    kimg = nimg / 1000
    return f"{kimg:.1f}" if kimg < 1000 else f"{kimg:.0f}"


def _bar_info(nimg: int, loss: float, img_per_s: float) -> str:
    """Compact, so it fits the bar's 28-character info text: ``12.3kimg loss .041 63img/s``."""
    loss_text = f"{loss:.3f}".removeprefix("0") if math.isfinite(loss) else "-"
    return f"{_kimg(nimg)}kimg loss {loss_text} {img_per_s:.0f}img/s"


def _crossed(every_nimg: int, nimg: int, batch: int) -> bool:
    """Whether the step that ended at ``nimg`` crossed a multiple of ``every_nimg`` (0: never)."""
    return every_nimg > 0 and nimg // every_nimg > (nimg - batch) // every_nimg


def _drop_labels(
    labels: torch.Tensor | None, dropout: float, model: UNet, coins: torch.Tensor | None
) -> torch.Tensor | None:
    """Each label becomes the null label where its coin (uniform, from the loss generator, drawn for
    the whole global batch) is below ``dropout``; resumable and the same for any rank count."""
    if labels is None or coins is None:
        return labels
    return torch.where(
        coins.to(labels.device) < dropout, torch.full_like(labels, model.config.num_classes), labels
    )


def train_loop(
    config: TrainConfig,
    plan: TrainPlan,
    payload: dict[str, Any],
    model: UNet,
    dataset: Any,
    device: torch.device,
    precision: Precision,
    run_dir: Path,
    result: TrainResult,
    state: dict[str, Any] | None,
    labels: DatasetLabels | None = None,
    world: World | None = None,
) -> TrainResult:
    world = world or World()
    main = world.is_main
    distributed.check_divisible(config.batch_size, config.grad_accum, world)
    channels_last = (
        config.channels_last if config.channels_last is not None else channels_last_default(device)
    )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    # Only rank 0 writes snapshots and grids, so only it keeps the EMA.
    ema = EMA(model, config.ema_halflife_kimg, config.ema_rampup) if main else None
    # Post-hoc EMA (--phema-every-kimg): the two power-function profiles, saved under phema/
    phema = PowerEMA(model) if main and config.phema_every_kimg > 0 else None
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.resolved_lr,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        fused=fused_adamw(device),
    )
    diffusion = GaussianDiffusion.create(
        config.schedule, config.prediction, config.timesteps, config.min_snr_gamma, config.timestep_sampling
    )
    # One global batch per step from the batcher; this rank gathers its slice of it, micro-batch by
    # micro-batch (grad_accum of them).
    batcher = DeviceBatcher(
        dataset,
        config.batch_size,
        device,
        config.seed,
        hflip=config.hflip,
        channels_last=channels_last,
        labels=None if labels is None else labels.indices,
    )
    rank_part = distributed.share(config.batch_size, world)
    micro = (rank_part.stop - rank_part.start) // config.grad_accum
    micro_parts = [
        slice(rank_part.start + j * micro, rank_part.start + (j + 1) * micro)
        for j in range(config.grad_accum)
    ]
    batch_shape = (config.batch_size, 3, config.resolution, config.resolution)
    loss_generator = torch.Generator(device=device).manual_seed(config.seed + LOSS_SEED_OFFSET)
    guard = NonFiniteGuard(config.max_bad_steps, tolerate_inf_grads=precision.name == "fp16")
    step = nimg = 0
    train_seconds = 0.0
    state_path = run_dir / STATE_FILE
    if state is not None:
        model.load_state_dict(state["model"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if phema is not None:
            phema.load_state_dict(state["phema"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when saved without fp16
            precision.scaler.load_state_dict(state["scaler"])
        batcher.load_state_dict(state["batcher"])
        step, nimg, train_seconds = int(state["step"]), int(state["nimg"]), float(state["train_seconds"])
        if state.get("device_type", device.type) == device.type:
            loss_generator.set_state(state["loss_generator"])
        else:  # CPU and CUDA generators have different state formats: continue, but not bit-exactly
            loss_generator.manual_seed(config.seed + LOSS_SEED_OFFSET + step)
            err_console.print(
                f"[yellow]state was saved on {shown(state['device_type'])}, resuming on {device.type}: "
                "training continues correctly but not bit-identically[/]"
            )
        saved_world = int(state.get("world_size", 1))
        if saved_world != world.size:
            err_console.print(
                f"[yellow]the run was saved by {saved_world} process(es), resuming with {world.size}: the "
                "data order and noise continue exactly; gradients are summed in another order (float "
                "rounding) and dropout masks differ[/]"
            )
        guard.load_state_dict(state["guard"])
        result.resumed_from_step = step
        if step > plan.total_steps:  # checked before config.json is rewritten with the shorter length
            raise DiffkitError(
                f"{run_dir} is already at step {step}, past the requested total of {plan.total_steps} "
                "steps; give a longer --steps/--kimg/--epochs, or none to keep the run's own length"
            )
        message = f"resuming {shown(run_dir)} at step {step} ({nimg / 1000:.2f} kimg)"
        err_console.print(message, highlight=False, soft_wrap=True)
    if main:
        write_run_config(run_dir, payload)
    ddp_model = distributed.wrap(model, world, device)
    train_model = torch.compile(ddp_model) if config.compile else ddp_model
    apply_backend_settings(device)

    def save_state() -> None:
        assert ema is not None
        save_state(
            state_path,
            {
                "step": step,
                "nimg": nimg,
                "train_seconds": train_seconds,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "phema": phema.state_dict() if phema is not None else None,
                "optimizer": optimizer.state_dict(),
                "scaler": precision.scaler.state_dict(),
                "batcher": batcher.state_dict(),
                "loss_generator": loss_generator.get_state(),
                "device_type": device.type,
                "world_size": world.size,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "guard": guard.state_dict(),
                "config": payload,
            },
        )

    def save_phema() -> None:
        assert phema is not None
        for sigma_rel, average in zip(phema.sigma_rels, phema.models, strict=True):
            path = phema_path(run_dir, sigma_rel, nimg)
            extra = {"sigma_rel": str(sigma_rel)}
            save_ema_snapshot(run_dir, average, nimg, step, payload, path=path, extra=extra)

    def sample_grid() -> None:
        assert ema is not None
        write_sample_grid(ema.model, diffusion, config, precision, run_dir, nimg)
        write_progression(run_dir, config.resolution)

    # Rank 0 writes stats.jsonl; the others count nothing.
    stats = StatsWriter(run_dir / STATS_FILE, resume_step=step if config.resume else 0) if main else None
    # At least ~MIN_LOG_POINTS lines per run, so a short run still gets a loss curve (not one point).
    log_every = max(1, min(config.log_every_steps, plan.total_steps // MIN_LOG_POINTS))

    def flush_stats() -> None:
        if stats is not None:
            loss_scale = precision.scaler.get_scale() if precision.name == "fp16" else None
            stats.flush(step, nimg, optimizer.param_groups[0]["lr"], train_seconds, guard.skipped, loss_scale)

    # FID/KID during training (--eval-every-kimg), on rank 0 only: None when off or without Inception
    # weights. Made before the training bar, since extracting the reference features shows its own bar.
    evaluator = TrainingEvaluator.create(config, dataset, device, precision) if main else None

    def evaluate() -> None:
        assert evaluator is not None and ema is not None and stats is not None
        bar.update(info="FID/KID")
        stats.log_eval(evaluator.evaluate(ema.model, diffusion, nimg, step))

    sample_every = round(config.sample_every_kimg * 1000)
    snapshot_every = round(config.snapshot_every_kimg * 1000)
    phema_every = round(config.phema_every_kimg * 1000)
    last_state_time = time.monotonic()
    session_images, session_seconds = 0, 0.0
    bar = Bar("train", total=plan.total_steps, enabled=config.progress and main)
    stop_signals = distributed.StopOnSignal() if world.enabled else StopOnInterrupt()
    stopping = False
    with stop_signals as stop, bar:
        bar.update(completed=step, info=f"{_kimg(nimg)}kimg")
        try:
            while step < plan.total_steps and not stopping:
                if world.enabled:  # where a peer failure rewinds to (see below)
                    before_step = (batcher.state_dict(), loss_generator.get_state())
                started = time.perf_counter()
                for group in optimizer.param_groups:
                    group["lr"] = plan.lr_at(config.resolved_lr, nimg)
                optimizer.zero_grad(set_to_none=True)
                indices, flips = batcher.next_indices()
                # The global batch's coins, timesteps and noise, in that order, on every rank.
                coins = None
                if labels is not None and config.label_dropout > 0:
                    coins = torch.rand(
                        config.batch_size, generator=loss_generator, device=loss_generator.device
                    )
                inputs = diffusion.draw_training_inputs(batch_shape, loss_generator, device)
                loss_sum = torch.zeros((), device=device)
                for j, part in enumerate(micro_parts):
                    x0, batch_labels = batcher.gather(indices[part], flips[part])
                    batch_labels = _drop_labels(
                        batch_labels, config.label_dropout, model, None if coins is None else coins[part]
                    )
                    distributed.reseed_dropout(config.seed, step, world.rank, j)
                    with distributed.no_sync(ddp_model, last=j == len(micro_parts) - 1):
                        with precision.autocast():
                            loss = diffusion.loss(
                                train_model,
                                x0,
                                labels=batch_labels,
                                inputs=(inputs[0][part], inputs[1][part]),
                            )
                        precision.scaler.scale(loss / config.grad_accum).backward()
                    loss_sum += loss.detach()
                # Mean loss over ranks and whether any rank was asked to stop, in one all-reduce.
                flag = 1.0 if stop.requested else 0.0
                shared = world.sum(
                    torch.stack([loss_sum / config.grad_accum, torch.tensor(flag, device=device)])
                )
                precision.scaler.unscale_(optimizer)
                max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
                loss_total, stop_votes, norm_value = torch.cat([shared, grad_norm.float()[None]]).tolist()
                loss_value = loss_total / world.size
                stopping = stop_votes > 0
                # No collective after this point in the step: a peer failure always finds the model as it
                # was before the step (see below).
                if guard.should_step(loss_value, norm_value):
                    precision.scaler.step(optimizer)
                    precision.scaler.update()
                    if ema is not None:
                        ema.update(model, config.batch_size, nimg)
                    if phema is not None:
                        phema.update(model, step + 1)
                else:
                    precision.scaler.update()  # fp16: lowers the scale and clears the unscale_ record
                    guard.raise_if_exhausted(step, nimg)
                step += 1
                nimg += config.batch_size
                elapsed = time.perf_counter() - started
                train_seconds += elapsed
                session_seconds += elapsed
                session_images += config.batch_size  # the global batch: stats report global img/s
                if stats is not None:
                    stats.add(loss_value, norm_value, elapsed, config.batch_size)
                if step % log_every == 0 or step == plan.total_steps:
                    flush_stats()
                if main:
                    speed = session_images / max(session_seconds, 1e-9)
                    assert stats is not None
                    bar.update(completed=step, info=_bar_info(nimg, stats.smoothed, speed))
                    if _crossed(sample_every, nimg, config.batch_size) and step < plan.total_steps:
                        sample_grid()
                    # Before the state is saved: a record past the saved state is dropped and redone on
                    # resume. The other ranks wait meanwhile in the next step's all-reduce.
                    due = evaluator is not None and evaluator.due(nimg, config.batch_size)
                    if due and step < plan.total_steps:
                        evaluate()
                    if phema is not None and _crossed(phema_every, nimg, config.batch_size):
                        save_phema()  # before the state, like the EMA snapshot below
                    if _crossed(snapshot_every, nimg, config.batch_size) and step < plan.total_steps:
                        assert ema is not None
                        save_ema_snapshot(run_dir, ema.model, nimg, step, payload)
                        save_state()
                        last_state_time = time.monotonic()
                    elif time.monotonic() - last_state_time > config.state_every_minutes * 60:
                        save_state()
                        last_state_time = time.monotonic()
                if not world.enabled:
                    stopping = stop.requested
        except Exception as error:
            if not (world.enabled and distributed.is_peer_failure(error)):
                raise
            # A rank died or timed out inside this step's collectives, before the optimiser step: the
            # model and optimiser are as the previous step left them; rewind the stream to match.
            batcher.load_state_dict(before_step[0])
            loss_generator.set_state(before_step[1])
            resume = distributed.resume_command(run_dir, world)
            if not main:
                raise DiffkitError(
                    f"another training process stopped at step {step}; resume with: {resume}"
                ) from None
            flush_stats()
            save_state()
            raise DiffkitError(
                f"a training process stopped at step {step} ({type(error).__name__}); state saved to "
                f"{shown(state_path)}; resume with: {resume}"
            ) from None
        flush_stats()  # the last window of an interrupted run (a no-op after a full one)
        result.interrupted = stopping and step < plan.total_steps
        if main:
            assert ema is not None
            if phema is not None and not _crossed(phema_every, nimg, config.batch_size):
                save_phema()  # the profiles at the end (or where Ctrl-C stopped the run)
            save_state()
            result.snapshot = save_ema_snapshot(run_dir, ema.model, nimg, step, payload)
            if not result.interrupted:
                bar.update(info="sampling the grid")
                sample_grid()
                if evaluator is not None and not stats.has_eval(step):  # not twice for a finished run resumed
                    evaluate()
    world.barrier()  # the other ranks wait until rank 0 has written the run folder

    result.world_size = world.size
    result.state = state_path
    result.step, result.kimg, result.train_seconds, result.skipped_steps = (
        step,
        nimg / 1000,
        train_seconds,
        guard.skipped,
    )
    result.img_per_s = session_images / session_seconds if session_seconds > 0 else None
    if not main:
        return result
    assert stats is not None
    result.first_loss, result.final_loss = stats.first_and_last_loss()
    progression = run_dir / PROGRESSION_FILE
    result.progression = progression if progression.exists() else None
    if config.report:
        result.report = write_train_report(run_dir, result, payload, dataset.images, diffusion).html
    result.files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    return result
