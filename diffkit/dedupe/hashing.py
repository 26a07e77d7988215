"""Hashing a folder's images: content sha256, one 64-bit perceptual hash and a thumbnail per file.

Which files are images is the one lister's rule (:func:`diffkit.dataset.listing.scan_images`): symlinks
are listed as skipped, never hashed, kept, moved or deleted (a link kept as "the original" would leave
the real file deleted). Decoding for hashes and the pHash itself are the dataset's
(:mod:`diffkit.dataset.phash`: JPEGs decoded at libjpeg's smallest DCT scale that keeps >= 64 px, 8-bit
pixels), so a scrape manifest's pHash and dedupe's agree. The same decode yields the 16 x 16 colour
thumbnail of the second stage (:mod:`diffkit.dataset.verify`), so verifying costs no second decode. Files
are spread over all cores, and a SQLite cache in the folder keeps every hash and thumbnail keyed by
(path, size, mtime_ns, hash kind, decode path), so a rerun only hashes new or changed files. Rows of a
retired decode path (an earlier version's default) are never read: their files are hashed again, and
each new row replaces the file's old one, so a cache migrates as the folder is deduplicated.

A ``diffkit scrape`` folder needs no hashing at all: scrape records each kept image's pHash and thumbnail
from its own validation decode in the manifest (:func:`diffkit.dataset.manifest.recorded_hashes`), with
the file's size, mtime and sha256 as written. Those values are used only for a file whose size and
mtime are unchanged and that is provably the file scrape wrote: either its status has not changed
since (below), or its bytes still have the recorded sha256 (read and hashed here). A file replaced after
the scrape, even one of the same size with its mtime set back, is hashed again.

Why a status check first: at 30,000 faces of 1024 px, reading and hashing 8.9 GB was most of a warm
dedupe. The status-change time (``st_ctime`` on POSIX) is set to "now" by the kernel on every write,
rename, ``utime``, ``chmod`` or link of a file and cannot be set back by any user call. Scrape writes a
file (its mtime), then renames it into place (its ctime) at once, so an untouched file has a ctime
within moments of its recorded mtime; any later change to it, a forged mtime included, leaves a ctime
later than that. So a file whose ctime lies within ``SETTLED_NS`` of its recorded mtime is trusted on
its status, as git's index trusts a file's stat; every other one is read. What it cannot see is a
same-size rewrite with the mtime set back within that second of the scraper's own write (the folder is
locked while scrape writes). A copied folder (new ctimes) and Windows (where ``st_ctime`` is the creation
time) always take the sha256 path.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sqlite3
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import imagehash
from PIL import Image, UnidentifiedImageError

from diffkit.console import printable
from diffkit.dataset.decode import UndecodableImage
from diffkit.dataset.listing import ImageEntry, ImageScan, scan_images
from diffkit.dataset.manifest import RecordedHash, recorded_hashes
from diffkit.dataset.phash import (
    DRAFT_DECODE,
    RETIRED_DECODES,
    bits_to_uint64,
    phash_image,
    to_signed64,
    to_unsigned64,
)
from diffkit.dataset.verify import THUMB_BYTES, open_for_hash_and_thumbnail
from diffkit.dedupe.config import CACHE_NAME
from diffkit.safepath import unsafe_reason

__all__ = [
    "HashCache",
    "HashRecord",
    "bits_to_uint64",
    "hash_file",
    "hash_images",
    "perceptual_hash",
    "scan_folder",
    "scrape_records",
]

_WHASH_SCALE = 64  # fixed so that whash does not depend on the decoded size (imagehash's default does)
# 2: 16-bit PNGs are scaled to 8 bits before hashing (schema 1 hashed them as all-white). The cache key
# (path, size, mtime) of such a file does not change, so opening a schema-1 cache forgets the rows of
# PNG files (only PNG holds 16-bit pixels here); every other row keeps its hash, which is unchanged.
# 3: a thumbnail column (the verifier's input). Opening a schema-2 cache adds the column and keeps every
# row and hash; a row without a thumbnail is decoded again once (its hash comes out identical).
_CACHE_SCHEMA = 3
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COMMIT_EVERY_S = 2.0  # a kill loses at most this much hashing work...
_COMMIT_EVERY_N = 200  # ...or this many files (one small WAL transaction each)


@dataclass(frozen=True)
class HashRecord:
    rel: str
    size: int
    mtime_ns: int
    # None when unreadable, or (``lazy_sha256``) when no other file has this size: only files of equal
    # size can be byte-identical, and SHA-256 cost 8 % of a decode at the floor (bench_dedupe.py)
    sha256: str | None
    hash: int | None  # unsigned 64-bit perceptual hash, bit 63 = first bit of imagehash's bit array
    width: int
    height: int
    error: str | None  # set when the file could not be read or decoded; it is then skipped
    thumb: bytes | None = None  # 16 x 16 YCbCr thumbnail (diffkit.dataset.verify), None when unreadable


def scan_folder(root: Path, skip: Iterable[Path] = ()) -> ImageScan:
    """Every image under ``root`` (resolved) in path order, by the one lister's rules; ``skip``: folders
    not to enter (the quarantine). Symlinks are listed in ``symlinks``, never in ``files``."""
    return scan_images(Path(root).resolve(), skip=skip)


def perceptual_hash(image: Image.Image, hash_kind: str) -> int:
    if hash_kind == "phash":
        return phash_image(image)  # the one pHash, shared with scrape
    if hash_kind == "dhash":
        bits = imagehash.dhash(image).hash
    elif hash_kind == "ahash":
        bits = imagehash.average_hash(image).hash
    elif hash_kind == "whash":
        bits = imagehash.whash(image, image_scale=_WHASH_SCALE).hash
    else:
        raise ValueError(f"unknown hash kind {hash_kind!r}")
    return bits_to_uint64(bits)


HashOutput = tuple[str | None, int | None, int, int, str | None, bytes | None]
# (path, hash kind, decode) or (path, hash kind, decode, with_sha256): without, the sha256 is computed
HashTask = tuple[str, str, str] | tuple[str, str, str, bool]


def hash_file(task: HashTask) -> HashOutput:
    """Worker: (path, hash kind, decode[, with_sha256]) -> (sha256, hash, width, height, error,
    thumbnail). Never raises. Thread-safe: it leaves the (process-wide) warning filters alone;
    :func:`hash_images` turns Pillow's decompression-bomb warning into an error around all its workers,
    and an image over the limit is refused here too when a caller did not."""
    path, hash_kind, decode = task[:3]
    with_sha = bool(task[3]) if len(task) > 3 else True
    try:
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest() if with_sha else None
        image, thumb, width, height = open_for_hash_and_thumbnail(data, decode)
        if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
            raise Image.DecompressionBombError(
                f"Image size ({width * height} pixels) exceeds limit of {Image.MAX_IMAGE_PIXELS} pixels"
            )
        value = perceptual_hash(image, hash_kind)
        return sha, value, width, height, None, thumb
    except Exception as exc:  # any decoder failure means "unreadable": listed, never fatal
        return None, None, 0, 0, _describe(exc), None


def _describe(exc: Exception) -> str:
    """One stable line: no object addresses, so identical folders give identical reports."""
    if isinstance(exc, UnidentifiedImageError):
        return "not a readable image (unknown or damaged format)"
    if isinstance(exc, UndecodableImage):
        return f"cannot be decoded faithfully: {exc} (not guessed)"
    message = str(exc).splitlines()[0] if str(exc) else ""
    message = re.sub(r" at 0x[0-9a-fA-F]+", "", message)
    return printable(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _db_key(rel: str) -> str | bytes:
    """How a path is stored in SQLite: text when it is UTF-8, else its file-system bytes as a BLOB
    (a name with undecodable bytes cannot be bound as text; the two kinds never collide)."""
    try:
        rel.encode("utf-8")
        return rel
    except UnicodeEncodeError:
        return os.fsencode(rel)


def _from_db_key(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _to_signed(value: int | None) -> int | None:
    return None if value is None else to_signed64(value)


def _to_unsigned(value: int | None) -> int | None:
    return None if value is None else to_unsigned64(value)


class HashCache:
    """SQLite table of hashes inside the scanned folder. Each batch commits in one transaction, so a kill
    loses at most the last few seconds of work and never corrupts what is there. A folder that cannot
    hold the cache (read-only) or a damaged cache file only costs speed: it is reported, not fatal."""

    def __init__(self, root: Path, enabled: bool = True, path: Path | None = None) -> None:
        """The cache of the images under ``root``, kept in ``root`` unless ``path`` puts it elsewhere
        (``--against``: a reference folder is read-only input, so its cache lives in the folder checked)."""
        self.root = root
        self.path = path if path is not None else root / CACHE_NAME
        self.warning: str | None = None
        self._db: sqlite3.Connection | None = None
        if not enabled:
            return
        reason = self._unsafe(self.path)
        if reason is not None:  # SQLite would write through the link, outside the folder
            self.warning = (
                f"hash cache not used: {reason} (never written through a symlink); every file is hashed"
            )
            return
        try:
            self._db = self._connect()
        except sqlite3.DatabaseError:
            # Damaged (e.g. not a database): a cache can always be rebuilt, so start afresh.
            self.warning = f"hash cache {self.path} was unreadable; rebuilt it"
            try:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{self.path}{suffix}").unlink(missing_ok=True)
                self._db = self._connect()
            except (sqlite3.Error, OSError) as exc:
                self.warning = f"hash cache disabled ({exc}); every file is hashed"
        except (sqlite3.Error, OSError) as exc:
            self.warning = f"hash cache disabled ({exc}); every file is hashed"

    @staticmethod
    def _unsafe(path: Path) -> str | None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            reason = unsafe_reason(path.parent, path.name + suffix)
            if reason is not None:
                return printable(reason)
        return None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS hashes (rel TEXT NOT NULL, kind TEXT NOT NULL,"
                " decode TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT,"
                " hash INTEGER, width INTEGER NOT NULL, height INTEGER NOT NULL, error TEXT, thumb BLOB,"
                " PRIMARY KEY (rel, kind, decode))"
            )
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(_CACHE_SCHEMA),))
            (schema,) = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if schema == "1":
                self._forget_png_rows(db)
            if schema in ("1", "2"):  # keep every row and hash; thumbnails are filled in as files are seen
                columns = {row[1] for row in db.execute("PRAGMA table_info(hashes)")}
                if "thumb" not in columns:
                    db.execute("ALTER TABLE hashes ADD COLUMN thumb BLOB")
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema'", (str(_CACHE_SCHEMA),))
            db.commit()
        except BaseException:
            db.close()
            raise
        return db

    def _forget_png_rows(self, db: sqlite3.Connection) -> None:
        """Schema 1 -> 2: drop the rows of PNG files (by content), which may hold 16-bit pixels that
        schema 1 hashed as white. Files that cannot be read now are dropped too (rehashed if back)."""
        root = self.root
        stale = []
        for (key,) in db.execute("SELECT DISTINCT rel FROM hashes").fetchall():
            try:
                with open(root / _from_db_key(key), "rb") as handle:
                    head = handle.read(len(_PNG_SIGNATURE))
            except OSError:
                head = _PNG_SIGNATURE
            if head == _PNG_SIGNATURE:
                stale.append((key,))
        db.executemany("DELETE FROM hashes WHERE rel = ?", stale)

    @property
    def enabled(self) -> bool:
        return self._db is not None

    def load(self, hash_kind: str, decode: str) -> dict[str, HashRecord]:
        if self._db is None:
            return {}
        rows = self._db.execute(
            "SELECT rel, size, mtime_ns, sha256, hash, width, height, error, thumb FROM hashes"
            " WHERE kind = ? AND decode = ?",
            (hash_kind, decode),
        )
        return {
            _from_db_key(key): HashRecord(
                _from_db_key(key), size, mtime, sha, _to_unsigned(value), width, height, error, thumb
            )
            for key, size, mtime, sha, value, width, height, error, thumb in rows
        }

    def store(self, hash_kind: str, decode: str, records: list[HashRecord]) -> None:
        """Write ``records``; each replaces its file's row of the same kind on a retired decode path."""
        if self._db is None or not records:
            return
        retired = [(_db_key(r.rel), hash_kind, old) for r in records for old in RETIRED_DECODES]
        try:
            with self._db:
                self._db.executemany("DELETE FROM hashes WHERE rel = ? AND kind = ? AND decode = ?", retired)
                self._db.executemany(
                    "INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            _db_key(r.rel),
                            hash_kind,
                            decode,
                            r.size,
                            r.mtime_ns,
                            r.sha256,
                            _to_signed(r.hash),
                            r.width,
                            r.height,
                            r.error and printable(r.error),
                            r.thumb,
                        )
                        for r in records
                    ],
                )
        except (sqlite3.Error, UnicodeError) as exc:
            self.warning = f"hash cache not updated ({printable(exc)})"

    def prune(self, present: set[str]) -> None:
        """Forget files that are gone (moved to quarantine, deleted), so the cache stays the folder's size."""
        if self._db is None:
            return
        stored = {_from_db_key(key) for (key,) in self._db.execute("SELECT DISTINCT rel FROM hashes")}
        gone = sorted(stored - present)
        if gone:
            with self._db:
                self._db.executemany("DELETE FROM hashes WHERE rel = ?", [(_db_key(rel),) for rel in gone])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _threaded(tasks: list[HashTask], workers: int) -> Iterator[HashOutput]:
    """:func:`hash_file` of each task on ``workers`` threads, in order. Threads, not processes: libjpeg
    decodes, SHA-256 hashes and Pillow resizes with the GIL released, and a process pool cost 0.5-1 s
    to start (forkserver and imports) on the 2-core machine, a tenth of a 2,000-face run. At most a
    window of tasks is queued, so a Ctrl-C waits only for the files being hashed."""
    window = 8 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="diffkit-hash") as pool:
        queued: deque[Future[HashOutput]] = deque()
        try:
            for task in tasks:
                queued.append(pool.submit(hash_file, task))
                if len(queued) >= window:
                    yield queued.popleft().result()
            while queued:
                yield queued.popleft().result()
        finally:  # Ctrl-C, or the caller stopped early: drop what has not started
            for future in queued:
                future.cancel()


