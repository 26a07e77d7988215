"""Where kept images live: content-addressed files, a SQLite manifest, and ``metadata.jsonl``.

Order of writes for one image: the file (temp, fsync, rename), then its manifest row (one commit).
So after a ``kill -9`` at any moment the only possible disagreements are a stray temp file or a
complete file without a row; :meth:`Store.reconcile` fixes both on the next start. The manifest is
the source of truth; ``metadata.jsonl`` is derived from it and rewritten atomically.

Nothing is written, moved or deleted outside ``--out`` or through a symlink: a manifest row naming
``/tmp/x`` or ``../x``, or a symlinked ``images/ab/``, is reported and its target left alone. A full
disk, a read-only folder or a damaged manifest is one :class:`DiffkitError`, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from diffkit.atomic import TMP_SUFFIX, atomic_write_bytes, atomic_write_text
from diffkit.console import printable
from diffkit.errors import DiffkitError
from diffkit.safepath import is_real_file, unsafe_reason
from diffkit.scrape.redact import redact
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
_SQLITE_MAGIC = b"SQLite format 3\x00"
# Set bits of every byte value: a popcount that works on numpy 1.x too (np.bitwise_count is 2.x only).
_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)

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
        bits = _POPCOUNT[xor.view(np.uint8)].reshape(self._count, 8).sum(axis=1, dtype=np.uint16)
        return int(bits.min())


def storage_error(root: Path, exc: OSError | sqlite3.Error) -> DiffkitError:
    """One line for a failed write: full disk, read-only folder, damaged manifest or the OS's reason."""
    if isinstance(exc, OSError):
        code, detail = exc.errno, exc.strerror or str(exc)
        full = code in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
        read_only = code == errno.EROFS
        damaged = False
    else:
        detail = str(exc)
        lowered = detail.lower()
        full = "full" in lowered
        read_only = "readonly" in lowered or "read-only" in lowered
        damaged = "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered
    if full:
        return DiffkitError(
            f"the disk holding {root} is full ({detail}); the images kept so far and the manifest are "
            "consistent: free some space, then rerun the same command to resume"
        )
    if read_only:
        return DiffkitError(f"{root} cannot be written ({detail}); scrape into a writable --out folder")
    if damaged:
        return damaged_manifest(root / MANIFEST_NAME, detail)
    return DiffkitError(f"cannot write to {root}: {detail}")


def damaged_manifest(path: Path, detail: str) -> DiffkitError:
    return DiffkitError(
        f"{path} is damaged or not a diffkit manifest ({detail}); move it aside (the images stay and are "
        "adopted on the next run) or scrape into a new --out folder"
    )


def check_manifest_header(root: Path) -> None:
    """Refuse a ``manifest.sqlite`` that is not SQLite at all, before anything in the folder is touched."""
    path = Path(root) / MANIFEST_NAME
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise DiffkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    if head and head != _SQLITE_MAGIC:
        raise damaged_manifest(path, "no SQLite header")


@dataclass
class ReconcileReport:
    temp_files_removed: int = 0
    files_adopted: int = 0
    files_removed: int = 0  # files without a row that failed verification (or duplicated a kept image)
    rows_dropped: int = 0  # rows whose file was missing or had the wrong size
    unknown_files: list[str] = field(default_factory=list)  # not named by diffkit: left alone
    # Rows naming a path outside images/ or through a symlink (dropped from the manifest, target left
    # alone) and symlinks met under images/ (never followed): "what: why".
    unsafe: list[str] = field(default_factory=list)
    unsafe_rows_dropped: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.temp_files_removed or self.files_adopted or self.files_removed or self.rows_dropped
                    or self.unsafe_rows_dropped)

    def describe(self) -> str:
        if not self.changed and not self.unknown_files and not self.unsafe:
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
        if self.unsafe:
            listed = "; ".join(self.unsafe[:3]) + ("; ..." if len(self.unsafe) > 3 else "")
            parts.append(
                f"left {len(self.unsafe)} path(s) outside the folder or through a symlink alone "
                f"({self.unsafe_rows_dropped} manifest row(s) dropped): {listed}"
            )
        return ", ".join(parts)


