"""The dataset folder's records: file names, the SQLite manifest (schema and every query), ``metadata.jsonl``.

A ``diffkit scrape`` output folder holds ``images/<sha[:2]>/<sha256>.<ext>``, ``manifest.sqlite`` (WAL)
and ``metadata.jsonl`` (Hugging Face imagefolder convention, derived from the manifest and rewritten
atomically). Tables: ``images`` (one row per kept file), ``counts`` (rejections by reason), ``meta``
(schema version, the pHash decode path, the endpoint the images come from, redacted) and, created by the
first ``diffkit dedupe`` that removes one of its files, ``dedupe_removed`` (the rows of removed files,
with action, destination and keeper). Scrape reads ``dedupe_removed`` so it never fetches a removed
duplicate again. ``scrape --urls`` adds ``url_status`` (the outcome of each listed URL, and the list's
other columns, which ``metadata.jsonl`` carries for each image).

A manifest whose pHashes come from an older decode path (meta ``hash_decode``; see
:mod:`diffkit.dataset.phash`) is migrated when scrape opens it, never refused: every row is marked in
``stale_phash`` and meta names the new path in one commit, then each file still there with its sha256 is
hashed again on the new path, in batches that commit the new pHash and thumbnail and clear the mark
(a kill resumes where it stopped). A row whose file is gone (a duplicate that dedupe deleted) keeps its
old value and its mark; :meth:`Manifest.known_hashes` tells scrape which values those are.

This module runs SQL and raises SQLite's and the OS's own errors; the commands decide what a failure
means to the user (scrape: :func:`diffkit.scrape.storage.storage_error`). It never follows a symlink to
write: callers check :func:`unsafe_manifest_files` first.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from diffkit.atomic import atomic_write_text
from diffkit.console import Bar
from diffkit.dataset.phash import check_decode, to_signed64, to_unsigned64
from diffkit.dataset.redact import redact
from diffkit.dataset.rehash import rehash_files
from diffkit.errors import DiffkitError
from diffkit.safepath import unsafe_reason

__all__ = [
    "FILE_PATTERN",
    "IMAGES_DIR",
    "MANIFEST_NAME",
    "METADATA_NAME",
    "SCHEMA_VERSION",
    "URL_DONE_STATUSES",
    "Manifest",
    "RecordedHash",
    "RemovedFile",
    "check_manifest_header",
    "damaged_manifest",
    "fetch_times",
    "record_removals",
    "recorded_hashes",
    "relative_file_name",
    "rewrite_metadata",
    "row_problem",
    "unsafe_manifest_files",
    "utc_now",
]

SCHEMA_VERSION = "1"
IMAGES_DIR = "images"
MANIFEST_NAME = "manifest.sqlite"
METADATA_NAME = "metadata.jsonl"
FILE_PATTERN = re.compile(r"^([0-9a-f]{64})\.(jpg|png|webp)$")
_SQLITE_MAGIC = b"SQLite format 3\x00"
_JOURNALS = ("-wal", "-shm", "-journal")

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
-- What diffkit dedupe needs of a kept image, from the decode scrape made anyway (validation): dedupe of a
-- fresh scrape folder decodes nothing. Manifests from before this table get it on their next scrape; their
-- older images have no row and dedupe hashes them itself.
CREATE TABLE IF NOT EXISTS image_hashes (
    sha256 TEXT PRIMARY KEY,         -- images.sha256: the content these values describe
    hash_decode TEXT NOT NULL,       -- decode path of phash and thumb (diffkit.dataset.phash)
    phash INTEGER NOT NULL,          -- two's complement, as images.phash
    thumb BLOB NOT NULL,             -- 16 x 16 YCbCr thumbnail (diffkit.dataset.verify)
    size INTEGER NOT NULL,           -- the file as written: a file whose size, mtime or sha256
    mtime_ns INTEGER NOT NULL        -- differs since is never trusted (dedupe checks all three)
);
"""

# Created only when dedupe first removes a file: opening an existing manifest (a rerun on a full or
# read-only disk) must not need a write.
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
_ROW_COLUMNS = "sha256, file_name, phash, width, height, bytes, url, fetched_at"