def _complete(record: HashRecord) -> bool:
    """A cached row is usable when it has a thumbnail (rows from schema 2 have none) or is unreadable."""
    return record.error is not None or (record.thumb is not None and len(record.thumb) == THUMB_BYTES)


def scrape_records(root: Path, hash_kind: str, decode: str, enabled: bool) -> dict[str, RecordedHash]:
    """What a scrape manifest in ``root`` recorded for dedupe (``file_name -> RecordedHash``): only
    pHashes on scrape's decode path are recorded, so other hash kinds and decode paths get nothing, as
    does ``--no-cache`` (which hashes every file)."""
    if not enabled or hash_kind != "phash" or decode != DRAFT_DECODE:
        return {}
    return recorded_hashes(root, decode)


def _sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:  # vanished or unreadable since the scan: hashed (and reported) like any file
        return None


SETTLED_NS = 1_000_000_000  # a status change within 1 s of the recorded write is the scraper's own
_CTIME_IS_CHANGE = os.name != "nt"  # Windows' st_ctime is the creation time, which a rewrite keeps


def settled(ctime_ns: int, recorded_mtime_ns: int) -> bool:
    """Whether a file's status has not changed since it was written with ``recorded_mtime_ns``: its
    ctime lies in [mtime, mtime + SETTLED_NS] (see the module's docstring)."""
    return _CTIME_IS_CHANGE and 0 <= ctime_ns - recorded_mtime_ns <= SETTLED_NS


