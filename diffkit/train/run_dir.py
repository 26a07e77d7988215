"""Numbered run folders: ``runs/00000-small``, ``runs/00001-tiny``, ... (NVlabs/edm style)."""

from __future__ import annotations

import re
from pathlib import Path

_RUN_NAME = re.compile(r"^(\d{5})-")


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
        except FileExistsError:  # another process took this number meanwhile
            number += 1


def latest_run_dir(runs_dir: Path, marker: str) -> Path | None:
    """The highest-numbered run folder that contains ``marker`` (a file name), if any."""
    for _, path in reversed(run_ids(runs_dir)):
        if (path / marker).exists():
            return path
    return None
