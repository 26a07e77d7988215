"""Putting an export in place: staged beside OUT, every target checked, then swapped in with a rollback.

The files are written into a hidden staging folder beside OUT (``.<OUT>.export-XXXXXXXX``, on the
same file system, so every move is a rename). It holds three things:

- ``.diffkit-export``: a marker naming the process, locked (``flock``) for as long as it runs;
- ``new/``: the export, renamed to OUT when OUT is new or empty;
- ``old/``: with ``--force`` into a non-empty OUT, the entries of OUT the export replaces, moved aside
  so that a failed swap can put them back, and deleted with the staging folder after a good one.

Before anything in OUT moves, every target is checked: a file the export writes must be a file (or
a link) there, a folder it writes must hold nothing but the files an export writes. Anything else is
the user's, and the export stops with one line instead of deleting it.

An export killed with ``kill -9`` leaves its staging folder behind; the next export into the same
parent removes it, and only it: a folder of the staging name whose marker is a regular file naming a
diffkit export and whose lock no live process holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from diffkit.atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from diffkit.errors import DiffkitError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, so no stale folder is ever removed
    fcntl = None  # type: ignore[assignment]

UNET_DIR, SCHEDULER_DIR = "unet", "scheduler"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
FILES = (
    "model_index.json",
    f"{SCHEDULER_DIR}/scheduler_config.json",
    f"{UNET_DIR}/config.json",
    f"{UNET_DIR}/{WEIGHTS_FILE}",
    "README.md",
    "samples.png",  # the run's sample grid, shown in the card; absent when the run wrote none
)
TOP_LEVEL = ("model_index.json", SCHEDULER_DIR, UNET_DIR, "README.md", "samples.png")
# What an export writes inside each folder it writes: a folder holding anything else is the user's.
FOLDER_FILES = {
    folder: frozenset(name.split("/", 1)[1] for name in FILES if name.startswith(f"{folder}/"))
    for folder in (UNET_DIR, SCHEDULER_DIR)
}

MARKER = ".diffkit-export"
MARKER_KIND = "diffkit export staging"
STAGING_SUFFIX = ".export-"
# tempfile.mkdtemp's names: the prefix, then 8 of [a-z0-9_]
STAGING_NAME = re.compile(r"\..*\.export-[a-z0-9_]{8}")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)  # markers are never links


class _KeptStaging(DiffkitError):
    """A swap that could not be undone: the staging folder, holding OUT's old entries, is kept."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISREG, "a file"), (stat.S_ISFIFO, "a named pipe")):
        if test(mode):
            return name
    return "a special file"


def _target_problem(out: Path, name: str) -> str | None:
    """Why ``out/name`` must not be replaced (it is the user's), or None when the export may replace it."""
    target = out / name
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return None
    except OSError as error:
        return f"{target} cannot be checked ({error.strerror})"
    if stat.S_ISLNK(mode):
        return None  # the link itself is replaced, never what it points to
    if name not in FOLDER_FILES:
        return None if stat.S_ISREG(mode) else f"{target} is {_kind(mode)}; the export writes a file there"
    if not stat.S_ISDIR(mode):
        return f"{target} is {_kind(mode)}; the export writes a folder there"
    try:
        foreign = sorted(
            entry.name
            for entry in os.scandir(target)
            if entry.name not in FOLDER_FILES[name] or not entry.is_file(follow_symlinks=False)
        )
    except OSError as error:
        return f"{target} cannot be listed ({error.strerror})"
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        return f"{target} holds what the export does not write ({shown})"
    return None


def check_targets(out: Path) -> None:
    """Refuse, before anything moves, to replace an entry of ``out`` that the export did not write."""
    problems = [problem for name in TOP_LEVEL if (problem := _target_problem(out, name)) is not None]
    if problems:
        raise DiffkitError(
            "; ".join(problems) + ". --force replaces only what an export wrote: move these away or "
            "choose another OUT (nothing was changed)"
        )


def _marker_record(out: Path) -> bytes:
    record = {"kind": MARKER_KIND, "pid": os.getpid(), "since": time.time(), "out": str(out)}
    return json.dumps(record).encode()


