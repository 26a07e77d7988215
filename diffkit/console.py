"""The terminal: user text shown safely, the one stderr console and progress bar, the result base.

A URL, path or file name may contain ``[bold]`` or ``[/]`` (rich markup) or bytes that are not UTF-8
(valid file names on Linux, decoded by Python with ``surrogateescape``). Every piece of user text that
goes into a rich string passes through :func:`shown`; text for files (HTML, JSON) through
:func:`printable`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = [
    "Bar",
    "CommandResult",
    "dumps",
    "err_console",
    "no_report_line",
    "out_console",
    "print_result",
    "printable",
    "progress_default",
    "shown",
    "to_jsonable",
]


def printable(value: object) -> str:
    """``str(value)`` with undecodable bytes shown as ``\\xNN`` (safe to encode as UTF-8)."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # Surrogate escapes (U+DC80-DCFF, how Python holds undecodable file-name bytes) become \xNN; any
        # other lone surrogate (from JSON's "\ud800", say) cannot be a byte, so it is written out as \ud800.
        return "".join(_escaped_char(char) for char in text)


def _escaped_char(char: str) -> str:
    if not 0xD800 <= ord(char) <= 0xDFFF:
        return char
    if 0xDC80 <= ord(char) <= 0xDCFF:
        return f"\\x{ord(char) - 0xDC00:02x}"
    return f"\\u{ord(char):04x}"


def shown(value: object) -> str:
    """User text for a rich markup string: printable and with markup escaped."""
    return escape(printable(value))


# --- the one stderr console and the one progress bar ------------------------------------------------

# Progress, warnings and errors go to stderr so that stdout stays clean for ``--json`` and pipes.
err_console = Console(stderr=True)

# The free-text column of a bar is cut to this many characters: at 80 columns a growing rejection
# list must never push out the bar's count and ETA.
INFO_WIDTH = 28


def progress_default() -> bool:
    """``--progress`` is on by default when stderr is a terminal (also under ``--json``)."""
    return err_console.is_terminal


def _clip(text: str, width: int = INFO_WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class Bar:
    """One progress bar on stderr: description, bar, done/total, a short info text, elapsed, ETA.

    A no-op when ``enabled`` is false. ``info`` is user-facing free text; it is escaped and clipped.
    Use as a context manager; ``update`` may be called from worker threads (rich locks internally).
    """

    def __init__(self, description: str, total: float | None, enabled: bool, transient: bool = True) -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=None if total is None else 24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
            transient=transient,
        )
        self._task = self._progress.add_task(shown(description), total=total, info="")

    def __enter__(self) -> Bar:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.enabled:
            self._progress.stop()

    def update(
        self, completed: float | None = None, advance: float | None = None, info: str | None = None
    ) -> None:
        if not self.enabled:
            return
        fields: dict[str, Any] = {}
        if info is not None:
            fields["info"] = shown(_clip(info))
        self._progress.update(self._task, completed=completed, advance=advance, **fields)

    def set_total(self, total: float | None) -> None:
        if self.enabled:
            self._progress.update(self._task, total=total)


# --- the result every command returns -----------------------------------------------------------------


class CommandResult:
    """What every command returns: the CLI prints ``summary_lines()`` or, with ``--json``, ``to_dict()``.

    A mixin for the commands' dataclasses: they add their fields; ``interrupted`` (Ctrl-C: exit 130)
    and ``report_paths()`` have defaults so that the CLI never needs ``getattr``.
    """

    interrupted: bool = False

    def report_paths(self) -> list[Path]:
        """The report files this command wrote (HTML first), for the demo and the run page."""
        return []

    def summary_lines(self) -> list[str]:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        if dataclasses.is_dataclass(self):
            return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return dict(vars(self))


# A command that did no work (a scrape already at --n, a resume already at its target) writes no report:
# 73 reports after 45 minutes of use buried the few that said something (issue 25.6, docs/reports.md).
NO_REPORT_HINT = "pass --report to write one"


def no_report_line(reason: str, hint: str = NO_REPORT_HINT) -> str:
    """The summary line of a command that wrote no report, e.g. ``nothing to do: 300 of 300 images
    already kept; no report (pass --report to write one)``. ``reason`` is user text: shown escaped."""
    return f"{shown(reason)}; no report ({shown(hint)})"


# --- printing results on stdout -----------------------------------------------------------------------
# A command returns a result object. Its JSON form is ``result.to_dict()`` when defined, else
# ``dataclasses.asdict(result)``; its text form is ``result.summary_lines()`` when defined, else one
# ``key: value`` line per top-level field.

out_console = Console()


def to_jsonable(value: Any) -> Any:
    """Convert results to plain JSON types; non-finite floats become ``None`` (JSON has no NaN)."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return to_jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return to_jsonable(value.item())
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), indent=2, sort_keys=False)


def print_result(result: Any, json_output: bool) -> None:
    if json_output:
        print(dumps(result), flush=True)
        return
    if hasattr(result, "summary_lines"):
        for line in result.summary_lines():
            out_console.print(line, highlight=False, soft_wrap=True)
        return
    data = to_jsonable(result)
    if isinstance(data, dict):
        for key, value in data.items():
            out_console.print(f"[bold]{key}[/]: {shown(value)}", highlight=False, soft_wrap=True)
    else:
        out_console.print(shown(data), highlight=False)
