"""Numbered run folders: ``runs/00000-small``, ``runs/00001-tiny``, ... (NVlabs/edm style).

A run folder is written to for hours (state, snapshots, grids, stats), so before any of that it is
checked for symlinks: a planted ``state-latest.pt -> ~/.bashrc`` or ``samples -> /elsewhere`` would
otherwise be read from, or written through, on the next run or resume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from diffkit.errors import DiffkitError
from diffkit.safepath import unsafe_reason
from diffkit.train.checkpoint import CONFIG_FILE, PROGRESSION_FILE, SAMPLES_DIR, STATE_FILE, STATS_FILE

_RUN_NAME = re.compile(r"^(\d{5})-")
# Files and folders a training run writes, and the patterns of those it writes many of.
_WRITTEN = (CONFIG_FILE, STATE_FILE, STATS_FILE, PROGRESSION_FILE, SAMPLES_DIR)
_WRITTEN_PATTERNS = (re.compile(r"^ema-\d+\.safetensors$"),)
_GRID_PATTERN = re.compile(r"^grid-\d+\.png$")


def run_ids(runs_dir: Path) -> list[tuple[int, Path]]:
    if not runs_dir.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in runs_dir.iterdir() if p.is_dir() and (m := _RUN_NAME.match(p.name))
    ]
    return sorted(found)


def next_run_dir(runs_dir: Path, name: str, create: bool = True) -> Path:
    """The next free ``NNNNN-<name>`` folder under ``runs_dir`` (created unless ``create`` is False)."""
    ids = run_ids(runs_dir)
    number = ids[-1][0] + 1 if ids else 0
    while True:
        path = runs_dir / f"{number:05d}-{name}"
        if not create:
            return path
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:  # another process took this number meanwhile (or a link holds it)
            number += 1


def latest_run_dir(runs_dir: Path, marker: str) -> Path | None:
    """The highest-numbered run folder that contains ``marker`` (a file name), if any."""
    for _, path in reversed(run_ids(runs_dir)):
        if (path / marker).exists():
            return path
    return None


def _symlinked_entries(
    folder: Path, pattern_names: tuple[str, ...], patterns: tuple[re.Pattern[str], ...]
) -> list[str]:
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as error:
        raise DiffkitError(f"cannot read the run folder {folder} ({error.strerror})") from None
    return sorted(
        entry.name
        for entry in entries
        if entry.is_symlink() and (entry.name in pattern_names or any(p.match(entry.name) for p in patterns))
    )


def check_run_dir(run_dir: Path, runs_dir: Path | None = None) -> None:
    """Raise ``DiffkitError`` when writing the run into ``run_dir`` could follow a symlink.

    ``runs_dir``: set when ``run_dir`` was picked inside it (a numbered run, ``--resume`` without
    ``--out``); then ``run_dir`` itself must not be a link either. A folder given with ``--out`` may
    be a link: the user chose it. What diffkit writes inside (state, config, stats, snapshots,
    ``samples/`` and its grids) must be real files and folders; atomic replacement would replace a
    linked file, but the resume state is read through it first and ``samples/`` is written into.
    """
    if runs_dir is not None:
        reason = unsafe_reason(runs_dir, run_dir.name)
        if reason is not None:
            raise DiffkitError(
                f"the run folder {run_dir} {reason}; diffkit does not write through links: "
                "pass the real folder with --out"
            )
    linked = _symlinked_entries(run_dir, _WRITTEN, _WRITTEN_PATTERNS)
    if SAMPLES_DIR not in linked:
        linked += [
            f"{SAMPLES_DIR}/{name}"
            for name in _symlinked_entries(run_dir / SAMPLES_DIR, (), (_GRID_PATTERN,))
        ]
    if linked:
        more = f" (and {len(linked) - 1} more)" if len(linked) > 1 else ""
        raise DiffkitError(
            f"{run_dir / linked[0]} is a symlink{more}; diffkit does not read or write run files through "
            "links: replace it with the real file or choose another --out"
        )
