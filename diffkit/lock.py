"""One writer per folder: an exclusive advisory lock held for the whole run.

Two scrapes into one ``--out`` (or two ``dedupe --action`` runs, or two trainings into one run
folder) would delete each other's temp files and double-count rows. The lock is ``fcntl.flock`` on
``<folder>/.diffkit.lock``: the kernel drops it when the process dies (``kill -9`` included), so a
stale lock file never blocks a rerun. The file records who holds it, for the error message.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from diffkit.errors import DiffkitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, runs unlocked
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "FolderInUseError", "folder_lock"]

LOCK_NAME = ".diffkit.lock"


class FolderInUseError(DiffkitError):
    """Another diffkit process holds the folder's lock."""


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("since", 0))))
    return f"`diffkit {info.get('command', '?')}` (pid {info['pid']}, since {since})"


@contextlib.contextmanager
def folder_lock(folder: Path, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the ``with`` block; raise :class:`FolderInUseError` when it is held."""
    folder = Path(folder)
    if fcntl is None:  # pragma: no cover
        yield
        return
    path = folder / LOCK_NAME
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if not os.access(folder, os.W_OK):
            message = f"{folder} is not writable ({error.strerror}); choose another folder"
            raise DiffkitError(message) from None
        raise DiffkitError(f"cannot lock {folder}: {error.strerror} ({path})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FolderInUseError(
                f"{folder} is in use by {_holder(fd)}; wait for it to finish or stop it, then rerun"
            ) from None
        record = json.dumps({"pid": os.getpid(), "command": command, "since": time.time()})
        with contextlib.suppress(OSError):  # the lock matters, the note about its holder is a courtesy
            os.ftruncate(fd, 0)
            os.pwrite(fd, record.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