@contextlib.contextmanager
def staging_folder(out: Path) -> Iterator[Path]:
    """A locked, marked staging folder beside ``out`` for the ``with`` block; removed after it."""
    parent = out.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out.name}{STAGING_SUFFIX}"))
    except OSError as error:
        raise DiffkitError(f"cannot create {out} ({error.strerror}); choose another OUT") from None
    fd, keep = -1, False
    try:
        fd = os.open(staging / MARKER, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)  # a fresh file: nobody else can hold it yet
        # Written after the lock is taken: a marker with a record is always locked by a live export
        # (or its process is gone), never caught between its creation and its lock.
        os.write(fd, _marker_record(out))
        yield staging
    except _KeptStaging:
        keep = True
        raise
    finally:
        if not keep:
            shutil.rmtree(staging, ignore_errors=True)
        if fd >= 0:
            os.close(fd)


def _is_stale(folder: Path) -> bool:
    """Whether ``folder`` was abandoned: its marker names a diffkit export and nobody holds its lock."""
    if fcntl is None:
        return False
    try:
        fd = os.open(folder / MARKER, os.O_RDWR | os.O_NONBLOCK | _NOFOLLOW)
    except OSError:
        return False  # no marker (or a link, or unreadable): not demonstrably an export's
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live export holds it
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(record, dict) and record.get("kind") == MARKER_KIND
    finally:
        os.close(fd)


def clean_stale_staging(parent: Path) -> list[str]:
    """Remove the staging folders that killed exports left in ``parent``; the names removed."""
    removed = []
    try:
        entries = sorted(os.scandir(parent), key=lambda entry: entry.name)
    except OSError:
        return []
    for entry in entries:
        if not STAGING_NAME.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        if _is_stale(Path(entry.path)):
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.lexists(entry.path):
                removed.append(entry.name)
    return removed


def _stage(new: Path, contents: dict[str, bytes]) -> None:
    try:
        new.mkdir()  # the umask's mode, as any new folder: it becomes OUT when OUT is new
    except OSError as error:
        raise DiffkitError(f"cannot stage the export in {new.parent} ({error.strerror})") from None
    for name, data in contents.items():
        if name.endswith((".json", ".md")):
            atomic_write_text(new / name, data.decode())
        else:
            atomic_write_bytes(new / name, data)


def publish(out: Path, contents: dict[str, bytes]) -> list[str]:
    """Write ``contents`` into ``out`` as one step; the names of stale staging folders removed first."""
    removed = clean_stale_staging(out.absolute().parent)
    with staging_folder(out) as staging:
        _stage(staging / "new", contents)
        if out.is_dir() and any(out.iterdir()):
            check_targets(out)  # again: OUT may have changed while the weights were converted
            swap_entries(staging, out)
        else:
            try:
                os.rename(staging / "new", out)  # POSIX: replaces an empty folder, fails on a non-empty one
            except OSError as error:
                raise DiffkitError(
                    f"cannot move the export into {out} ({error.strerror}); was it filled meanwhile?"
                ) from None
        fsync_dir(out.absolute().parent)
    return removed


def swap_entries(staging: Path, out: Path) -> None:
    """``--force``: move each replaced entry of ``out`` aside, then the new one in; undo all on a failure."""
    new, old = staging / "new", staging / "old"
    old.mkdir()
    moved_aside: list[str] = []
    placed: list[str] = []
    try:
        for name in TOP_LEVEL:
            if os.path.lexists(out / name):
                os.rename(out / name, old / name)  # a link moves as the link, never its target
                moved_aside.append(name)
            if not os.path.lexists(new / name):
                continue  # not written this time (no sample grid): the old one is not left beside the card
            os.rename(new / name, out / name)
            placed.append(name)
    except OSError as error:
        undone = _undo(out, new, old, placed, moved_aside)
        reason = error.strerror or type(error).__name__
        if not undone:
            with contextlib.suppress(OSError):  # unmarked, it is never taken for a stale export's folder
                (staging / MARKER).unlink()
            raise _KeptStaging(
                f"cannot replace the exported files in {out} ({reason}), nor put all the old ones back: "
                f"they are in {old}; move them back by hand"
            ) from None
        raise DiffkitError(
            f"cannot replace the exported files in {out} ({reason}); it was left as it was"
        ) from None
    fsync_dir(out)


def _undo(out: Path, new: Path, old: Path, placed: list[str], moved_aside: list[str]) -> bool:
    """Put ``out`` back as it was before a failed swap; whether every entry went back."""
    undone = True
    for name in reversed(placed):
        try:
            os.rename(out / name, new / name)
        except OSError:
            undone = False
    for name in reversed(moved_aside):
        try:
            os.rename(old / name, out / name)
        except OSError:
            undone = False
    return undone
