"""The quarantine's move log: the intent is on disk before a file moves, so a kill never loses track.

``QUARANTINE/.diffkit-moves.jsonl`` holds one JSON object per line, each with an ``event``:

* ``intent``: written and fsynced before the file moves: ``id``, ``root``, ``rel`` (the path in
  ``root``), ``to_rel`` (the path in the quarantine), ``from``, ``to``, ``keeper``, ``keeper_rel``,
  ``distance``.
* ``moved``: the move happened: ``id``, ``from``, ``to``, ``keeper``, ``distance``, ``moved_at`` (enough
  to undo). Lines without an ``event`` (written before intents were logged) are moves too.
* ``not-moved``: the file stayed where it was, with the ``reason``.

So after a ``kill -9`` at any moment every quarantined file has at least an intent line; the next move
run into the same quarantine resolves each open intent by looking where the file is. JSON keeps file
names with undecodable bytes exactly (``\\udcxx`` escapes), so a logged path always names the real file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from diffkit.console import printable
from diffkit.dedupe.config import MOVE_LOG_NAME
from diffkit.errors import DiffkitError
from diffkit.safepath import unsafe_reason

__all__ = ["MoveLog", "MoveLogError"]

_RESOLUTIONS = frozenset({"moved", "not-moved"})


class MoveLogError(DiffkitError):
    """The log could not be written or synced (a full or read-only quarantine disk). The caller says how
    far the moves got; every file is still in its folder or in the quarantine with an intent line."""


class MoveLog:
    """Append-only log opened without following a symlink (``O_NOFOLLOW``); one ``write`` per line."""

    def __init__(self, quarantine: Path) -> None:
        self.path = quarantine / MOVE_LOG_NAME
        reason = unsafe_reason(quarantine, MOVE_LOG_NAME)
        if reason is not None:
            raise DiffkitError(
                f"move log {printable(self.path)} is not safe to write ({printable(reason)}); remove it or"
                " pass --to another folder"
            )
        flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        flags |= getattr(os, "O_CLOEXEC", 0)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            raise DiffkitError(
                f"cannot open the move log {printable(self.path)} ({exc.strerror}); pass --to a writable"
                " folder"
            ) from None
        self._token = f"{time.time_ns() // 1_000_000:x}-{os.getpid()}"
        self._count = 0
        try:
            self.records = self._read()
        except BaseException:
            self.close()
            raise

    def _read(self) -> list[dict[str, Any]]:
        data = b""
        while chunk := os.pread(self._fd, 1 << 20, len(data)):
            data += chunk
        if data and not data.endswith(b"\n"):
            self._append(b"\n")  # a line torn by a kill or a full disk stays a (skipped) line of its own
        records = []
        for line in data.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def new_id(self) -> str:
        self._count += 1
        return f"{self._token}-{self._count}"

    def write(self, record: dict[str, Any]) -> None:
        """Append one line; raises :class:`MoveLogError` when the disk refuses it (the line may be torn:
        the next open ends it with a newline, and readers skip it)."""
        self._append((json.dumps(record) + "\n").encode("ascii"))  # ensure_ascii: exact \udcxx names
        self.records.append(record)

    def sync(self) -> None:
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise self._error(exc) from None

    def _append(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self._fd, data) :]
        except OSError as exc:
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> MoveLogError:
        reason = printable(exc.strerror or exc)
        return MoveLogError(f"cannot write the move log {printable(self.path)} ({reason})")

    def open_intents(self) -> list[dict[str, Any]]:
        """Intents with no ``moved`` / ``not-moved`` line: moves a kill interrupted."""
        resolved = {r.get("id") for r in self.records if r.get("event") in _RESOLUTIONS}
        return [r for r in self.records if r.get("event") == "intent" and r.get("id") not in resolved]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MoveLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
