"""What happens to the duplicates: nothing (report), moved to a quarantine folder, or deleted.

Moves keep each file's path relative to the scanned folder, so ``QUARANTINE/a/b.jpg`` came from
``DIR/a/b.jpg``, and every move is logged to ``QUARANTINE/.diffkit-moves.jsonl`` (one JSON line per file,
enough to undo). When the folder is a ``diffkit scrape`` output (``manifest.sqlite``), the removed rows
go from table ``images`` to table ``dedupe_removed`` and ``metadata.jsonl`` is rewritten, so the manifest
lists exactly the files on disk. Files move first, the manifest changes after: a kill in between leaves
rows without files, which ``diffkit scrape`` reconciles on its next start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from diffkit.atomic import TMP_SUFFIX, fsync_dir
from diffkit.dedupe.config import MANIFEST_NAME, MOVE_LOG_NAME
from diffkit.errors import DiffkitError

__all__ = ["MOVE_LOG_NAME", "Removal", "delete_duplicates", "move_duplicates", "update_manifest"]


@dataclass(frozen=True)
class Removal:
    """One non-keeper: its path relative to the scanned folder, and why it goes."""

    rel: str
    keeper: str
    distance: int


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _free_destination(path: Path) -> Path:
    """``path``, or ``name-dup1.ext``... when a different file already sits there."""
    candidate, counter = path, 0
    while candidate.exists():
        counter += 1
        candidate = path.with_name(f"{path.stem}-dup{counter}{path.suffix}")
    return candidate


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


def move_file(source: Path, destination: Path) -> Path:
    """Move one file without a window where it exists nowhere; returns where it ended up.

    Same filesystem: one ``rename``. Across filesystems: copy to a temp file beside the destination,
    fsync, rename into place, then unlink the source (a kill leaves at worst a second copy).
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        if _same_bytes(source, destination):  # an earlier interrupted move already put it there
            source.unlink()
            return destination
        destination = _free_destination(destination)
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        temp = destination.with_name(f".{destination.name}{TMP_SUFFIX}")
        try:
            with source.open("rb") as src, temp.open("wb") as dst:
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


def move_duplicates(root: Path, quarantine: Path, removals: list[Removal]) -> list[str]:
    """Move every non-keeper into ``quarantine`` under its relative path; returns the rel paths moved."""
    moved: list[str] = []
    if not removals:
        return moved
    try:
        quarantine.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiffkitError(
            f"cannot create quarantine folder {quarantine} ({exc}); pass --to a writable folder"
        ) from None
    with (quarantine / MOVE_LOG_NAME).open("a", encoding="utf-8") as log:
        for removal in removals:
            source = root / removal.rel
            if not source.exists():
                continue  # gone since the scan: nothing to move
            try:
                target = move_file(source, quarantine / removal.rel)
            except OSError as exc:
                raise DiffkitError(
                    f"could not move {source} to {quarantine} ({exc}); {len(moved)} file(s) were moved and"
                    f" logged in {quarantine / MOVE_LOG_NAME}; fix the cause and run again"
                ) from None
            moved.append(removal.rel)
            log.write(json.dumps({
                "from": str(source), "to": str(target), "keeper": str(root / removal.keeper),
                "distance": removal.distance, "moved_at": _now(),
            }) + "\n")
            log.flush()
        os.fsync(log.fileno())
    return moved


def delete_duplicates(root: Path, removals: list[Removal]) -> list[str]:
    deleted: list[str] = []
    for removal in removals:
        path = root / removal.rel
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DiffkitError(
                f"could not delete {path} ({exc}); {len(deleted)} file(s) were deleted;"
                " fix the cause and run again"
            ) from None
        deleted.append(removal.rel)
    return deleted


# -- the scrape manifest ------------------------------------------------------------------------------

_REMOVED_TABLE = """
CREATE TABLE IF NOT EXISTS dedupe_removed (
    sha256 TEXT PRIMARY KEY,
    file_name TEXT NOT NULL,
    phash INTEGER,
    width INTEGER,
    height INTEGER,
    bytes INTEGER,
    url TEXT,
    fetched_at TEXT,
    action TEXT NOT NULL,            -- move | delete
    moved_to TEXT,                   -- path of the quarantined file (move only)
    keeper_file_name TEXT NOT NULL,
    distance INTEGER NOT NULL,
    removed_at TEXT NOT NULL
)
"""


def manifest_fetch_times(root: Path) -> dict[str, str]:
    """``file_name -> fetched_at`` from a scrape manifest in ``root``; empty for a plain folder."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return dict(db.execute("SELECT file_name, fetched_at FROM images").fetchall())
    except sqlite3.Error:
        return {}  # not a diffkit manifest (or damaged): fall back to file times


def update_manifest(root: Path, removals: list[Removal], done: list[str], action: str,
                    quarantine: Path | None) -> int:
    """Move the rows of removed files from ``images`` to ``dedupe_removed`` (one transaction) and
    rewrite ``metadata.jsonl``. Returns the number of rows moved; 0 for a plain folder."""
    path = root / MANIFEST_NAME
    if not path.is_file() or not done:
        return 0
    by_rel = {r.rel: r for r in removals}
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "images" not in tables:
                return 0
            changed = 0
            with db:
                db.execute(_REMOVED_TABLE)
                now = _now()
                for rel in done:
                    removal = by_rel[rel]
                    moved_to = str(quarantine / rel) if action == "move" and quarantine is not None else None
                    cursor = db.execute(
                        "INSERT OR REPLACE INTO dedupe_removed SELECT sha256, file_name, phash, width,"
                        " height, bytes, url, fetched_at, ?, ?, ?, ?, ? FROM images WHERE file_name = ?",
                        (action, moved_to, removal.keeper, removal.distance, now, rel),
                    )
                    if cursor.rowcount:
                        db.execute("DELETE FROM images WHERE file_name = ?", (rel,))
                        changed += 1
    except sqlite3.Error as exc:
        raise DiffkitError(
            f"files were {action}d but {path} could not be updated ({exc}); run `diffkit scrape` on the"
            " folder to reconcile it"
        ) from None
    if changed:
        _rewrite_metadata(root)
    return changed


def _rewrite_metadata(root: Path) -> None:
    # The scrape store owns the metadata.jsonl format; reuse it rather than duplicate it.
    from diffkit.scrape.storage import METADATA_NAME, Store

    if not (root / METADATA_NAME).exists():
        return
    store = Store(root)
    try:
        store.write_metadata()
    finally:
        store.close()
