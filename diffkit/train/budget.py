"""Training for a time budget: ``--max-minutes`` (the loop's wall clock) and ``max_cpu_seconds`` (the
process's CPU time, what a benchmark gives one-thread jobs so that each gets the same compute).

A budget belongs to one session: it starts with the session's first step (after the data cache, the
model and the resume state are ready) and a later ``--resume`` starts a fresh one. Time between steps
(grids, FID/KID, snapshots, state saves) counts, since it is part of the loop's wall clock. The loop
asks :meth:`TimeBudget.spent` after every step, so it stops at the first step boundary past the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

# The clocks, as module attributes so that tests can replace them instead of sleeping.
wall_clock: Callable[[], float] = time.monotonic
cpu_clock: Callable[[], float] = time.process_time

WALL = "time budget"
CPU = "CPU-time budget"


@dataclass
class TimeBudget:
    max_seconds: float | None  # wall clock of the loop; None: none
    max_cpu_seconds: float | None  # process CPU time; None: none
    wall_start: float = 0.0
    cpu_start: float = 0.0

    @classmethod
    def start(cls, max_minutes: float | None, max_cpu_seconds: float | None) -> TimeBudget:
        seconds = None if max_minutes is None else max_minutes * 60
        return cls(seconds, max_cpu_seconds, wall_clock(), cpu_clock())

    @property
    def enabled(self) -> bool:
        return self.max_seconds is not None or self.max_cpu_seconds is not None

    def wall_seconds(self) -> float:
        return wall_clock() - self.wall_start

    def cpu_seconds(self) -> float:
        return cpu_clock() - self.cpu_start

    def spent(self) -> str | None:
        """Which budget is used up (``WALL`` or ``CPU``), or None while both last."""
        if self.max_seconds is not None and self.wall_seconds() >= self.max_seconds:
            return WALL
        if self.max_cpu_seconds is not None and self.cpu_seconds() >= self.max_cpu_seconds:
            return CPU
        return None

    def record(self, reason: str, step: int, nimg: int, step_seconds: float) -> dict[str, object]:
        """The stats.jsonl line (``"kind": "stop"``) and the result's numbers for a budget stop."""
        return {
            "step": step,
            "kimg": nimg / 1000,
            "reason": reason,
            "max_minutes": None if self.max_seconds is None else self.max_seconds / 60,
            "max_cpu_seconds": self.max_cpu_seconds,
            "wall_seconds": self.wall_seconds(),  # the loop's wall clock this session
            "cpu_seconds": self.cpu_seconds(),  # the process's CPU time this session
            "step_seconds": step_seconds,  # the training steps alone this session
        }
