"""What ``train`` returns: the run folder, its files and the headline numbers."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffkit.console import CommandResult, no_report_line, shown


@dataclass
class TrainResult(CommandResult):
    run_dir: Path | None
    dry_run: bool
    device: str
    precision: str
    preset: str
    resolution: int
    params: int
    flops_per_image: int  # forward pass; a training step costs about 3x per image
    dataset_size: int
    skipped_images: list[dict[str, str]]
    total_steps: int
    total_kimg: float
    interrupted: bool = False  # Ctrl-C: the state is saved, `--resume` continues
    step: int = 0
    kimg: float = 0.0
    resumed_from_step: int = 0
    first_loss: float | None = None  # mean of the first stats window of this run folder
    final_loss: float | None = None  # mean of the last stats window
    img_per_s: float | None = None  # this session, training steps only
    train_seconds: float = 0.0  # all sessions
    skipped_steps: int = 0  # steps dropped by the NaN/inf guard
    snapshot: Path | None = None
    state: Path | None = None
    progression: Path | None = None
    report: Path | None = None
    # Why no report was written though reports are on: a resume that took no step (docs/reports.md).
    report_skipped: str | None = None
    files: list[str] = field(default_factory=list)
    world_size: int = 1  # training processes (torchrun ranks); img_per_s counts all of them
    # Stopped cleanly on --max-minutes / max_cpu_seconds (resumable): the reason, the budget and the
    # seconds this session trained (the loop's wall clock, its CPU time, the steps alone).
    budget_stop: dict[str, Any] | None = None
    # Images smaller than the training resolution (enlarged): count and min/median/max factor (cache.py).
    upscaled: dict[str, Any] | None = None
    tensorboard: Path | None = None  # the run's TensorBoard event folder, when it was written

    def report_paths(self) -> list[Path]:
        return [self.report] if self.report is not None else []

    def summary_lines(self) -> list[str]:
        # Paths and file names are user text: shown() keeps `[bold]` in a folder name literal.
        size = f"{self.params / 1e6:.2f}M params, {self.flops_per_image / 1e9:.3f} GFLOPs/image (forward)"
        lines = [f"[bold]model[/]: {shown(self.preset)} at {self.resolution} px, {size}"]
        lines.append(
            f"[bold]data[/]: {self.dataset_size} images"
            + (f", {len(self.skipped_images)} skipped (unreadable)" if self.skipped_images else "")
        )
        if self.upscaled:
            lines.append(f"[yellow]upscaled[/]: {upscale_text(self.upscaled, self.resolution)}")
        for item in self.skipped_images[:5]:
            lines.append(f"  skipped {shown(item['path'])}: {shown(item['reason'])}")
        if len(self.skipped_images) > 5:
            lines.append(f"  ... and {len(self.skipped_images) - 5} more (see --json)")
        lines.append(f"[bold]device[/]: {shown(self.device)}, precision {shown(self.precision)}")
        if self.dry_run:
            lines.append(
                f"[bold]dry run[/]: would train {self.total_steps} steps ({self.total_kimg:.1f} kimg)"
                + (f" into {shown(self.run_dir)}" if self.run_dir else "")
            )
            return lines
        state = "[yellow]interrupted[/]" if self.interrupted else "[green]done[/]"
        if self.budget_stop is not None:
            state = f"[yellow]stopped on the {self.budget_stop['reason']}[/]"
        done = f"step {self.step}/{self.total_steps}, {self.kimg:.2f}/{self.total_kimg:.2f} kimg"
        lines.append(f"[bold]{state}[/]: {done}")
        if self.final_loss is not None:
            first = f"{self.first_loss:.4f} -> " if self.first_loss is not None else ""
            lines.append(f"[bold]loss[/]: {first}{self.final_loss:.4f}")
        if self.img_per_s is not None:
            lines.append(
                f"[bold]speed[/]: {self.img_per_s:.1f} img/s ({self.train_seconds / 60:.1f} min training)"
            )
        if self.budget_stop is not None:
            lines.append(f"[bold]budget[/]: {budget_text(self.budget_stop)}")
        if self.skipped_steps:
            lines.append(f"[yellow]non-finite steps skipped[/]: {self.skipped_steps}")
        lines.append(f"[bold]run[/]: {shown(self.run_dir)}")
        if self.snapshot:
            lines.append(f"[bold]snapshot[/]: {shown(self.snapshot)}")
        if self.report:
            lines.append(f"[bold]report[/]: {shown(self.report)}")
        if self.report_skipped:
            at_end = self.step >= self.total_steps
            hint = "a longer --steps/--kimg/--epochs trains on" if at_end else "--resume again continues"
            lines.append(no_report_line(self.report_skipped, hint))
        if self.tensorboard is not None:
            lines.append(
                f"[bold]tensorboard[/]: tensorboard --logdir {shown(shlex.quote(str(self.tensorboard)))}"
            )
        if (self.interrupted or self.budget_stop is not None) and self.run_dir is not None:
            launcher = (
                f"torchrun --nproc_per_node {self.world_size} -m diffkit"
                if self.world_size > 1
                else "diffkit"
            )
            lines.append(
                f"continue with: {launcher} train --out {shown(shlex.quote(str(self.run_dir)))} --resume"
            )
        return lines


def upscale_text(upscaled: dict[str, Any], resolution: int) -> str:
    """``12 of 30 images are smaller than 128 px and are enlarged 2.7-7.5x (median 4.0x)``."""
    return (
        f"{upscaled['count']} of {upscaled['images']} images are smaller than {resolution} px (shorter "
        f"side) and are enlarged {upscaled['min_factor']:.2f}-{upscaled['max_factor']:.2f}x (median "
        f"{upscaled['median_factor']:.2f}x); a lower --resolution trains on their own pixels"
    )


def budget_text(stop: dict[str, Any]) -> str:
    """``--max-minutes 30: this session trained 30.1 min (loop wall clock), 29.0 min CPU, steps 28.7 min``."""
    limit = (
        f"--max-minutes {stop['max_minutes']:g}"
        if stop["reason"] == "time budget"
        else f"max_cpu_seconds {stop['max_cpu_seconds']:g}"
    )
    return (
        f"{limit}: this session ran {stop['wall_seconds']:.1f} s (the loop's wall clock), "
        f"{stop['cpu_seconds']:.1f} s of CPU time, {stop['step_seconds']:.1f} s in training steps"
    )
