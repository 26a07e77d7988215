"""What happens to the duplicates: nothing (report), moved to a quarantine folder, or deleted.

Moves keep each file's path relative to the scanned folder, so ``QUARANTINE/a/b.jpg`` came from
``DIR/a/b.jpg``. Every move is logged to ``QUARANTINE/.diffkit-moves.jsonl`` before it happens (intent,
fsynced) and after (moved): see :mod:`diffkit.dedupe.movelog`; the next move run finishes what a kill
interrupted. When the folder is a ``diffkit scrape`` output (``manifest.sqlite``), the removed rows go
from table ``images`` to table ``dedupe_removed`` and ``metadata.jsonl`` is rewritten (both by
:mod:`diffkit.dataset.manifest`, which owns the format), so the manifest lists exactly the files on
disk. Files move first, the manifest changes after: a kill in between leaves rows without files, which
``diffkit scrape`` reconciles on its next start.

Every file moved or deleted is checked first (:mod:`diffkit.safepath`): it lies inside the folder the user
gave (or the quarantine folder), no symlink on the way, it is a regular file, and its keeper is still a
regular file. Anything else is left alone and listed, so a link never stands in for the real image.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from diffkit.atomic import TMP_SUFFIX, fsync_dir
from diffkit.console import printable
from diffkit.dataset.manifest import (
    MANIFEST_NAME,
    METADATA_NAME,
    RemovedFile,
    fetch_times,
    record_removals,
    rewrite_metadata,
    unsafe_manifest_files,
)
from diffkit.dedupe.config import MOVE_LOG_NAME
from diffkit.dedupe.movelog import MoveLog, MoveLogError
from diffkit.errors import DiffkitError
from diffkit.safepath import is_real_file, unsafe_reason

__all__ = [
    "MOVE_LOG_NAME",
    "ActionStopped",
    "Outcome",
    "Removal",
    "delete_duplicates",
    "finish_interrupted_moves",
    "move_duplicates",
    "update_manifest",
]

_INTENT_BATCH = 256  # intents fsynced together before their files move: one fsync per batch, not per file


@dataclass(frozen=True)
class Removal:
    """One non-keeper: its path relative to the scanned folder, and why it goes."""

    rel: str
    keeper: str
    distance: int


@dataclass
class Outcome:
    """What an action did: files removed, where moved files went, and what it refused to touch."""

    done: list[Removal] = field(default_factory=list)
    moved_to: dict[str, str] = field(default_factory=dict)  # rel -> path in the quarantine
    left_alone: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    warnings: list[str] = field(default_factory=list)

    def refuse(self, rel: str, reason: str) -> None:
        self.left_alone.append({"path": rel, "reason": reason})


class ActionStopped(DiffkitError):
    """A move or delete stopped part way (a full disk, a refused write): one line for the user, and what
    was done until then, so the caller can still record those files in the scrape manifest."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.outcome = outcome


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def _why_not(root: Path, removal: Removal) -> str | None:
    """Why the non-keeper must be left alone (None: it may go). Checked right before acting."""
    reason = unsafe_reason(root, removal.rel)
    if reason is not None:
        return reason
    if not is_real_file(root / removal.rel):
        return "not a regular file any more"
    if unsafe_reason(root, removal.keeper) is not None or not is_real_file(root / removal.keeper):
        return f"its keeper {removal.keeper} is no longer a regular file in the folder"
    return None