# ``scrape --urls``: the outcome of every listed URL, so that a rerun skips those already done. Created
# by the first list scrape of a folder (the migration of older manifests: they simply lack it).
_URL_STATUS_TABLE = """
CREATE TABLE IF NOT EXISTS url_status (
    url TEXT PRIMARY KEY,            -- as listed, credentials redacted
    status TEXT NOT NULL,            -- kept | duplicate | rejected (all done for good) | failed (retried)
    reason TEXT NOT NULL,            -- kept, duplicate_exact, http_404, timeout...
    sha256 TEXT,                     -- the image it gave (kept and duplicate)
    extra TEXT,                      -- the list's other columns for this URL (JSON object), or NULL
    updated_at TEXT NOT NULL
)
"""
# A URL with one of these statuses is not fetched again; "failed" (transient faults after every retry) is.
URL_DONE_STATUSES = ("kept", "duplicate", "rejected")

# Rows (of images or dedupe_removed) whose stored pHash came from an older decode path than meta
# ``hash_decode``. Created by the first open on a newer path; a row leaves when its file is hashed again.
_STALE_TABLE = """
CREATE TABLE IF NOT EXISTS stale_phash (
    sha256 TEXT PRIMARY KEY,         -- images.sha256 or dedupe_removed.sha256
    hash_decode TEXT NOT NULL        -- the path its stored phash (and image_hashes row) came from
)
"""


def relative_file_name(sha256: str, extension: str) -> str:
    """Where an image with this content lives in the folder: ``images/<sha[:2]>/<sha>.<ext>``."""
    return f"{IMAGES_DIR}/{sha256[:2]}/{sha256}.{extension}"


def row_problem(root: Path, sha256: str, file_name: str) -> str | None:
    """Why a manifest row's file may not be touched: outside the folder, a symlink, not a diffkit name."""
    reason = unsafe_reason(root, file_name)
    if reason is not None:
        return reason
    match = FILE_PATTERN.match(Path(file_name).name)
    if match is None or file_name != relative_file_name(sha256, match.group(2)):
        return f"not the diffkit name of its image ({IMAGES_DIR}/xx/<sha256>.<ext>)"
    return None


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


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


def unsafe_manifest_files(root: Path) -> str | None:
    """Why the manifest, its journals or ``metadata.jsonl`` must not be written: a symlink on the way."""
    for name in (MANIFEST_NAME, *(MANIFEST_NAME + suffix for suffix in _JOURNALS), METADATA_NAME):
        reason = unsafe_reason(root, name)
        if reason is not None:
            return reason
    return None