def _trusted_records(
    files: list[ImageEntry], recorded: Mapping[str, RecordedHash], workers: int
) -> dict[str, HashRecord]:
    """The files whose recorded values still describe them: same size and mtime as written (a stat),
    and either a status unchanged since (:func:`settled`) or the same sha256 (the bytes are read: a
    forged mtime does not fool it). Threads suffice: file reads and hashlib on large buffers release
    the GIL."""
    matched = [
        (file, hit)
        for file in files
        if (hit := recorded.get(file.rel)) is not None
        and hit.size == file.size
        and hit.mtime_ns == file.mtime_ns
        and len(hit.thumb) == THUMB_BYTES
    ]
    unread = [(file, hit) for file, hit in matched if not settled(file.ctime_ns, hit.mtime_ns)]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        digests = dict(
            zip(
                [file.rel for file, _ in unread],
                pool.map(_sha256_of, [f.path for f, _ in unread]),
                strict=True,
            )
        )
    return {
        file.rel: HashRecord(
            file.rel, file.size, file.mtime_ns, hit.sha256, hit.phash, hit.width, hit.height, None, hit.thumb
        )
        for file, hit in matched
        if digests.get(file.rel, hit.sha256) == hit.sha256
    }


def hash_images(
    files: list[ImageEntry],
    hash_kind: str,
    decode: str,
    workers: int,
    cache: HashCache,
    advance: Callable[[int], None] | None = None,
    recorded: Mapping[str, RecordedHash] | None = None,
    lazy_sha256: bool = False,
) -> tuple[list[HashRecord], int, int]:
    """Hash every file (cached ones are not reopened, ``recorded`` ones, from a scrape manifest, only
    checked). Returns records in ``files`` order, the number of files actually hashed (decoded) this
    run, and how many came from ``recorded``. Recorded values are not copied into the cache: they are
    checked against the file on every run, where the cache trusts (size, mtime).

    ``lazy_sha256``: only readable files that share their size with another of ``files`` get a sha256
    (the only ones that can be byte-identical to one of them); otherwise every readable file has one."""
    sizes = Counter(file.size for file in files)

    def wants_sha(file: ImageEntry) -> bool:
        return not lazy_sha256 or sizes[file.size] > 1

    records = _trusted_records(files, recorded, workers) if recorded else {}
    n_recorded = len(records)
    cached = cache.load(hash_kind, decode)
    todo: list[ImageEntry] = []
    for file in files:
        if file.rel in records:
            continue
        hit = cached.get(file.rel)
        if hit is not None and hit.size == file.size and hit.mtime_ns == file.mtime_ns and _complete(hit):
            records[file.rel] = hit
        else:
            todo.append(file)
    if advance is not None and records:
        advance(len(records))

    tasks: list[HashTask] = [(str(f.path), hash_kind, decode, wants_sha(f)) for f in todo]
    pending: list[HashRecord] = []
    last_commit = time.monotonic()

    def collect(file: ImageEntry, result: HashOutput) -> None:
        nonlocal last_commit
        sha, value, width, height, error, thumb = result
        record = HashRecord(file.rel, file.size, file.mtime_ns, sha, value, width, height, error, thumb)
        records[file.rel] = record
        pending.append(record)
        if advance is not None:
            advance(1)
        if len(pending) >= _COMMIT_EVERY_N or time.monotonic() - last_commit > _COMMIT_EVERY_S:
            cache.store(hash_kind, decode, pending)
            pending.clear()
            last_commit = time.monotonic()

    try:
        # The filters are process-wide: set once here, for every worker thread, never inside one.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if workers > 1 and len(tasks) > 1:
                for file, result in zip(todo, _threaded(tasks, workers), strict=True):
                    collect(file, result)
            else:
                for file, task in zip(todo, tasks, strict=True):
                    collect(file, hash_file(task))
    finally:
        cache.store(hash_kind, decode, pending)  # keep finished work even on Ctrl-C
    # A cached row may lack the sha256 a file now needs (it had no twin in size when it was hashed).
    missing = [
        f for f in files if wants_sha(f) and records[f.rel].error is None and not records[f.rel].sha256
    ]
    if missing:
        with ThreadPoolExecutor(max(1, workers)) as pool:
            digests = list(pool.map(_sha256_of, [file.path for file in missing]))
        filled = [
            dataclasses.replace(records[file.rel], sha256=digest)
            for file, digest in zip(missing, digests, strict=True)
            if digest is not None
        ]
        records.update((record.rel, record) for record in filled)
        cache.store(hash_kind, decode, filled)
    return [records[f.rel] for f in files], len(todo), n_recorded
