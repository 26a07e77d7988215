"""The training loop (internals of ``diffkit train``; the entry is :func:`diffkit.train.run.train`).

One step = ``grad_accum`` micro-batches -> clip -> AdamW -> EMA update, counted in images (kimg).
Every source of randomness is an explicit generator whose state goes into ``state-latest.pt`` (batcher,
loss noise/timesteps, the global torch RNG used by dropout), so on CPU in fp32 a resumed run is
bit-identical to an uninterrupted one. Sampling grids use their own generators and the EMA model in
eval mode, so they never disturb training randomness.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from diffkit import runs
from diffkit.console import Bar, err_console, shown
from diffkit.data import DatasetLabels, DeviceBatcher
from diffkit.device import Precision
from diffkit.diffusion import GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.models import UNet
from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.ema import EMA
from diffkit.train.monitor import (
    NonFiniteGuard,
    StatsWriter,
    StopOnInterrupt,
    write_progression,
    write_sample_grid,
)
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
    labels: torch.Tensor | None, dropout: float, model: UNet, generator: torch.Generator
) -> torch.Tensor | None:
    """Each label becomes the null label with probability ``dropout`` (coins from the loss generator,
    whose state is in the resume state, so a resumed labelled run stays bit-exact)."""
    if labels is None or dropout <= 0:
        return labels
    coins = torch.rand(labels.shape, generator=generator, device=generator.device).to(labels.device)
    return torch.where(coins < dropout, torch.full_like(labels, model.config.num_classes), labels)


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
) -> TrainResult:
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model.to(device=device, memory_format=memory_format).train()
    ema = EMA(model, config.ema_halflife_kimg, config.ema_rampup)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    diffusion = GaussianDiffusion.create(
        config.schedule, config.prediction, config.timesteps, config.min_snr_gamma
    )
    batcher = DeviceBatcher(
        dataset,
        plan.micro_batch,
        device,
        config.seed,
        hflip=config.hflip,
        channels_last=channels_last,
        labels=None if labels is None else labels.indices,
    )
    loss_generator = torch.Generator(device=device).manual_seed(config.seed + LOSS_SEED_OFFSET)
    guard = NonFiniteGuard(config.max_bad_steps, tolerate_inf_grads=precision.name == "fp16")
    step = nimg = 0
    train_seconds = 0.0
    state_path = run_dir / runs.STATE_FILE
    if state is not None:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when saved without fp16
            precision.scaler.load_state_dict(state["scaler"])
        batcher.load_state_dict(state["batcher"])
        step, nimg, train_seconds = int(state["step"]), int(state["nimg"]), float(state["train_seconds"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("device_type", device.type) == device.type:
            loss_generator.set_state(state["loss_generator"])
            if device.type == "cuda" and state.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(state["cuda_rng"])
        else:  # CPU and CUDA generators have different state formats: continue, but not bit-exactly
            loss_generator.manual_seed(config.seed + LOSS_SEED_OFFSET + step)
            err_console.print(
                f"[yellow]state was saved on {shown(state['device_type'])}, resuming on {device.type}: "
                "training continues correctly but not bit-identically[/]"
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
    runs.write_run_config(run_dir, payload)
    train_model = torch.compile(model) if config.compile else model
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    def save_state() -> None:
        runs.save_state(
            state_path,
            {
                "step": step,
                "nimg": nimg,
                "train_seconds": train_seconds,
                "model": model.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scaler": precision.scaler.state_dict(),
                "batcher": batcher.state_dict(),
                "loss_generator": loss_generator.get_state(),
                "device_type": device.type,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "guard": guard.state_dict(),
                "config": payload,
            },
        )

    def sample_grid() -> None:
        write_sample_grid(ema.model, diffusion, config, precision, run_dir, nimg)
        write_progression(run_dir, config.resolution)

    stats = StatsWriter(run_dir / runs.STATS_FILE, resume_step=step if config.resume else 0)
    # At least ~MIN_LOG_POINTS lines per run, so a short run still gets a loss curve (not one point).
    log_every = max(1, min(config.log_every_steps, plan.total_steps // MIN_LOG_POINTS))

    def flush_stats() -> None:
        loss_scale = precision.scaler.get_scale() if precision.name == "fp16" else None
        stats.flush(step, nimg, optimizer.param_groups[0]["lr"], train_seconds, guard.skipped, loss_scale)

    sample_every = round(config.sample_every_kimg * 1000)
    snapshot_every = round(config.snapshot_every_kimg * 1000)
    last_state_time = time.monotonic()
    session_images, session_seconds = 0, 0.0
    bar = Bar("train", total=plan.total_steps, enabled=config.progress)
    with StopOnInterrupt() as stop, bar:
        bar.update(completed=step, info=f"{_kimg(nimg)}kimg")
        while step < plan.total_steps and not stop.requested:
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = plan.lr_at(config.lr, nimg)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for _ in range(config.grad_accum):
                x0, batch_labels = batcher.next_batch()
                batch_labels = _drop_labels(batch_labels, config.label_dropout, model, loss_generator)
                with precision.autocast():
                    loss = diffusion.loss(train_model, x0, loss_generator, batch_labels)
                precision.scaler.scale(loss / config.grad_accum).backward()
                loss_sum += loss.detach()
            precision.scaler.unscale_(optimizer)
            max_norm = config.grad_clip if config.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            loss_value, norm_value = torch.stack([loss_sum / config.grad_accum, grad_norm.float()]).tolist()
            if guard.should_step(loss_value, norm_value):
                precision.scaler.step(optimizer)
                precision.scaler.update()
                ema.update(model, config.batch_size, nimg)
            else:
                precision.scaler.update()  # fp16: lowers the scale and clears the unscale_ record
                guard.raise_if_exhausted(step, nimg)
            step += 1
            nimg += config.batch_size
            elapsed = time.perf_counter() - started
            train_seconds += elapsed
            session_seconds += elapsed
            session_images += config.batch_size
            stats.add(loss_value, norm_value, elapsed, config.batch_size)
            if step % log_every == 0 or step == plan.total_steps:
                flush_stats()
            speed = session_images / max(session_seconds, 1e-9)
            bar.update(completed=step, info=_bar_info(nimg, stats.smoothed, speed))
            if _crossed(sample_every, nimg, config.batch_size) and step < plan.total_steps:
                sample_grid()
            if _crossed(snapshot_every, nimg, config.batch_size) and step < plan.total_steps:
                runs.save_ema_snapshot(run_dir, ema.model, nimg, step, payload)
                save_state()
                last_state_time = time.monotonic()
            elif time.monotonic() - last_state_time > config.state_every_minutes * 60:
                save_state()
                last_state_time = time.monotonic()
        flush_stats()  # the last window of an interrupted run (a no-op after a full one)
        save_state()
        result.interrupted = stop.requested and step < plan.total_steps
        result.snapshot = runs.save_ema_snapshot(run_dir, ema.model, nimg, step, payload)
        if not result.interrupted:
            bar.update(info="sampling the grid")
            sample_grid()

    result.state = state_path
    result.step, result.kimg, result.train_seconds, result.skipped_steps = (
        step,
        nimg / 1000,
        train_seconds,
        guard.skipped,
    )
    result.img_per_s = session_images / session_seconds if session_seconds > 0 else None
    result.first_loss, result.final_loss = stats.first_and_last_loss()
    progression = run_dir / runs.PROGRESSION_FILE
    result.progression = progression if progression.exists() else None
    if config.report:
        result.report = write_train_report(run_dir, result, payload, dataset.images, diffusion).html
    result.files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    return result
