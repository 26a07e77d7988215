"""``diffkit train``: ``train(TrainConfig) -> TrainResult``.

Resolves ``--resume`` (run folder, saved config merged with the allowed overrides), takes the run
folder's lock, checks the folder, decodes the data, builds the model, hands over to
:func:`diffkit.train.loop.train_loop` and turns where it stopped into the result and the HTML report.

Under torchrun rank 0 does everything that touches the run folder (resolving it, the lock, reading the
resume state, creating it) and hands the results to the other ranks; it also builds the data cache
before they read it (:mod:`diffkit.train.distributed`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

import torch

from diffkit.console import err_console, printable, shown
from diffkit.dataset.labels import DatasetLabels, read_labels
from diffkit.device import Precision, resolve_device
from diffkit.diffusion.gaussian import EDM_SIGMA_DATA, GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.lock import folder_lock
from diffkit.models.config import UNetConfig, preset_config
from diffkit.models.stats import count_parameters, flops_per_image
from diffkit.models.unet import UNet
from diffkit.runs.folder import (
    PROGRESSION_FILE,
    STATE_FILE,
    STATS_FILE,
    TENSORBOARD_DIR,
    check_run_dir,
    class_names,
    latest_run_dir,
    next_run_dir,
    run_config_payload,
)
from diffkit.runs.state import load_state
from diffkit.train import distributed
from diffkit.train.cache import load_image_dataset, upscaling
from diffkit.train.config import TrainConfig, TrainPlan, load_run_config, merge_for_resume
from diffkit.train.distributed import World
from diffkit.train.loop import LoopEnd, TrainJob, train_loop
from diffkit.train.monitor import first_and_last_loss
from diffkit.train.report import write_train_report
from diffkit.train.result import TrainResult, upscale_text


def _resolve_config(config: TrainConfig) -> tuple[TrainConfig, Path | None]:
    """Apply ``--resume``: find the run folder and merge the saved config with the allowed overrides."""
    if not config.resume:
        # An absolute data path in config.json lets eval/sample find the training data from any folder;
        # the preset's batch is filled in, so config.json records the batch the run trains with.
        config = dataclasses.replace(
            config, data=config.data.absolute(), batch_size=config.resolved_batch_size
        )
        if config.out is not None and config.out.exists() and not config.out.is_dir():
            raise DiffkitError(f"--out {config.out} is a file, not a folder; choose another --out")
        if config.out is not None and not config.dry_run:
            _refuse_existing_run(config.out)
            check_run_dir(config.out)
        return config, config.out
    run_dir = config.out or latest_run_dir(config.runs_dir, STATE_FILE)
    if run_dir is None:
        raise DiffkitError(f"--resume: no run with {STATE_FILE} under {config.runs_dir}; pass --out RUN")
    # A run found by scanning runs/ must be a real folder in it; --out may be a link the user chose.
    check_run_dir(run_dir, runs_dir=None if config.out else config.runs_dir)
    saved = load_run_config(run_dir)
    # batch_size not given (None) keeps the saved batch, whatever today's preset default is
    return merge_for_resume(saved, config), run_dir


def _refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / STATE_FILE).exists():
        raise DiffkitError(
            f"{run_dir} already holds a run; add --resume to continue it or choose another --out"
        )


def _config_payload(
    config: TrainConfig, run_dir: Path | None, plan: TrainPlan, model: UNet, labels: DatasetLabels | None
) -> dict[str, Any]:
    # The learning rate is recorded as a number, so a resume never depends on today's preset table.
    train = config.to_dict() | {
        "out": str(run_dir) if run_dir else None,
        "resume": False,
        "dry_run": False,
        "lr": config.resolved_lr,
    }
    diffusion = {
        "schedule": config.schedule,
        "prediction": config.prediction,
        "timesteps": config.timesteps,
        "min_snr_gamma": config.min_snr_gamma,
    }
    if config.prediction == "edm":  # the preconditioning's constant, so a later default cannot change it
        diffusion["sigma_data"] = EDM_SIGMA_DATA
    labelling = None if labels is None else labels.to_dict() | {"label_dropout": config.label_dropout}
    return run_config_payload(
        train=train, model=model.config.to_dict(), diffusion=diffusion, plan=plan.to_dict(), labels=labelling
    )


def _shape_overrides(config: TrainConfig) -> str:
    """" (channels 48, 2 res blocks)" where --channels / --num-res-blocks replace the preset's shape."""
    parts = [f"channels {config.channels}"] if config.channels is not None else []
    if config.num_res_blocks is not None:
        parts.append(f"{config.num_res_blocks} res blocks")
    return f" ({', '.join(parts)})" if parts else ""


