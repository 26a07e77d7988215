"""The training loop (internals of ``diffkit train``; the entry is :func:`diffkit.train.run.train`).

One step (:func:`diffkit.train.step.train_step`) = ``grad_accum`` micro-batches -> clip -> AdamW -> EMA
update, counted in images (kimg). Every source of randomness is fixed by integers or by an explicit
generator whose state goes into ``state-latest.pt`` (:class:`diffkit.train.state.TrainingState`: the
batcher's position; the loss generator for timesteps, noise and label-dropout coins; the global torch
RNG used by dropout is reseeded from (seed, step, rank, micro-batch)), so on CPU in fp32 a resumed run
is bit-identical to an uninterrupted one. Sampling grids use their own generators and the EMA model in
eval mode, so they never disturb training randomness.

Under torchrun (:mod:`diffkit.train.distributed`) every rank runs this loop on its slice of each global
batch; rank 0 alone keeps the EMA and writes the run folder (:class:`RunFolderWork`), the others wait
for it at the end.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import torch

from diffkit.console import Bar, err_console, shown
from diffkit.dataset.labels import DatasetLabels
from diffkit.device import Precision, apply_backend_settings
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.errors import DiffkitError
from diffkit.models.unet import UNet
from diffkit.runs.folder import STATE_FILE, STATS_FILE, phema_path, write_run_config
from diffkit.runs.snapshots import save_ema_snapshot
from diffkit.train import distributed, tblog
from diffkit.train.budget import WALL, TimeBudget
from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.distributed import World
from diffkit.train.evaluation import TrainingEvaluator
from diffkit.train.monitor import StatsWriter, StopOnInterrupt, write_progression, write_sample_grid
from diffkit.train.state import TrainingState
from diffkit.train.step import StepOutcome, StepSetup, train_step

MIN_LOG_POINTS = 20


@dataclass
class TrainJob:
    """What one training run is given: its config and plan, its data, where it runs and writes."""

    config: TrainConfig
    plan: TrainPlan
    payload: dict[str, Any]  # config.json (also saved in the state and every snapshot)
    run_dir: Path
    dataset: Any  # the uint8 image cache (train/cache.py)
    labels: DatasetLabels | None
    diffusion: GaussianDiffusion
    device: torch.device
    precision: Precision
    world: World

    @property
    def state_path(self) -> Path:
        return self.run_dir / STATE_FILE


@dataclass
class LoopEnd:
    """Where the loop stopped, for the result (``train/run.py`` turns it into ``TrainResult``)."""

    step: int
    nimg: int
    train_seconds: float
    skipped_steps: int
    interrupted: bool
    snapshot: Path | None  # the EMA snapshot written at the end (rank 0)
    img_per_s: float | None  # this session's training steps, global images
    budget_stop: dict[str, Any] | None = None  # stopped on --max-minutes / max_cpu_seconds: TimeBudget.record


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


class RunFolderWork:
    """Rank 0's work between steps: stats.jsonl, sample grids, FID/KID, post-hoc EMA profiles, EMA
    snapshots and the resume state, each when the step crosses its interval; and the same at the end."""

    def __init__(self, job: TrainJob, state: TrainingState, bar: Bar) -> None:
        config = job.config
        self.job, self.state, self.bar = job, state, bar
        self.stats = StatsWriter(job.run_dir / STATS_FILE, resume_step=state.step if config.resume else 0)
        # At least ~MIN_LOG_POINTS lines per run, so a short run still gets a loss curve (not one point).
        self.log_every = max(1, min(config.log_every_steps, job.plan.total_steps // MIN_LOG_POINTS))
        # FID/KID during training (--eval-every-kimg): None when off or without Inception weights. Made
        # before the training bar starts, since extracting the reference features shows its own bar.
        self.evaluator = TrainingEvaluator.create(config, job.dataset, job.device, job.precision)
        self.sample_every = round(config.sample_every_kimg * 1000)
        self.snapshot_every = round(config.snapshot_every_kimg * 1000)
        self.phema_every = round(config.phema_every_kimg * 1000)
        self.last_state_time = time.monotonic()
        # TensorBoard: copies of the stats lines and the grids; a resume writes only steps after its own.
        resume_step = state.step if config.resume else 0
        self.tb = tblog.TensorBoardLog(job.run_dir, resume_step) if tblog.wanted(config.tensorboard) else None

    def __enter__(self) -> RunFolderWork:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.tb is not None:
            self.tb.close()

    def _crossed(self, every_nimg: int) -> bool:
        return _crossed(every_nimg, self.state.nimg, self.job.config.batch_size)

    def flush_stats(self) -> None:
        state, precision = self.state, self.job.precision
        loss_scale = precision.scaler.get_scale() if precision.name == "fp16" else None
        lr = state.optimizer.param_groups[0]["lr"]
        record = self.stats.flush(
            state.step, state.nimg, lr, state.train_seconds, state.guard.skipped, loss_scale
        )
        if record is not None and self.tb is not None:
            self.tb.stats(record)

    def save_state(self) -> None:
        self.state.save(self.job.state_path, self.job.payload, self.job.world.size)
        self.last_state_time = time.monotonic()
        if self.tb is not None:  # the event files hold at least what the state does
            self.tb.flush()

    def save_phema(self) -> None:
        state, job = self.state, self.job
        assert state.phema is not None
        for sigma_rel, average in zip(state.phema.sigma_rels, state.phema.models, strict=True):
            path = phema_path(job.run_dir, sigma_rel, state.nimg)
            extra = {"sigma_rel": str(sigma_rel)}
            save_ema_snapshot(
                job.run_dir, average, state.nimg, state.step, job.payload, path=path, extra=extra
            )

    def save_snapshot(self) -> Path:
        assert self.state.ema is not None
        return save_ema_snapshot(
            self.job.run_dir, self.state.ema.model, self.state.nimg, self.state.step, self.job.payload
        )

    def sample_grid(self) -> None:
        job = self.job
        assert self.state.ema is not None
        path = write_sample_grid(
            self.state.ema.model, job.diffusion, job.config, job.precision, job.run_dir, self.state.nimg
        )
        if self.tb is not None:
            self.tb.grid(path, self.state.step)
        write_progression(job.run_dir, job.config.resolution)

    def evaluate(self) -> None:
        assert self.evaluator is not None and self.state.ema is not None
        self.bar.update(info="FID/KID")
        record = self.evaluator.evaluate(
            self.state.ema.model, self.job.diffusion, self.state.nimg, self.state.step
        )
        self.stats.log_eval(record)
        if self.tb is not None:
            self.tb.evaluation(record)

    def after_step(self, outcome: StepOutcome, img_per_s: float) -> None:
        config, state = self.job.config, self.state
        total = self.job.plan.total_steps
        self.stats.add(outcome.loss, outcome.grad_norm, outcome.seconds, config.batch_size)
        if state.step % self.log_every == 0 or state.step == total:
            self.flush_stats()
        self.bar.update(completed=state.step, info=_bar_info(state.nimg, self.stats.smoothed, img_per_s))
        if self._crossed(self.sample_every) and state.step < total:
            self.sample_grid()
        # Before the state is saved: a record past the saved state is dropped and redone on resume.
        # The other ranks wait meanwhile in the next step's all-reduce.
        if (
            self.evaluator is not None
            and self.evaluator.due(state.nimg, config.batch_size)
            and state.step < total
        ):
            self.evaluate()
        if state.phema is not None and self._crossed(self.phema_every):
            self.save_phema()  # before the state, like the EMA snapshot below
        if self._crossed(self.snapshot_every) and state.step < total:
            self.save_snapshot()
            self.save_state()
        elif time.monotonic() - self.last_state_time > config.state_every_minutes * 60:
            self.save_state()

    def finish(self, interrupted: bool) -> Path:
        """The end of the session (finished, or stopped by Ctrl-C): the profiles, the state, the EMA
        snapshot and, for a finished run, the grid and FID/KID. Returns the snapshot."""
        state = self.state
        if state.phema is not None and not self._crossed(self.phema_every):
            self.save_phema()  # the profiles at the end (or where Ctrl-C stopped the run)
        self.save_state()
        snapshot = self.save_snapshot()
        if not interrupted:
            self.bar.update(info="sampling the grid")
            self.sample_grid()
            if self.evaluator is not None and not self.stats.has_eval(state.step):  # not twice when resumed
                self.evaluate()
        return snapshot


def train_loop(job: TrainJob, model: UNet, saved: dict[str, Any] | None) -> LoopEnd:
    """Train ``model`` from ``saved`` (a resume state) or from step 0 up to the plan's total."""
    config, plan, world = job.config, job.plan, job.world
    distributed.check_divisible(config.batch_size, config.grad_accum, world)

    # --- what a resume restores (model, averages, optimiser, data and noise streams, counters)
    state = TrainingState.create(
        config, model, job.dataset, job.labels, job.precision, job.device, main=world.is_main
    )
    if saved is not None:
        state.restore(saved, config.seed, world.size)
        message = f"resuming {shown(job.run_dir)} at step {state.step} ({state.nimg / 1000:.2f} kimg)"
        err_console.print(message, highlight=False, soft_wrap=True)
    if world.is_main:
        write_run_config(job.run_dir, job.payload)
    # After the restore: DDP broadcasts rank 0's weights to the other ranks.
    setup = StepSetup.create(
        config, plan, job.diffusion, job.precision, world, model, job.device, job.labels is not None
    )
    apply_backend_settings(job.device)

    # --- rank 0's run folder work, the bar and the stop signals
    bar = Bar("train", total=plan.total_steps, enabled=config.progress and world.is_main)
    stop_signals = distributed.StopOnSignal() if world.enabled else StopOnInterrupt()
    stopping = False
    session_images, session_seconds = 0, 0.0

    # --- the steps
    with contextlib.ExitStack() as stack:
        # Ctrl-C is a stop request from here on: rank 0's set-up (stats.jsonl, the reference features
        # of FID while training, TensorBoard's import) takes seconds, and a Ctrl-C during it must end
        # with a saved state like one during a step, not a KeyboardInterrupt.
        stop = stack.enter_context(stop_signals)
        work = RunFolderWork(job, state, bar) if world.is_main else None
        stack.enter_context(bar)
        if work is not None:
            stack.enter_context(work)
        bar.update(completed=state.step, info=f"{_kimg(state.nimg)}kimg")
        # --max-minutes / max_cpu_seconds: from here (the cache, model and resume state are ready); a
        # spent budget is a stop request like Ctrl-C, voted on by every rank in the step's all-reduce.
        budget = TimeBudget.start(config.max_minutes, config.max_cpu_seconds)

        def stop_now() -> bool:
            return stop.requested or budget.spent() is not None

        try:
            while state.step < plan.total_steps and not stopping:
                if world.enabled:  # where a peer failure rewinds to (see below)
                    before_step = state.position()
                outcome = train_step(state, setup, stop_now)
                session_seconds += outcome.seconds
                session_images += config.batch_size  # the global batch: stats report global img/s
                if work is not None:
                    work.after_step(outcome, session_images / max(session_seconds, 1e-9))
                # Several ranks stop on the step's vote (all after the same step); one process on the
                # request as it stands now, so a Ctrl-C during the run folder work counts at once.
                stopping = outcome.stop_voted if world.enabled else stop_now()
        except Exception as error:
            if not (world.enabled and distributed.is_peer_failure(error)):
                raise
            # A rank died or timed out inside this step's collectives, before the optimiser step: the
            # model and optimiser are as the previous step left them; rewind the stream to match.
            state.rewind(before_step)
            _stop_after_peer_failure(job, state, work, error)

        # --- the end of the session (finished, stopped by Ctrl-C, or by its time budget)
        early = stopping and state.step < plan.total_steps
        budget_stop = None
        if early and budget.enabled and not stop.requested:  # a budget stop ends like a finished session
            budget_stop = budget.record(budget.spent() or WALL, state.step, state.nimg, session_seconds)
        interrupted = early and budget_stop is None
        snapshot = None
        if work is not None:
            work.flush_stats()  # the last window of an interrupted run (a no-op after a full one)
            if budget_stop is not None:
                work.stats.log_stop(budget_stop)
            snapshot = work.finish(interrupted)
    world.barrier()  # the other ranks wait until rank 0 has written the run folder

    img_per_s = session_images / session_seconds if session_seconds > 0 else None
    return LoopEnd(
        state.step,
        state.nimg,
        state.train_seconds,
        state.guard.skipped,
        interrupted,
        snapshot,
        img_per_s,
        budget_stop,
    )


def _stop_after_peer_failure(
    job: TrainJob, state: TrainingState, work: RunFolderWork | None, error: Exception
) -> NoReturn:
    """Rank 0 saves the state of the step the failure interrupted; every rank says how to resume."""
    resume = distributed.resume_command(job.run_dir, job.world)
    if work is None:
        raise DiffkitError(
            f"another training process stopped at step {state.step}; resume with: {resume}"
        ) from None
    work.flush_stats()
    work.save_state()
    raise DiffkitError(
        f"a training process stopped at step {state.step} ({type(error).__name__}); state saved to "
        f"{shown(job.state_path)}; resume with: {resume}"
    ) from None