class Store:
    """An output folder: ``images/``, ``manifest.sqlite`` (WAL) and ``metadata.jsonl``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.images_dir = self.root / IMAGES_DIR
        self.metadata_path = self.root / METADATA_NAME
        self.manifest_path = self.root / MANIFEST_NAME
        for name in (IMAGES_DIR, MANIFEST_NAME, METADATA_NAME):
            reason = unsafe_reason(self.root, name)
            if reason is not None:
                raise DiffkitError(
                    f"{self.root / name}: {reason}; diffkit never writes through symlinks: "
                    "replace it with a real folder or file, or scrape into another --out folder"
                )
        check_manifest_header(self.root)
        self.index = KeptIndex()
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.manifest_path, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(self.root, exc) from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a process crash loses nothing; a power cut may lose the last rows,
            # whose files reconcile then adopts.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._check_meta()
        except (sqlite3.Error, DiffkitError) as exc:
            self.close()
            if isinstance(exc, DiffkitError):
                raise
            raise storage_error(self.root, exc) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed write (full disk, read-only folder, damaged manifest) into one clear line."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(self.root, exc) from None

    def _check_meta(self) -> None:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        if meta.get("hash_decode", HASH_DECODE) != HASH_DECODE:
            raise DiffkitError(
                f"{self.manifest_path} holds pHashes computed with {meta['hash_decode']!r}, this diffkit "
                f"uses {HASH_DECODE!r}; scrape into a new --out folder"
            )
        missing = {"schema_version": SCHEMA_VERSION, "hash_decode": HASH_DECODE}.items() - meta.items()
        if missing:  # a rerun on a full or read-only disk must not need a write here
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", sorted(missing))

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # a full disk may refuse the closing checkpoint: harmless
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
        """Write the file atomically, then commit its row. Returns the relative file name.

        A row never names a file that is not complete on disk: when the row cannot be committed (disk
        full), the file just written goes too, so disk and manifest still agree.
        """
        file_name = relative_file_name(image.sha256, image.extension)
        reason = unsafe_reason(self.root, file_name)
        if reason is not None:
            raise DiffkitError(
                f"refusing to write {file_name} in {self.root}: the path {reason} (diffkit never writes "
                "through symlinks); remove the symlink or scrape into another --out folder"
            )
        path = self.root / file_name
        with self._writing():
            atomic_write_bytes(path, image.data)
        try:
            with self._writing():
                self._insert(image, file_name, None if url is None else redact(url), fetched_at or utc_now())
        except DiffkitError:
            with contextlib.suppress(OSError, sqlite3.Error):
                if not self._db.execute("SELECT 1 FROM images WHERE sha256 = ?", (image.sha256,)).fetchone():
                    path.unlink()
            raise
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
        with self._writing(), self._db:
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
            if isinstance(row["url"], str):
                row["url"] = redact(row["url"])  # rows written by older diffkit versions
            lines.append(json.dumps(row, sort_keys=False))
        with self._writing():
            atomic_write_text(self.metadata_path, "".join(line + "\n" for line in lines))

    # -- reconcile -------------------------------------------------------------------------------
    def reconcile(self, max_pixels: int, near_dup_threshold: int) -> ReconcileReport:
        """Make disk and manifest agree after a crash; then load the dedupe index.

        Only real files inside ``images/`` (or the folder's own temp files) are ever deleted; symlinks
        are not followed, and rows naming anything else are dropped with their target left alone.
        """
        report = ReconcileReport()
        with self._writing():
            temps, files = self._scan(report)
            for temp in temps:
                temp.unlink(missing_ok=True)
                report.temp_files_removed += 1
            known = self._check_rows(report)
            self.load_index()
            orphans = [path for path in files if path.relative_to(self.root).as_posix() not in known]
            for path in sorted(orphans, key=lambda p: p.stat().st_mtime):
                self._adopt_or_remove(path, max_pixels, near_dup_threshold, report)
        return report

    def _scan(self, report: ReconcileReport) -> tuple[list[Path], list[Path]]:
        """Temp files and candidate image files, from real folders only (``images/<xx>/<file>``)."""
        temps = [path for path in self.root.glob(f".*{TMP_SUFFIX}") if is_real_file(path)]
        files: list[Path] = []
        for top in _entries(self.images_dir):
            if top.is_symlink():
                report.unsafe.append(f"{self._relative(top)}: symlink, not followed")
            elif top.is_dir(follow_symlinks=False):
                for entry in _entries(Path(top.path)):
                    if entry.is_symlink():
                        report.unsafe.append(f"{self._relative(entry)}: symlink, not followed")
                    elif entry.is_file(follow_symlinks=False):
                        (temps if entry.name.endswith(TMP_SUFFIX) else files).append(Path(entry.path))
            elif top.is_file(follow_symlinks=False) and top.name.endswith(TMP_SUFFIX):
                temps.append(Path(top.path))
        return temps, files

    def _relative(self, entry: os.DirEntry[str]) -> str:
        return printable(Path(entry.path).relative_to(self.root).as_posix())

    def _check_rows(self, report: ReconcileReport) -> set[str]:
        """Drop rows whose file is missing or wrong; rows naming unsafe paths are dropped, targets kept."""
        known: set[str] = set()
        rows = self._db.execute("SELECT sha256, file_name, bytes FROM images").fetchall()
        for sha256, file_name, size in rows:
            problem = _row_problem(self.root, str(sha256), str(file_name))
            path = self.root / str(file_name)
            if problem is None and is_real_file(path) and path.stat().st_size == size:
                known.add(str(file_name))
                continue
            with self._db:
                self._db.execute("DELETE FROM images WHERE sha256 = ?", (sha256,))
            if problem is not None:
                report.unsafe.append(f"manifest row {printable(file_name)!r}: {problem}")
                report.unsafe_rows_dropped += 1
                continue
            if is_real_file(path):  # a wrong-sized file of ours, in a real folder of ours
                path.unlink()
            report.rows_dropped += 1
        return known

    def _adopt_or_remove(self, path: Path, max_pixels: int, threshold: int, report: ReconcileReport) -> None:
        match = _FILE_PATTERN.match(path.name)
        if match is None or path.parent.name != match.group(1)[:2]:
            report.unknown_files.append(printable(path.relative_to(self.root).as_posix()))
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


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of a real folder (nothing when ``folder`` is a symlink or missing), by name."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    with os.scandir(folder) as scan:
        return sorted(scan, key=lambda entry: entry.name)


def _row_problem(root: Path, sha256: str, file_name: str) -> str | None:
    """Why a manifest row's file may not be touched: outside the folder, a symlink, not a diffkit name."""
    reason = unsafe_reason(root, file_name)
    if reason is not None:
        return reason
    match = _FILE_PATTERN.match(Path(file_name).name)
    if match is None or file_name != relative_file_name(sha256, match.group(2)):
        return f"not the diffkit name of its image ({IMAGES_DIR}/xx/<sha256>.<ext>)"
    return None
