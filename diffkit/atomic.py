"""Atomic file writes: temp file in the same folder, fsync, rename.

A reader (or a rerun after ``kill -9``) sees either the old file or the complete new one, never a
partial write. Leftover ``*.tmp`` files are the only trace of an interrupted write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from diffkit.errors import DiffkitError, WriteError

TMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    # The only portable way to read the umask is to set it and put it back; done once, at import.
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files as 0600; a dataset or report should get the permissions any new file gets.
NEW_FILE_MODE = 0o666 & ~_read_umask()


def fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); a no-op where directories cannot be opened."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "wb", durable: bool = True) -> Iterator[IO]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` atomically."""
    path = Path(path)
    prefix = f".{path.name}."
    try:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TMP_SUFFIX)
        except FileNotFoundError:  # the folder is made only when missing: mkdir per write cost ~0.1 ms
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=TMP_SUFFIX)
    except OSError as error:
        raise _write_error(path, error) from None
    tmp = Path(tmp_name)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, NEW_FILE_MODE)
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise _write_error(path, error) from None
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _write_error(path: Path, error: OSError) -> WriteError:
    if isinstance(error, WriteError):
        return error
    reason = error.strerror or str(error) or type(error).__name__
    wrapped = WriteError(f"cannot write {path}: {reason}")
    wrapped.errno, wrapped.strerror, wrapped.filename = error.errno, error.strerror, str(path)
    return wrapped


def atomic_write_bytes(path: Path | str, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable) as handle:
        handle.write(data)


def atomic_write_text(path: Path | str, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def check_writable_dir(directory: Path | str, what: str) -> Path:
    """Create ``directory`` if needed and prove a file can be written there, before expensive work.

    Raises :class:`~diffkit.errors.DiffkitError` naming ``what`` (for example "the report") so that an
    unwritable ``--report`` or cache folder fails in the first second, not after an hour of work.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".diffkit-probe.", suffix=TMP_SUFFIX)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DiffkitError(f"cannot write {what} to {directory}: {reason}") from None
    return directory
