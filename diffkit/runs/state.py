"""``state-latest.pt``: everything ``--resume`` needs for a bit-exact continuation.

What goes in it is :class:`diffkit.train.state.TrainingState`'s (model, EMA, optimiser, grad scaler,
step/nimg, RNG states, the batcher's position); this module owns the file: written atomically (a kill
at any moment leaves the previous state, and the next write removes the killed one's temporary file),
read with ``weights_only=True``, so even this file cannot run code when loaded.
"""

from __future__ import annotations

import contextlib
import glob
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch

from diffkit.atomic import TMP_SUFFIX, atomic_open
from diffkit.errors import DiffkitError

STATE_FORMAT = 1


# Fault injection, for tests only (None in normal use): called with the open temporary file once the
# state's bytes are in it, just before the rename that makes it the state. A test kills the process
# there (tests/test_train_state.py), the moment a kill -9 leaves the most behind.
before_replace: Callable[[IO[bytes]], None] | None = None


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` atomically; first remove what an earlier write killed midway left beside it (the
    caller holds the run folder's lock, so no other write of this state can be under way)."""
    _remove_stale_temps(path)
    with atomic_open(path, "wb") as handle:
        torch.save({"format": STATE_FORMAT, **state}, handle)
        if before_replace is not None:
            before_replace(handle)


def _remove_stale_temps(path: Path) -> None:
    """The temporary files of interrupted writes of ``path`` (``.<name>.<random>.tmp``, as large as the
    state itself)."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()


def load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DiffkitError(f"{path} not found; nothing to resume (start the run without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file, or one that holds pickled code: say which one
        raise DiffkitError(f"cannot read {path} ({_load_error(exc)}); the resume state is damaged") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise DiffkitError(f"{path} is not a diffkit resume state (format {STATE_FORMAT})")
    return state


def _load_error(exc: Exception) -> str:
    """One line for torch.load's error; a refused global is named, not followed by torch's page of advice."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    lines = [line for line in lines if line]
    refused = next((line for line in lines if "Unsupported global" in line), None)
    if refused is not None:
        found = refused.split("Unsupported global:", 1)[-1].strip().split(" was not")[0]
        return f"it holds a pickled object ({found}), which diffkit never unpickles"
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:200]