class Manifest:
    """An open ``manifest.sqlite``: every query scrape runs on it. Autocommit; writes commit one by one."""

    def __init__(self, root: Path, db: sqlite3.Connection) -> None:
        self.root = Path(root)
        self.db = db
        self.hash_decode: str | None = None  # set by open(): the decode path of the recorded hashes
        self.migrated = 0  # rows whose pHash open() computed again on hash_decode (a migration)

    @classmethod
    def open(cls, root: Path, hash_decode: str, progress: bool | None = None) -> Manifest:
        """Open (or create) the manifest of ``root`` for writing, in WAL mode, with its schema.

        A manifest holding pHashes of another decode path is migrated to ``hash_decode`` here (see the
        module's docstring), with a progress bar when ``progress`` (default: stderr is a terminal).
        Raises ``sqlite3.Error`` for anything SQLite refuses (the connection is closed again then).
        """
        check_decode(hash_decode)
        db = sqlite3.connect(Path(root) / MANIFEST_NAME, isolation_level=None)
        manifest = cls(root, db)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a process crash loses nothing; a power cut may lose the last rows,
            # whose files reconcile then adopts.
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            manifest._check_meta(hash_decode)
            manifest.hash_decode = hash_decode
            if _has_table(db, "stale_phash"):
                manifest._migrate(hash_decode, sys.stderr.isatty() if progress is None else progress)
        except BaseException:
            manifest.close()
            raise
        return manifest

    @property
    def path(self) -> Path:
        return self.root / MANIFEST_NAME

    def _check_meta(self, hash_decode: str) -> None:
        meta = dict(self.db.execute("SELECT key, value FROM meta").fetchall())
        old = meta.get("hash_decode", hash_decode)
        if old != hash_decode:  # one commit: every stored value is marked old, then meta names the new path
            with self.db:
                self.db.execute("BEGIN")  # autocommit connection: the marks and meta commit together
                self.db.execute(_STALE_TABLE)
                tables = ["images"] + (["dedupe_removed"] if _has_table(self.db, "dedupe_removed") else [])
                for table in tables:  # a mark from an earlier migration keeps the path it names
                    self.db.execute(
                        f"INSERT OR IGNORE INTO stale_phash SELECT sha256, ? FROM {table}"
                        " WHERE phash IS NOT NULL",
                        (old,),
                    )
                self.db.execute("UPDATE meta SET value = ? WHERE key = 'hash_decode'", (hash_decode,))
            meta["hash_decode"] = hash_decode
        missing = {"schema_version": SCHEMA_VERSION, "hash_decode": hash_decode}.items() - meta.items()
        if missing:  # a rerun on a full or read-only disk must not need a write here
            with self.db:
                self.db.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", sorted(missing))

    def _stale_files(self) -> list[tuple[str, Path]]:
        """``(sha256, path)`` of every marked row whose content may still be on disk: a kept image's file
        (a safe diffkit name in the folder), a moved duplicate's file in its quarantine. Marks naming no
        row any more are dropped (written only when there are some: a rerun on a read-only disk with marks
        left for good, duplicates whose files dedupe deleted, must not need a write)."""
        orphans = "FROM stale_phash WHERE sha256 NOT IN (SELECT sha256 FROM images)" + (
            " AND sha256 NOT IN (SELECT sha256 FROM dedupe_removed)" if self._has_removed() else ""
        )
        if self.db.execute(f"SELECT 1 {orphans} LIMIT 1").fetchone() is not None:
            with self.db:
                self.db.execute(f"DELETE {orphans}")
        files = [
            (str(sha), self.root / str(name))
            for sha, name in self.db.execute(
                "SELECT i.sha256, i.file_name FROM images AS i JOIN stale_phash AS s USING (sha256)"
                " ORDER BY i.id"
            )
            if row_problem(self.root, str(sha), str(name)) is None
        ]
        if self._has_removed():
            moved = self.db.execute(
                "SELECT r.sha256, r.moved_to FROM dedupe_removed AS r JOIN stale_phash AS s USING (sha256)"
                " WHERE r.moved_to IS NOT NULL ORDER BY r.sha256"
            )
            files.extend((str(sha), Path(str(to))) for sha, to in moved)
        return files

    def _migrate(self, hash_decode: str, progress: bool) -> None:
        """Hash every marked row's file again on ``hash_decode`` (sha256 checked first); each batch commits
        the new values and clears their marks, so a kill loses at most one batch."""
        files = self._stale_files()
        if not files:
            return
        has_removed = self._has_removed()
        with Bar(f"pHashes to {hash_decode}", len(files), progress) as bar:
            for _, done in rehash_files(files, hash_decode, lambda n: bar.update(advance=n)):
                if not done:  # files gone or changed: their rows keep the old values, nothing to write
                    continue
                with self.db:
                    self.db.execute("BEGIN")  # one commit per batch: a kill loses at most this batch
                    for item in done:
                        value = to_signed64(item.phash)
                        self.db.execute("UPDATE images SET phash = ? WHERE sha256 = ?", (value, item.sha256))
                        if has_removed:
                            self.db.execute(
                                "UPDATE dedupe_removed SET phash = ? WHERE sha256 = ?", (value, item.sha256)
                            )
                        if self.has_image(item.sha256):  # dedupe's record (a removed row has none)
                            self.db.execute(
                                "INSERT OR REPLACE INTO image_hashes VALUES (?, ?, ?, ?, ?, ?)",
                                (item.sha256, hash_decode, value, item.thumb, item.size, item.mtime_ns),
                            )
                        self.db.execute("DELETE FROM stale_phash WHERE sha256 = ?", (item.sha256,))
                self.migrated += len(done)

    def _has_removed(self) -> bool:
        return _has_table(self.db, "dedupe_removed")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # a full disk may refuse the closing checkpoint: harmless
            self.db.close()

    # -- queries ---------------------------------------------------------------------------------
    def kept_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM images").fetchone()[0])

    def counts(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT reason, count FROM counts ORDER BY reason").fetchall())

    def rows(self) -> list[dict[str, object]]:
        """Every kept image's row, in the order they were kept (``phash`` unsigned)."""
        cursor = self.db.execute(f"SELECT {_ROW_COLUMNS} FROM images ORDER BY id")
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            row["phash"] = to_unsigned64(int(row["phash"]))  # type: ignore[call-overload]
        return rows

    def file_rows(self) -> list[tuple[str, str, int]]:
        """``(sha256, file_name, bytes)`` of every kept image, for checking them against the disk."""
        return [
            (str(s), str(f), int(b))
            for s, f, b in self.db.execute("SELECT sha256, file_name, bytes FROM images")
        ]

    def endpoint(self) -> str | None:
        """The (redacted) URL this folder is scraped from: as recorded after a probe, else the URL of the
        latest kept image (folders from before the record), else None."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'endpoint'").fetchone()
        if row is None:
            row = self.db.execute(
                "SELECT url FROM images WHERE url IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
        return None if row is None else str(row[0])

    def has_image(self, sha256: str) -> bool:
        return self.db.execute("SELECT 1 FROM images WHERE sha256 = ?", (sha256,)).fetchone() is not None

    def known_hashes(self, current_only: bool = False) -> list[tuple[str, int]]:
        """``(sha256, unsigned pHash)`` of every kept image, then of every image dedupe removed.

        With ``current_only``, only values on the manifest's decode path: a row whose old value could not
        be migrated (:meth:`stale_shas`; its file is gone) is left out, since a pHash is only comparable
        with one of the same path. Without it those rows come too, with their old values."""
        stale = set(self.stale_shas()) if current_only else set()
        known = [
            (str(s), to_unsigned64(p))
            for s, p in self.db.execute("SELECT sha256, phash FROM images ORDER BY id")
            if s not in stale
        ]
        if _has_table(self.db, "dedupe_removed"):
            removed = self.db.execute("SELECT sha256, phash FROM dedupe_removed WHERE phash IS NOT NULL")
            known.extend((str(s), to_unsigned64(p)) for s, p in removed.fetchall() if s not in stale)
        return known

    def stale_shas(self) -> list[str]:
        """sha256 of the rows whose pHash is still from an older decode path (not comparable with current
        values; their sha256 still names content that was kept or removed)."""
        if not _has_table(self.db, "stale_phash"):
            return []
        return [str(sha) for (sha,) in self.db.execute("SELECT sha256 FROM stale_phash ORDER BY sha256")]

    def url_statuses(self) -> dict[str, tuple[str, str | None]]:
        """``redacted url -> (status, sha256)`` of each URL a list scrape settled (empty before the first)."""
        if not _has_table(self.db, "url_status"):
            return {}
        rows = self.db.execute("SELECT url, status, sha256 FROM url_status").fetchall()
        return {str(url): (str(status), sha256) for url, status, sha256 in rows}

    def image_urls(self) -> dict[str, str]:
        """``redacted url -> sha256`` of the kept images (a crash may leave a row before its URL's status)."""
        rows = self.db.execute("SELECT url, sha256 FROM images WHERE url IS NOT NULL ORDER BY id")
        return {str(url): str(sha256) for url, sha256 in rows.fetchall()}

    # -- writes ----------------------------------------------------------------------------------
    def record_url(
        self, url: str, status: str, reason: str, sha256: str | None, extra: dict[str, str] | None
    ) -> None:
        """The outcome of one listed URL (credentials never stored), one commit; creates the table."""
        with self.db:
            self.db.execute(_URL_STATUS_TABLE)
            self.db.execute(
                "INSERT OR REPLACE INTO url_status(url, status, reason, sha256, extra, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    redact(url),
                    status,
                    reason,
                    sha256,
                    json.dumps(extra, ensure_ascii=False) if extra else None,
                    utc_now(),
                ),
            )

    def insert_image(
        self,
        sha256: str,
        file_name: str,
        phash: int,
        size: tuple[int, int],
        n_bytes: int,
        url: str | None,
        fetched_at: str,
        thumb: bytes | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        """One kept image (``phash`` unsigned; credentials in ``url`` are never stored), one commit.

        With ``thumb`` and the written file's ``mtime_ns`` (and a manifest opened with its decode path),
        the same commit records what ``diffkit dedupe`` needs of the image (table ``image_hashes``)."""
        with self.db:
            self.db.execute(
                "INSERT INTO images(sha256, file_name, phash, width, height, bytes, url, fetched_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    sha256,
                    file_name,
                    to_signed64(phash),
                    size[0],
                    size[1],
                    n_bytes,
                    None if url is None else redact(url),
                    fetched_at,
                ),
            )
            if thumb is not None and mtime_ns is not None and self.hash_decode is not None:
                self.db.execute(
                    "INSERT OR REPLACE INTO image_hashes VALUES (?, ?, ?, ?, ?, ?)",
                    (sha256, self.hash_decode, to_signed64(phash), thumb, n_bytes, mtime_ns),
                )

    def record_endpoint(self, url: str) -> None:
        """Remember the URL that answered the probe (credentials never stored), so that a resume does
        not have to probe again; written only when it changed (a rerun on a full disk needs no write)."""
        url = redact(url)
        if (
            self.db.execute("SELECT 1 FROM meta WHERE key = 'endpoint' AND value = ?", (url,)).fetchone()
            is None
        ):
            with self.db:
                self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('endpoint', ?)", (url,))

    def drop_image(self, sha256: str) -> None:
        with self.db:
            self.db.execute("DELETE FROM images WHERE sha256 = ?", (sha256,))
            self.db.execute("DELETE FROM image_hashes WHERE sha256 = ?", (sha256,))
            if _has_table(self.db, "stale_phash"):
                self.db.execute("DELETE FROM stale_phash WHERE sha256 = ?", (sha256,))

    def add_count(self, reason: str, amount: int = 1) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO counts(reason, count) VALUES (?, ?)"
                " ON CONFLICT(reason) DO UPDATE SET count = count + excluded.count",
                (reason, amount),
            )

    def write_metadata(self) -> None:
        """Rewrite ``metadata.jsonl`` (Hugging Face imagefolder convention) from the manifest, atomically."""
        lines = []
        extras = self._list_extras()
        for row in self.rows():
            row["phash"] = f"{row['phash']:016x}"  # hex: JSON readers choke on uint64
            if isinstance(row["url"], str):
                row["url"] = redact(row["url"])  # rows written by older diffkit versions
            # a URL list's other columns (caption...), after diffkit's own: a list column never hides one
            for name, value in extras.get(str(row["sha256"]), {}).items():
                row.setdefault(name, value)
            lines.append(json.dumps(row, sort_keys=False))
        atomic_write_text(self.root / METADATA_NAME, "".join(line + "\n" for line in lines))

    def _list_extras(self) -> dict[str, dict[str, str]]:
        """``sha256 -> the list's other columns`` of the images kept from a URL list."""
        if not _has_table(self.db, "url_status"):
            return {}
        rows = self.db.execute(
            "SELECT sha256, extra FROM url_status WHERE status = 'kept' AND extra IS NOT NULL"
        ).fetchall()
        return {str(sha256): json.loads(extra) for sha256, extra in rows if sha256}


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
    return found is not None