def move_file(source: Path, destination: Path) -> Path:
    """Move one file without a window where it exists nowhere; returns where it ended up.

    ``destination`` was chosen free (or holding the same bytes, from an interrupted earlier move).
    Same filesystem: one ``rename``. Across filesystems: copy to a temp file beside the destination,
    fsync, rename into place, then unlink the source (a kill leaves at worst a second copy).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(destination):
        if is_real_file(destination) and _same_bytes(source, destination):
            source.unlink()
            return destination
        raise FileExistsError(errno.EEXIST, "destination is taken", str(destination))
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temp = destination.with_name(f".{destination.name}{TMP_SUFFIX}")
        if is_real_file(temp):
            temp.unlink()  # left by a killed copy; "xb" below never opens a planted link
        try:
            with source.open("rb") as src, temp.open("xb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            shutil.copystat(source, temp)
            os.replace(temp, destination)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_dir(destination.parent)
        source.unlink()
    return destination


def _free_rel(quarantine: Path, source: Path, rel: str, reserved: set[str]) -> str:
    """``rel`` in the quarantine, or ``name-dup1.ext``... when something else already sits there."""
    candidate, counter = rel, 0
    while True:
        path = quarantine / candidate
        if candidate not in reserved:
            if not os.path.lexists(path):
                return candidate
            if is_real_file(path) and _same_bytes(source, path):  # an earlier interrupted move
                return candidate
        counter += 1
        stem, suffix = os.path.splitext(rel)
        candidate = f"{stem}-dup{counter}{suffix}"


def _intent(log: MoveLog, root: Path, quarantine: Path, removal: Removal, to_rel: str) -> dict[str, Any]:
    return {
        "event": "intent",
        "id": log.new_id(),
        "root": str(root),
        "rel": removal.rel,
        "to_rel": to_rel,
        "from": str(root / removal.rel),
        "to": str(quarantine / to_rel),
        "keeper": str(root / removal.keeper),
        "keeper_rel": removal.keeper,
        "distance": removal.distance,
        "at": _now(),
    }


def _moved(intent: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "from", "to", "keeper", "distance")
    return {"event": "moved", **{k: intent[k] for k in keys}, "moved_at": _now()}


def move_duplicates(root: Path, quarantine: Path, removals: list[Removal], log: MoveLog) -> Outcome:
    """Move every non-keeper into ``quarantine`` under its relative path, logging intent first."""
    outcome = Outcome()
    try:
        for start in range(0, len(removals), _INTENT_BATCH):
            planned: list[tuple[Removal, dict[str, Any]]] = []
            reserved: set[str] = set()
            for removal in removals[start : start + _INTENT_BATCH]:
                if not os.path.lexists(root / removal.rel):
                    continue  # gone since the scan: nothing to move
                reason = _why_not(root, removal) or unsafe_reason(quarantine, removal.rel)
                if reason is not None:
                    outcome.refuse(removal.rel, reason)
                    continue
                to_rel = _free_rel(quarantine, root / removal.rel, removal.rel, reserved)
                reserved.add(to_rel)
                intent = _intent(log, root, quarantine, removal, to_rel)
                log.write(intent)
                planned.append((removal, intent))
            log.sync()  # every intent is on disk before its file moves
            for removal, intent in planned:
                _move_one(root, quarantine, removal, intent, log, outcome)
            log.sync()
    except MoveLogError as exc:
        # A file moves only after its intent is synced, so each one is in the folder or, logged, in the
        # quarantine; a move whose "moved" line did not fit is finished by the next run's recovery.
        raise ActionStopped(
            f"{exc}; {len(outcome.done)} file(s) were moved before it and no file was lost: free space"
            " there (or pass --to another folder) and run again to finish",
            outcome,
        ) from None
    return outcome


def _move_one(
    root: Path, quarantine: Path, removal: Removal, intent: dict[str, Any], log: MoveLog, outcome: Outcome
) -> None:
    source = root / removal.rel
    try:
        target = move_file(source, quarantine / intent["to_rel"])
    except OSError as exc:
        with contextlib.suppress(MoveLogError):  # on a full disk the intent stays open: the next run
            log.write({"event": "not-moved", "id": intent["id"], "reason": printable(exc)})  # sees
            log.sync()  # the file still in the folder and resolves it the same way
        raise ActionStopped(
            f"could not move {printable(source)} to {printable(quarantine)} ({printable(exc)});"
            f" {len(outcome.done)} file(s) were moved and logged in {printable(log.path)}; fix the cause"
            " and run again",
            outcome,
        ) from None
    outcome.done.append(removal)  # moved, whether or not its line fits on the disk (recovery logs it)
    outcome.moved_to[removal.rel] = str(target)
    log.write(_moved(intent))


def finish_interrupted_moves(root: Path, quarantine: Path, log: MoveLog) -> Outcome:
    """Resolve intents a kill left open: a file found in the quarantine (and gone from ``root``) is
    logged as moved; a file still in ``root`` stays there (the scan decides again). Only intents of this
    ``root`` are touched, and only through safe paths."""
    outcome = Outcome()
    foreign = 0
    try:
        for intent in log.open_intents():
            if intent.get("root") != str(root):
                foreign += 1
                continue
            _resolve(root, quarantine, intent, log, outcome)
        log.sync()
    except MoveLogError as exc:  # nothing moves while resolving: the files stay where they are found
        raise ActionStopped(
            f"{exc}; free space there (or pass --to another folder) and run again", outcome
        ) from None
    if foreign:
        outcome.warnings.append(
            f"{foreign} interrupted move(s) in {printable(log.path)} belong to another folder; run"
            " `diffkit dedupe FOLDER --action move` on it with the same --to to finish them"
        )
    if outcome.done:
        outcome.warnings.append(
            f"finished {len(outcome.done)} move(s) that an interrupted run had started (logged in"
            f" {printable(log.path)})"
        )
    return outcome


def _resolve(root: Path, quarantine: Path, intent: dict[str, Any], log: MoveLog, outcome: Outcome) -> None:
    rel, to_rel = intent.get("rel"), intent.get("to_rel")
    keeper = intent.get("keeper_rel")
    if not all(isinstance(v, str) for v in (rel, to_rel, keeper)):
        log.write({"event": "not-moved", "id": intent.get("id"), "reason": "damaged log line; left alone"})
        return
    reason = unsafe_reason(root, rel) or unsafe_reason(quarantine, to_rel)
    if reason is not None:
        outcome.refuse(rel, f"interrupted move left alone: {reason}")
        log.write({"event": "not-moved", "id": intent["id"], "reason": f"unsafe path: {reason}"})
        return
    source, target = root / rel, quarantine / to_rel
    _remove_copy_temp(quarantine, to_rel)
    there, here = is_real_file(target), is_real_file(source)
    if there and (not os.path.lexists(source) or (here and _same_bytes(source, target))):
        if here:
            source.unlink()  # a copy across filesystems finished but the source was not yet unlinked
        log.write(_moved(intent))
        outcome.done.append(Removal(rel, keeper, int(intent.get("distance", 0))))
        outcome.moved_to[rel] = str(target)
        return
    why = (
        "interrupted before the move; the file stayed in the folder"
        if here and not os.path.lexists(target)
        else "found in neither or both places; nothing was touched"
    )
    if why.startswith("found"):
        outcome.refuse(rel, f"interrupted move: {why} ({printable(target)})")
    log.write({"event": "not-moved", "id": intent["id"], "reason": why})


def _remove_copy_temp(quarantine: Path, to_rel: str) -> None:
    head, _, name = to_rel.rpartition("/")
    temp_rel = f"{head}/.{name}{TMP_SUFFIX}" if head else f".{name}{TMP_SUFFIX}"
    if unsafe_reason(quarantine, temp_rel) is None and is_real_file(quarantine / temp_rel):
        (quarantine / temp_rel).unlink()


def delete_duplicates(root: Path, removals: list[Removal]) -> Outcome:
    outcome = Outcome()
    for removal in removals:
        path = root / removal.rel
        if not os.path.lexists(path):
            continue  # gone since the scan
        reason = _why_not(root, removal)
        if reason is not None:
            outcome.refuse(removal.rel, reason)
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ActionStopped(
                f"could not delete {printable(path)} ({printable(exc)}); {len(outcome.done)} file(s) were"
                " deleted; fix the cause and run again",
                outcome,
            ) from None
        outcome.done.append(removal)
    return outcome


# -- the scrape manifest ------------------------------------------------------------------------------


def manifest_fetch_times(root: Path) -> dict[str, str]:
    """``file_name -> fetched_at`` from a scrape manifest in ``root``; empty for a plain folder."""
    return fetch_times(root)


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _moved_to(outcome: Outcome, rel: str) -> str | None:
    target = outcome.moved_to.get(rel)
    return None if target is None else printable(target)


def update_manifest(root: Path, outcome: Outcome, action: str) -> int:
    """Move the rows of removed files from ``images`` to ``dedupe_removed`` (one transaction) and
    rewrite ``metadata.jsonl``. Returns the number of rows moved; 0 for a plain folder.

    Only rows of files this run removed are touched, matched by their relative path, which passed the
    safe-path check before the file was moved or deleted. Names that are not UTF-8 cannot be in a scrape
    manifest (its names are hex digests), so they are not looked up."""
    path = root / MANIFEST_NAME
    done = [r for r in outcome.done if _utf8(r.rel) and unsafe_reason(root, r.rel) is None]
    if not os.path.lexists(path) or not done:
        return 0
    reason = unsafe_manifest_files(root)
    if reason is not None:
        outcome.warnings.append(
            f"scrape manifest {printable(path)} not updated ({printable(reason)}; never written through a"
            " symlink)"
        )
        return 0
    if not is_real_file(path):
        return 0
    removed = [
        RemovedFile(
            file_name=removal.rel,
            action=action,
            moved_to=_moved_to(outcome, removal.rel) if action == "move" else None,
            keeper_file_name=printable(removal.keeper),
            distance=removal.distance,
        )
        for removal in done
    ]
    try:
        changed = record_removals(root, removed)
    except sqlite3.Error as exc:
        raise DiffkitError(
            f"files were {action}d but {printable(path)} could not be updated ({exc}); run `diffkit scrape`"
            " on the folder to reconcile it"
        ) from None
    if changed:
        try:
            rewrite_metadata(root)
        except (OSError, sqlite3.Error) as exc:
            raise DiffkitError(
                f"{printable(path)} was updated but {printable(root / METADATA_NAME)} could not be rewritten"
                f" ({printable(exc)}); run `diffkit scrape` on the folder to rewrite it"
            ) from None
    return changed
