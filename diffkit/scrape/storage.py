"""Where kept images live: content-addressed files, a SQLite manifest, and ``metadata.jsonl``.

The folder's format (names, schema, queries, ``metadata.jsonl``) belongs to
:mod:`diffkit.dataset.manifest`; this module is scrape's writer: atomic file writes, crash
reconciliation, and loading the inline dedupe index (:mod:`diffkit.scrape.kept`).

Order of writes for one image: the file (temp, fsync of its bytes, rename), then its manifest row (one
commit). So after a ``kill -9`` at any moment the only possible disagreements are a stray temp file or a
complete file without a row; :meth:`Store.reconcile` fixes both on the next start. The manifest is
the source of truth; ``metadata.jsonl`` is derived from it and rewritten atomically.

The folders' own fsyncs (which make the renames survive a power cut) are batched: they run with every
``metadata.jsonl`` rewrite and on close, not once per image (each costs as much CPU as the file's
fsync; bench_scrape.py). A power cut can then lose the last renames, and their rows then name missing
files, which reconcile drops: the same images SQLite's ``synchronous=NORMAL`` may already lose. A row
never names a file whose bytes were not on disk first.

Nothing is written, moved or deleted outside ``--out`` or through a symlink: a manifest row naming
``/tmp/x`` or ``../x``, or a symlinked ``images/ab/``, is reported and its target left alone. A full
disk, a read-only folder or a damaged manifest is one :class:`DiffkitError`, never a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from diffkit.atomic import TMP_SUFFIX, fsync_dir
from diffkit.console import printable
from diffkit.dataset.manifest import (
    FILE_PATTERN,
    IMAGES_DIR,
    MANIFEST_NAME,
    METADATA_NAME,
    Manifest,
    check_manifest_header,
    damaged_manifest,
    relative_file_name,
    row_problem,
    utc_now,
)
from diffkit.errors import DiffkitError
from diffkit.safepath import is_real_file, unsafe_reason
from diffkit.scrape.kept import KeptIndex
from diffkit.scrape.validate import HASH_DECODE, Rejection, ValidImage, decode_image

__all__ = ["ReconcileReport", "Store", "storage_error", "write_durably"]

# The temp file of a kept image: created new (never an existing file, never through a symlink), with
# the permissions any new file gets (mode 0o666 less the umask, as diffkit.atomic's NEW_FILE_MODE).
_NEW_TEMP = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def write_durably(path: str, data: bytes) -> None:
    """Publish ``data`` at ``path`` atomically: a temp file beside it, written, fsynced, renamed.

    diffkit.atomic's protocol (a reader sees no file or the complete one; an interrupted write leaves only
    a ``.<name>.<pid>.tmp`` that reconcile removes) without its per-call overhead (a random temp name, a
    file object, a chmod): this runs once per kept image. The folder's own fsync, which makes the rename
    durable, is the caller's (Store batches it). A missing folder is created.
    """
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        fd = os.open(temp, _NEW_TEMP, 0o666)
    except FileNotFoundError:  # the first image of this images/<xx>/ folder
        os.makedirs(folder, exist_ok=True)
        fd = os.open(temp, _NEW_TEMP, 0o666)
    except FileExistsError:  # left by a write of this process that failed before its cleanup
        os.unlink(temp)
        fd = os.open(temp, _NEW_TEMP, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _symlink_on_the_way(root: Path, file_name: str) -> str | None:
    """:func:`diffkit.safepath.unsafe_reason` for a name made by ``relative_file_name`` (``images/<xx>/
    <sha256>.<ext>``, nothing to check lexically): only the symlink test, one ``lstat`` per component."""
    base = os.fspath(root)
    end = file_name.find("/")
    while True:
        component = file_name if end < 0 else file_name[:end]
        try:
            mode = os.lstat(f"{base}/{component}").st_mode
        except FileNotFoundError:
            return None
        except OSError as error:
            return f"cannot inspect ({error.strerror})"
        if stat.S_ISLNK(mode):
            return f"goes through the symlink {component}"
        if end < 0:
            return None
        end = file_name.find("/", end + 1)


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
        return bool(
            self.temp_files_removed
            or self.files_adopted
            or self.files_removed
            or self.rows_dropped
            or self.unsafe_rows_dropped
        )

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
        self._unsynced_dirs: set[Path] = set()  # folders with renames not yet fsynced (see above)
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
            self.manifest = Manifest.open(self.root, HASH_DECODE)
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(self.root, exc) from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn a failed write (full disk, read-only folder, damaged manifest) into one clear line."""
        try:
            yield
        except (OSError, sqlite3.Error) as exc:
            raise storage_error(self.root, exc) from None

    def close(self) -> None:
        self.sync_dirs()
        self.manifest.close()

    def sync_dirs(self) -> None:
        """Make the renames of the files written so far durable (one fsync per folder)."""
        for folder in sorted(self._unsynced_dirs):
            fsync_dir(folder)
        self._unsynced_dirs.clear()

    # -- queries ---------------------------------------------------------------------------------
    def kept_count(self) -> int:
        return self.manifest.kept_count()

    def counts(self) -> dict[str, int]:
        return self.manifest.counts()

    def rows(self) -> list[dict[str, object]]:
        return self.manifest.rows()

    def endpoint(self) -> str | None:
        """The redacted URL this folder was scraped from (see :meth:`Manifest.endpoint`)."""
        return self.manifest.endpoint()

    def record_endpoint(self, url: str) -> None:
        with self._writing():
            self.manifest.record_endpoint(url)

    def record_url(
        self,
        url: str,
        status: str,
        reason: str,
        sha256: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """The outcome of one URL of a ``--urls`` list (see :meth:`Manifest.record_url`)."""
        with self._writing():
            self.manifest.record_url(url, status, reason, sha256, extra)

    def load_index(self) -> None:
        """Kept images, plus those ``diffkit dedupe`` removed as duplicates: never fetch them again."""
        self.index = KeptIndex()
        files = {sha256: self.root / file_name for sha256, file_name, _ in self.manifest.file_rows()}
        # Only values of the current decode path are compared (a pHash from another path differs by a few
        # bits); a row whose old value could not be migrated (its file is gone) still names known content.
        for sha256, phash in self.manifest.known_hashes(current_only=True):
            self.index.add(sha256, phash, _inside(self.root, files.get(sha256)))
        self.index.sha256.update(self.manifest.stale_shas())

    # -- writes ----------------------------------------------------------------------------------
    def add(self, image: ValidImage, url: str | None, fetched_at: str | None = None) -> str:
        """Write the file atomically, then commit its row. Returns the relative file name.

        A row never names a file that is not complete on disk: when the row cannot be committed (disk
        full), the file just written goes too, so disk and manifest still agree. Credentials in ``url``
        are never stored.
        """
        file_name = relative_file_name(image.sha256, image.extension)
        if FILE_PATTERN.match(f"{image.sha256}.{image.extension}"):
            reason = _symlink_on_the_way(self.root, file_name)
        else:  # a hand-built image's name ("../x"): the whole check
            reason = unsafe_reason(self.root, file_name)
        if reason is not None:
            raise DiffkitError(
                f"refusing to write {file_name} in {self.root}: the path {reason} (diffkit never writes "
                "through symlinks); remove the symlink or scrape into another --out folder"
            )
        path = self.root / file_name
        # temp file, its bytes fsynced, rename; its folder is fsynced in sync_dirs()
        with self._writing():
            write_durably(os.fspath(path), image.data)
        self._unsynced_dirs.add(path.parent)
        try:
            with self._writing():
                self._insert(image, file_name, path, url, fetched_at or utc_now())
        except DiffkitError:
            with contextlib.suppress(OSError, sqlite3.Error):
                if not self.manifest.has_image(image.sha256):
                    path.unlink()
            raise
        return file_name

    def _insert(
        self, image: ValidImage, file_name: str, path: Path, url: str | None, fetched_at: str
    ) -> None:
        """Commit the row of ``image``, whose file ``path`` (``file_name`` in the folder) was checked safe."""
        size = (image.width, image.height)
        # The pHash and thumbnail from validation's decode are recorded with the file's stat as written,
        # so ``diffkit dedupe`` of this folder decodes nothing (it trusts them while the file's size,
        # mtime and sha256 are unchanged). One stat per image; the row commits in the same transaction.
        mtime_ns = os.stat(path).st_mtime_ns if image.thumb is not None else None
        row = (image.sha256, file_name, image.phash, size, len(image.data), url, fetched_at)
        self.manifest.insert_image(*row, image.thumb, mtime_ns)
        # The thumbnail from validation is remembered (768 bytes per kept image): a later candidate is
        # verified without reading and decoding this file again.
        self.index.add(image.sha256, image.phash, path, image.thumb)

    def count(self, reason: str, amount: int = 1) -> None:
        with self._writing():
            self.manifest.add_count(reason, amount)

    def write_metadata(self) -> None:
        """Rewrite ``metadata.jsonl`` (Hugging Face imagefolder convention) from the manifest."""
        self.sync_dirs()
        with self._writing():
            self.manifest.write_metadata()

    # -- reconcile -------------------------------------------------------------------------------
    def reconcile(self, max_pixels: int, threshold: int) -> ReconcileReport:
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
            # Not named by a kept row, and still there: the row check deletes a wrong-sized file of a row.
            orphans = [
                path
                for path in files
                if path.relative_to(self.root).as_posix() not in known and is_real_file(path)
            ]
            for path in sorted(orphans, key=lambda p: p.stat().st_mtime):
                self._adopt_or_remove(path, max_pixels, threshold, report)
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
        for sha256, file_name, size in self.manifest.file_rows():
            problem = row_problem(self.root, sha256, file_name)
            path = self.root / file_name
            if problem is None and is_real_file(path) and path.stat().st_size == size:
                known.add(str(file_name))
                continue
            self.manifest.drop_image(sha256)
            if problem is not None:
                report.unsafe.append(f"manifest row {printable(file_name)!r}: {problem}")
                report.unsafe_rows_dropped += 1
                continue
            if is_real_file(path):  # a wrong-sized file of ours, in a real folder of ours
                path.unlink()
            report.rows_dropped += 1
        return known

    def _adopt_or_remove(self, path: Path, max_pixels: int, threshold: int, report: ReconcileReport) -> None:
        match = FILE_PATTERN.match(path.name)
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
        if (
            good
            and not isinstance(checked, Rejection)
            and not self.index.near_duplicate(checked.phash, data, threshold, thumb=checked.thumb)
        ):
            fetched_at = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).isoformat(
                timespec="milliseconds"
            )
            self._insert(checked, path.relative_to(self.root).as_posix(), path, None, fetched_at)
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


def _inside(root: Path, path: Path | None) -> Path | None:
    """``path`` when it is a regular file reached without symlinks inside ``root`` (else never read)."""
    if path is None:
        return None
    try:
        relative = path.relative_to(root).as_posix()
    except ValueError:
        return None
    return path if unsafe_reason(root, relative) is None else None
