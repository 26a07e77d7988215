"""The training loop: ``train(TrainConfig) -> TrainResult``.

One step = ``grad_accum`` micro-batches -> clip -> AdamW -> EMA update, counted in images (kimg).
Every source of randomness is an explicit generator whose state goes into ``state-latest.pt`` (batcher,
loss noise/timesteps, the global torch RNG used by dropout), so on CPU in fp32 a resumed run is
bit-identical to an uninterrupted one. Sampling grids use their own generators and the EMA model in
eval mode, so they never disturb training randomness.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from diffkit import runs
from diffkit.console import printable, shown
from diffkit.data import DeviceBatcher, load_image_dataset
from diffkit.device import Precision, resolve_device
from diffkit.diffusion import GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.lock import folder_lock
from diffkit.models import UNet, count_parameters, flops_per_image, preset_config
from diffkit.runs import check_run_dir, latest_run_dir, next_run_dir
from diffkit.train.config import TrainConfig, TrainPlan, load_run_config, merge_for_resume
from diffkit.train.ema import EMA
from diffkit.train.monitor import (
    NonFiniteGuard,
    StatsWriter,
    StopOnInterrupt,
    make_progress,
    write_progression,
    write_sample_grid,
)
from diffkit.train.report import write_train_report
from diffkit.train.result import TrainResult

console = Console(stderr=True)
LOSS_SEED_OFFSET = 1  # the loss generator is seeded with seed + 1, the batcher with seed
MIN_LOG_POINTS = 20


def _resolve_config(config: TrainConfig) -> tuple[TrainConfig, Path | None]:
    """Apply ``--resume``: find the run folder and merge the saved config with the allowed overrides."""
    if not config.resume:
        # An absolute data path in config.json lets eval/sample find the training data from any folder.
        config = dataclasses.replace(config, data=config.data.absolute())
        if config.out is not None and config.out.exists() and not config.out.is_dir():
            raise DiffkitError(f"--out {config.out} is a file, not a folder; choose another --out")
        if config.out is not None and not config.dry_run:
            _refuse_existing_run(config.out)
            check_run_dir(config.out)
        return config, config.out
    run_dir = config.out or latest_run_dir(config.runs_dir, runs.STATE_FILE)
    if run_dir is None:
        raise DiffkitError(f"--resume: no run with {runs.STATE_FILE} under {config.runs_dir}; pass --out RUN")
    # A run found by scanning runs/ must be a real folder in it; --out may be a link the user chose.
    check_run_dir(run_dir, runs_dir=None if config.out else config.runs_dir)
    saved = load_run_config(run_dir)
    return merge_for_resume(saved, config), run_dir


def _refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / runs.STATE_FILE).exists():
        raise DiffkitError(
            f"{run_dir} already holds a run; add --resume to continue it or choose another --out"
        )


def _config_payload(
    config: TrainConfig, run_dir: Path | None, plan: TrainPlan, model: UNet
) -> dict[str, Any]:
    train = config.to_dict() | {"out": str(run_dir) if run_dir else None, "resume": False, "dry_run": False}
    diffusion = {
        "schedule": config.schedule,
        "prediction": config.prediction,
        "timesteps": config.timesteps,
        "min_snr_gamma": config.min_snr_gamma,
    }
    return runs.run_config_payload(
        train=train, model=model.config.to_dict(), diffusion=diffusion, plan=plan.to_dict()
    )


def _crossed(every_nimg: int, nimg: int, batch: int) -> bool:
    """Whether the step that ended at ``nimg`` crossed a multiple of ``every_nimg`` (0: never)."""
    return every_nimg > 0 and nimg // every_nimg > (nimg - batch) // every_nimg


class _RunLocks:
    """The run folder's lock (``diffkit.lock``), taken as early as the folder exists.

    One training per run folder: a second ``diffkit train`` into it, or a ``--resume`` of it while it
    trains, stops with one line naming the holder, before it decodes data or builds a model.
    """

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.held: set[Path] = set()

    def take(self, run_dir: Path) -> None:
        key = run_dir.absolute()
        if key not in self.held:
            self.stack.enter_context(folder_lock(run_dir, "train"))
            self.held.add(key)

    def take_existing(self, config: TrainConfig) -> None:
        if config.dry_run:
            return
        if config.out is not None:
            target, runs_dir = config.out, None
        elif config.resume:
            target, runs_dir = latest_run_dir(config.runs_dir, runs.STATE_FILE), config.runs_dir
        else:
            return
        if target is not None and target.is_dir():
            check_run_dir(target, runs_dir)  # before the lock file is created in it
            self.take(target)


def train(config: TrainConfig) -> TrainResult:
    with contextlib.ExitStack() as stack:
        locks = _RunLocks(stack)
        locks.take_existing(config)
        return _train_locked(config, locks)


def _train_locked(config: TrainConfig, locks: _RunLocks) -> TrainResult:
    config, run_dir = _resolve_config(config)
    # Read (never unpickled: weights_only) before decoding data, so a damaged state fails in a second.
    state = runs.load_state(run_dir / runs.STATE_FILE) if config.resume and run_dir is not None else None
    config.validate()
    device = resolve_device(config.device)
    precision = Precision.create(config.precision, device)
    model_config = preset_config(config.preset, config.resolution)  # fail fast, before decoding images
    if config.dropout is not None:
        model_config = dataclasses.replace(model_config, dropout=config.dropout)
    dataset = load_image_dataset(
        config.data, config.resolution, cache_dir=config.cache_dir, progress=config.progress
    )
    plan = TrainPlan.resolve(config, len(dataset.files))

    torch.manual_seed(config.seed)
    model = UNet(model_config)
    params, flops = count_parameters(model), flops_per_image(model, config.resolution)
    console.print(
        f"model {shown(config.preset)} at {config.resolution} px: {params / 1e6:.2f}M params, "
        f"{flops / 1e9:.3f} GFLOPs/image forward (~{3 * flops / 1e9:.3f} per training image)",
        highlight=False,
    )
    result = TrainResult(
        run_dir=run_dir,
        dry_run=config.dry_run,
        interrupted=False,
        device=str(device),
        precision=precision.name,
        preset=config.preset,
        resolution=config.resolution,
        params=params,
        flops_per_image=flops,
        dataset_size=len(dataset.files),
        skipped_images=[
            {"path": printable(path), "reason": printable(reason)} for path, reason in dataset.skipped
        ],
        total_steps=plan.total_steps,
        total_kimg=plan.total_nimg / 1000,
    )
    if config.dry_run:
        result.run_dir = run_dir or next_run_dir(config.runs_dir, config.preset, create=False)
        return result
    if run_dir is None:
        run_dir = next_run_dir(config.runs_dir, config.preset)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffkitError(
            f"cannot create the run folder {run_dir} ({exc.strerror}); choose another --out"
        ) from None
    locks.take(run_dir)  # a new folder: locked now that it exists
    # Checked again under the lock: another run may have started or finished since the first look.
    if not config.resume:
        _refuse_existing_run(run_dir)
    check_run_dir(run_dir)
    result.run_dir = run_dir
    payload = _config_payload(config, run_dir, plan, model)
    return _train(config, plan, payload, model, dataset, device, precision, run_dir, result, state)


def _train(
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
        dataset, plan.micro_batch, device, config.seed, hflip=config.hflip, channels_last=channels_last
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
            console.print(
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
        console.print(message, highlight=False, soft_wrap=True)
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
    with StopOnInterrupt(console) as stop, make_progress(console, config.progress) as progress:
        task = progress.add_task(
            "train", total=plan.total_steps, completed=step, kimg=f"{nimg / 1000:.2f}", loss="-", speed="-"
        )
        while step < plan.total_steps and not stop.requested:
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = plan.lr_at(config.lr, nimg)
            optimizer.zero_grad(set_to_none=True)
            loss_sum = torch.zeros((), device=device)
            for _ in range(config.grad_accum):
                x0 = batcher.next()
                with precision.autocast():
                    loss = diffusion.loss(train_model, x0, loss_generator)
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
            progress.update(
                task,
                completed=step,
                kimg=f"{nimg / 1000:.2f}",
                loss=f"{stats.smoothed:.4f}",
                speed=f"{session_images / max(session_seconds, 1e-9):.1f}",
            )
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
            progress.update(task, description="sampling")
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
        result.report = write_train_report(run_dir, result, payload).html
    result.files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    return result
