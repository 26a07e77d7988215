"""The live progress bar: kept/N, requests per second, duplicates, rejections by reason and ETA."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from diffkit.console import shown


class ScrapeProgress:
    """A rich progress bar on stderr (stdout stays clean for ``--json``); a no-op when disabled."""

    def __init__(self, total: int, enabled: bool, console: Console) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._progress = Progress(
            TextColumn("[bold]kept"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),  # markup: everything put in ``info`` goes through shown()
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = self._progress.add_task("scrape", total=total, info="")

    def __enter__(self) -> ScrapeProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, run: Any, force: bool = False) -> None:
        """Refresh from the run's counters, at most 10 times a second."""
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        elapsed = max(now - run.started, 1e-9)
        top = ", ".join(f"{shown(reason)} {count}" for reason, count in run.rejections.most_common(3))
        info = (
            f"{run.requests / elapsed:.2f} req/s · dup {sum(run.duplicates.values())}"
            f" · rejected {sum(run.rejections.values())}" + (f" ({top})" if top else "")
        )
        self._progress.update(self._task, completed=run.kept, info=info)