def _class_list(names: list[str], shown_at_most: int = 8) -> str:
    """``['a', 'b']`` (repr: escapes what would break the line), cut short for many classes."""
    if not names:
        return "none"
    if len(names) <= shown_at_most:
        return repr(names)
    return f"{repr(names[:shown_at_most])[:-1]}, ...] ({len(names)} classes)"


def _labels(config: TrainConfig, dataset: Any, state: dict[str, Any] | None) -> DatasetLabels | None:
    """The data set's class labels (``--labels``), checked against the run's on ``--resume``."""
    labels = read_labels(dataset.data_dir, dataset.files, config.labels)
    names = list(labels.names) if labels is not None else []
    if state is not None:
        saved = class_names(state["config"])
        if saved != names:
            raise DiffkitError(
                f"the run was trained with classes {_class_list(saved)}, the data now gives "
                f"{_class_list(names)}; resume with the same data and --labels, or start a new run"
            )
    if labels is not None:
        shown_names = ", ".join(shown(name) for name in names[:8]) + (", ..." if len(names) > 8 else "")
        err_console.print(
            f"labels: {len(names)} classes from {labels.source} ({shown_names}); label dropout "
            f"{config.label_dropout:g}; --labels none trains unconditionally",
            highlight=False,
        )
    return labels


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
            target, runs_dir = latest_run_dir(config.runs_dir, STATE_FILE), config.runs_dir
        else:
            return
        if target is not None and target.is_dir():
            check_run_dir(target, runs_dir)  # before the lock file is created in it
            self.take(target)


def train(config: TrainConfig) -> TrainResult:
    world = distributed.start()
    try:
        with distributed.quiet_unless_main(world), contextlib.ExitStack() as stack:
            return _train_locked(config, _RunLocks(stack), world)
    finally:
        world.stop()


