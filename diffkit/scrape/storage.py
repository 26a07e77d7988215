"""Where kept images live: content-addressed files, a SQLite manifest, and ``metadata.jsonl``.

Order of writes for one image: the file (temp, fsync, rename), then its manifest row (one commit).
So after a ``kill -9`` at any moment the only possible disagreements are a stray temp file or a
complete file without a row; :meth:`Store.reconcile` fixes both on the next start. The manifest is
the source of truth; ``metadata.jsonl`` is derived from it and rewritten atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffkit.atomic import TMP_SUFFIX, atomic_write_bytes, atomic_write_text
from diffkit.errors import DiffkitError
from diffkit.scrape.validate import (
    HASH_DECODE,
    Rejection,
    ValidImage,
    decode_image,
    to_signed64,
    to_unsigned64,
)

SCHEMA_VERSION = "1"
IMAGES_DIR = "images"
MANIFEST_NAME = "manifest.sqlite"
METADATA_NAME = "metadata.jsonl"
_FILE_PATTERN = re.compile(r"^([0-9a-f]{64})\.(jpg|png|webp)$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL UNIQUE,
    file_name TEXT NOT NULL,
    phash INTEGER NOT NULL,          -- 64-bit pHash, two's complement (SQLite integers are signed)
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    url TEXT,                        -- NULL for files adopted by reconcile
    fetched_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counts (reason TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def relative_file_name(sha256: str, extension: str) -> str:
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256}.{extension}"


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


class KeptIndex:
    """Everything kept so far, for inline de-duplication: sha256 set and a growing uint64 pHash array."""

    def __init__(self) -> None:
        self.sha256: set[str] = set()
        self._hashes = np.zeros(1024, dtype=np.uint64)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, sha256: str, phash: int) -> None:
        if self._count == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
        self._hashes[self._count] = np.uint64(phash)
        self._count += 1
        self.sha256.add(sha256)

    def nearest_distance(self, phash: int) -> int | None:
        """Smallest Hamming distance from ``phash`` to any kept hash (None when nothing is kept)."""
        if self._count == 0:
            return None
        xor = np.bitwise_xor(self._hashes[: self._count], np.uint64(phash))
        return int(np.bitwise_count(xor).min())


@dataclass
class ReconcileReport:
    temp_files_removed: int = 0
    files_adopted: int = 0
    files_removed: int = 0  # files without a row that failed verification (or duplicated a kept image)
    rows_dropped: int = 0  # rows whose file was missing or had the wrong size
    unknown_files: list[str] = field(default_factory=list)  # not named by diffkit: left alone

    @property
    def changed(self) -> bool:
        return bool(self.temp_files_removed or self.files_adopted or self.files_removed or self.rows_dropped)

    def describe(self) -> str:
        if not self.changed and not self.unknown_files:
            return "disk and manifest agree"
        counted = [
            (self.temp_files_removed, "removed {} temp file(s)"),
            (self.files_adopted, "adopted {} file(s) missing from the manifest"),
            (self.files_removed, "removed {} unverifiable file(s)"),
            (self.rows_dropped, "dropped {} manifest row(s) without a file"),
        ]
        parts = [text.format(count) for count, text in counted if count]
        if self.unknown_files:
            parts.append(f"left {len(self.unknown_files)} unknown file(s) under {IMAGES_DIR}/ alone")
        return ", ".join(parts)


class Store:
    """An output folder: ``images/``, ``manifest.sqlite`` (WAL) and ``metadata.jsonl``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.images_dir = self.root / IMAGES_DIR
        self.metadata_path = self.root / METADATA_NAME
        self.manifest_path = self.root / MANIFEST_NAME
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.manifest_path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise DiffkitError(f"cannot use {self.root} as the output folder: {exc}") from None
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a process crash loses nothing; a power cut may lose the last rows,
        # whose files reconcile then adopts.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._check_meta()
        self.index = KeptIndex()

    def _check_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("hash_decode", HASH_DECODE) != HASH_DECODE:
            raise DiffkitError(
                f"{self.manifest_path} holds pHashes computed with {meta['hash_decode']!r}, this diffkit "
                f"uses {HASH_DECODE!r}; scrape into a new --out folder"
            )
        with self._db:
            self._db.executemany(
                "INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)",
                [("schema_version", SCHEMA_VERSION), ("hash_decode", HASH_DECODE)],
            )

    def close(self) -> None:
        self._db.close()

    # -- queries ---------------------------------------------------------------------------------
    def kept_count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT reason, count FROM counts ORDER BY reason").fetchall())

    def rows(self) -> list[dict[str, object]]:
        cursor = self._db.execute(
            "SELECT sha256, file_name, phash, width, height, bytes, url, fetched_at FROM images ORDER BY id"
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def load_index(self) -> None:
        """Kept images, plus those ``diffkit dedupe`` removed as duplicates: never fetch them again."""
        self.index = KeptIndex()
        for sha256, phash in self._db.execute("SELECT sha256, phash FROM images ORDER BY id"):
            self.index.add(sha256, to_unsigned64(phash))
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "dedupe_removed" in tables:
            removed = self._db.execute("SELECT sha256, phash FROM dedupe_removed WHERE phash IS NOT NULL")
            for sha256, phash in removed.fetchall():
                self.index.add(sha256, to_unsigned64(phash))

    # -- writes ----------------------------------------------------------------------------------
    def add(self, image: ValidImage, url: str | None, fetched_at: str | None = None) -> str:
        """Write the file atomically, then commit its row. Returns the relative file name."""
        file_name = relative_file_name(image.sha256, image.extension)
        atomic_write_bytes(self.root / file_name, image.data)
        self._insert(image, file_name, url, fetched_at or utc_now())
        return file_name

    def _insert(self, image: ValidImage, file_name: str, url: str | None, fetched_at: str) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO images(sha256, file_name, phash, width, height, bytes, url, fetched_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (image.sha256, file_name, to_signed64(image.phash), image.width, image.height,
                 len(image.data), url, fetched_at),
            )
        self.index.add(image.sha256, image.phash)

    def count(self, reason: str, amount: int = 1) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO counts(reason, count) VALUES (?, ?)"
                " ON CONFLICT(reason) DO UPDATE SET count = count + excluded.count",
                (reason, amount),
            )

    def write_metadata(self) -> None:
        """Rewrite ``metadata.jsonl`` (Hugging Face imagefolder convention) from the manifest."""
        lines = []
        for row in self.rows():
            row["phash"] = f"{to_unsigned64(int(row['phash'])):016x}"  # hex: JSON readers choke on uint64
            lines.append(json.dumps(row, sort_keys=False))
        atomic_write_text(self.metadata_path, "".join(line + "\n" for line in lines))

    # -- reconcile -------------------------------------------------------------------------------
    def reconcile(self, max_pixels: int, near_dup_threshold: int) -> ReconcileReport:
        """Make disk and manifest agree after a crash; then load the dedupe index."""
        report = ReconcileReport()
        for temp in [*self.images_dir.rglob(f"*{TMP_SUFFIX}"), *self.root.glob(f".*{TMP_SUFFIX}")]:
            temp.unlink(missing_ok=True)
            report.temp_files_removed += 1
        known: set[str] = set()
        rows = self._db.execute("SELECT sha256, file_name, bytes FROM images").fetchall()
        for sha256, file_name, size in rows:
            path = self.root / file_name
            if path.is_file() and path.stat().st_size == size:
                known.add(file_name)
                continue
            with self._db:
                self._db.execute("DELETE FROM images WHERE sha256 = ?", (sha256,))
            path.unlink(missing_ok=True)
            report.rows_dropped += 1
        self.load_index()
        orphans = [
            path for path in self.images_dir.glob("*/*")
            if path.is_file() and path.relative_to(self.root).as_posix() not in known
        ]
        for path in sorted(orphans, key=lambda p: p.stat().st_mtime):
            self._adopt_or_remove(path, max_pixels, near_dup_threshold, report)
        return report

    def _adopt_or_remove(self, path: Path, max_pixels: int, threshold: int, report: ReconcileReport) -> None:
        match = _FILE_PATTERN.match(path.name)
        if match is None or path.parent.name != match.group(1)[:2]:
            report.unknown_files.append(path.relative_to(self.root).as_posix())
            return
        data = path.read_bytes()
        checked = decode_image(data, max_pixels, None)
        good = (
            isinstance(checked, ValidImage)
            and hashlib.sha256(data).hexdigest() == match.group(1)
            and checked.extension == match.group(2)
            and checked.sha256 not in self.index.sha256
        )
        if good and not isinstance(checked, Rejection):
            distance = self.index.nearest_distance(checked.phash)
            if distance is None or distance > threshold:
                fetched_at = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
                    timespec="milliseconds"
                )
                self._insert(checked, path.relative_to(self.root).as_posix(), None, fetched_at)
                report.files_adopted += 1
                return
        path.unlink()
        report.files_removed += 1