# -- read and changed by diffkit dedupe (any folder; only a scrape output has a manifest) ---------------


def fetch_times(root: Path) -> dict[str, str]:
    """``file_name -> fetched_at`` from the manifest in ``root``, read-only; empty for a plain folder or a
    file that is not a readable manifest."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            return dict(db.execute("SELECT file_name, fetched_at FROM images").fetchall())
    except sqlite3.Error:
        return {}  # not a diffkit manifest (or damaged): callers fall back to file times


@dataclass(frozen=True)
class RecordedHash:
    """What scrape recorded of a kept image for ``diffkit dedupe``, and the file it describes."""

    file_name: str
    sha256: str
    phash: int  # unsigned
    thumb: bytes
    width: int
    height: int
    size: int  # of the file as written, with its mtime: a stat that differs means the file changed
    mtime_ns: int


def recorded_hashes(root: Path, hash_decode: str) -> dict[str, RecordedHash]:
    """``file_name -> RecordedHash`` of the kept images whose values were recorded on ``hash_decode``,
    read-only; empty for a plain folder, a manifest from before ``image_hashes``, or one that is not a
    readable manifest. The caller still checks each file against size, mtime and sha256."""
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as db:
            if not _has_table(db, "image_hashes"):
                return {}
            rows = db.execute(
                "SELECT i.file_name, i.sha256, h.phash, h.thumb, i.width, i.height, h.size, h.mtime_ns"
                " FROM images AS i JOIN image_hashes AS h ON h.sha256 = i.sha256 WHERE h.hash_decode = ?",
                (hash_decode,),
            ).fetchall()
    except sqlite3.Error:
        return {}  # damaged or not diffkit's: dedupe hashes every file itself
    return {
        str(name): RecordedHash(
            str(name), str(sha), to_unsigned64(int(value)), bytes(thumb), int(w), int(h), int(size), int(mt)
        )
        for name, sha, value, thumb, w, h, size, mt in rows
    }


@dataclass(frozen=True)
class RemovedFile:
    """A kept image that dedupe removed: its ``file_name`` (as in the manifest) and why."""

    file_name: str
    action: str  # move | delete
    moved_to: str | None  # the quarantined path (move only)
    keeper_file_name: str
    distance: int


def record_removals(root: Path, removed: Iterable[RemovedFile]) -> int:
    """Move the rows of removed files from ``images`` to ``dedupe_removed`` in one transaction.

    Returns how many rows moved: 0 when the manifest has no ``images`` table (not a diffkit manifest) or
    names none of the files. Raises ``sqlite3.Error``. The caller checks :func:`unsafe_manifest_files`.
    """
    changed = 0
    with contextlib.closing(sqlite3.connect(Path(root) / MANIFEST_NAME, timeout=30)) as db:
        if not _has_table(db, "images"):
            return 0
        has_hashes = _has_table(db, "image_hashes")
        with db:
            db.execute(_REMOVED_TABLE)
            now = utc_now()
            for item in removed:
                cursor = db.execute(
                    f"INSERT OR REPLACE INTO dedupe_removed SELECT {_ROW_COLUMNS}, ?, ?, ?, ?, ?"
                    " FROM images WHERE file_name = ?",
                    (item.action, item.moved_to, item.keeper_file_name, item.distance, now, item.file_name),
                )
                if cursor.rowcount:
                    db.execute("DELETE FROM images WHERE file_name = ?", (item.file_name,))
                    if has_hashes:
                        db.execute(  # the removed file's recorded hash goes with its row
                            "DELETE FROM image_hashes WHERE sha256 IN"
                            " (SELECT sha256 FROM dedupe_removed WHERE file_name = ?)",
                            (item.file_name,),
                        )
                    changed += 1
    return changed


def rewrite_metadata(root: Path) -> bool:
    """Rewrite ``metadata.jsonl`` of ``root`` from its manifest when the folder has one (True if so).

    Raises ``sqlite3.Error`` or ``OSError``. The caller checks :func:`unsafe_manifest_files`.
    """
    if not (Path(root) / METADATA_NAME).exists():
        return False
    with contextlib.closing(sqlite3.connect(Path(root) / MANIFEST_NAME, timeout=30)) as db:
        Manifest(root, db).write_metadata()
    return True