def _without_ema(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the other ranks need of a resume state (they keep no EMA)."""
    return None if state is None else {k: v for k, v in state.items() if k != "ema"}


def _train_locked(config: TrainConfig, locks: _RunLocks, world: World) -> TrainResult:
    def resolve() -> tuple[TrainConfig, Path | None, dict[str, Any] | None]:
        locks.take_existing(config)
        resolved, found = _resolve_config(config)
        # Read (never unpickled: weights_only) before decoding data, so a damaged state fails in a second.
        loaded = load_state(found / STATE_FILE) if resolved.resume and found is not None else None
        return resolved, found, loaded

    config, run_dir, state = world.from_main(resolve, lambda value: (*value[:2], _without_ema(value[2])))
    device = distributed.place(resolve_device(config.device), world)
    precision = Precision.create(config.precision, device)
    # fail fast, before decoding images
    model_config = preset_config(
        config.preset, config.resolution, channels=config.channels, num_res_blocks=config.num_res_blocks
    )
    if state is not None and "model" in state.get("config", {}):
        # The network the run was trained as: a preset may change between versions (small's GroupNorm
        # groups did), and the same tensor shapes would load silently into a different network.
        model_config = UNetConfig.from_dict(state["config"]["model"])
    if config.dropout is not None:
        model_config = dataclasses.replace(model_config, dropout=config.dropout)
    dataset = world.main_first(
        lambda: load_image_dataset(
            config.data,
            config.resolution,
            cache_dir=config.cache_dir,
            progress=config.progress and world.is_main,
        )
    )
    plan = TrainPlan.resolve(config, len(dataset.files))
    # Said before training starts (and in the dry run): small images are enlarged, never refused.
    upscaled = upscaling(dataset.sizes, config.resolution)
    if upscaled is not None:
        err_console.print(
            f"[yellow]{upscale_text(upscaled, config.resolution)}[/]", highlight=False, soft_wrap=True
        )
    _check_length(state, plan, run_dir)
    labels = _labels(config, dataset, state)
    if labels is not None:  # the U-Net's class embedding, plus its null label
        model_config = dataclasses.replace(model_config, num_classes=len(labels.names))

    torch.manual_seed(config.seed)
    model = UNet(model_config)
    params, flops = count_parameters(model), flops_per_image(model, config.resolution)
    err_console.print(
        f"model {shown(config.preset)}{_shape_overrides(config)} at {config.resolution} px: "
        f"{params / 1e6:.2f}M params, "
        f"{flops / 1e9:.3f} GFLOPs/image forward (~{3 * flops / 1e9:.3f} per training image)",
        highlight=False,
    )
    if world.enabled:
        distributed.check_divisible(config.batch_size, config.grad_accum, world)
        err_console.print(
            f"{world.size} processes ({world.backend}), {config.batch_size // world.size} images per rank "
            f"per step in {config.grad_accum} micro-batch(es)",
            highlight=False,
        )
    result = TrainResult(
        run_dir=run_dir,
        dry_run=config.dry_run,
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
        world_size=world.size,
        resumed_from_step=0 if state is None else int(state["step"]),
        upscaled=upscaled,
    )
    if config.dry_run:
        result.run_dir = run_dir or next_run_dir(config.runs_dir, config.preset, create=False)
        return result

    def create(run_dir: Path | None) -> Path:
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
        return run_dir

    run_dir = world.from_main(lambda: create(run_dir))
    result.run_dir = run_dir
    diffusion = GaussianDiffusion.create(
        config.schedule, config.prediction, config.timesteps, config.min_snr_gamma, config.timestep_sampling
    )
    job = TrainJob(
        config=config,
        plan=plan,
        payload=_config_payload(config, run_dir, plan, model, labels),
        run_dir=run_dir,
        dataset=dataset,
        labels=labels,
        diffusion=diffusion,
        device=device,
        precision=precision,
        world=world,
    )
    return _finish(job, result, train_loop(job, model, state))


def _check_length(state: dict[str, Any] | None, plan: TrainPlan, run_dir: Path | None) -> None:
    """A resume must not ask for fewer steps than the run has taken (before config.json is rewritten
    with the shorter length)."""
    step = 0 if state is None else int(state["step"])
    if step > plan.total_steps:
        raise DiffkitError(
            f"{run_dir} is already at step {step}, past the requested total of {plan.total_steps} "
            "steps; give a longer --steps/--kimg/--epochs, or none to keep the run's own length"
        )


def _no_training(config: TrainConfig, result: TrainResult) -> str | None:
    """Why a session deserves no report (a resume that took no step: its report would repeat the last
    one, docs/reports.md), or None."""
    if not config.resume or result.step != result.resumed_from_step:
        return None
    if result.step >= result.total_steps:
        return f"nothing to do: {result.run_dir} is already at step {result.step} of {result.total_steps}"
    where = f"{result.run_dir} stays at step {result.step} of {result.total_steps}"
    return f"no step trained this session: {where}"


def _finish(job: TrainJob, result: TrainResult, end: LoopEnd) -> TrainResult:
    """The end-of-run numbers, and on rank 0 the loss summary, the HTML report and the file list."""
    result.world_size = job.world.size
    result.state = job.state_path
    result.step, result.kimg = end.step, end.nimg / 1000
    result.train_seconds, result.skipped_steps = end.train_seconds, end.skipped_steps
    result.interrupted, result.img_per_s = end.interrupted, end.img_per_s
    result.budget_stop = end.budget_stop
    if not job.world.is_main:
        return result
    run_dir = job.run_dir
    result.snapshot = end.snapshot
    result.first_loss, result.final_loss = first_and_last_loss(run_dir / STATS_FILE)
    progression = run_dir / PROGRESSION_FILE
    result.progression = progression if progression.exists() else None
    tensorboard = run_dir / TENSORBOARD_DIR
    result.tensorboard = tensorboard if tensorboard.is_dir() else None
    if job.config.report and "report" not in job.config.given:  # a report asked for by name is written
        result.report_skipped = _no_training(job.config, result)
    if job.config.report and result.report_skipped is None:
        images = job.dataset.images
        result.report = write_train_report(run_dir, result, job.payload, images, job.diffusion).html
    result.files = sorted(p.name for p in run_dir.iterdir() if not p.name.startswith("."))
    return result
