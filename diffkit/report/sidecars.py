"""Reading the reports of a folder back: every ``.json`` sidecar with the ``diffkit.report/1`` schema.

The index and the run pages are built from these alone; a sidecar names the dataset and the run it
belongs to in its ``data`` (each command records its own folders), which links the stages of one run.

The folder is the user's: anything may sit in it under a report's name. Only regular files are read
(opened non-blocking, so a named pipe never hangs the command), up to a size cap, and JSON nested
deeper than any report is refused; whatever cannot be read is skipped, with its reason, for the
command to say so.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = "diffkit.report/1"

# A sidecar holds numbers and short tables (the largest, a dedupe of 100k images, is a few MB); a
# report page embeds its pictures (tens of MB at most). Anything larger is not a diffkit report.
SIDECAR_MAX_BYTES = 64 * 1024 * 1024
PAGE_MAX_BYTES = 256 * 1024 * 1024
# Reports nest a handful of levels (data.config.train.model...): deeper JSON is not a report, and
# would overflow the recursion of whatever renders it.
MAX_NESTING = 100

# Where each command's sidecar names its dataset folder and its run folder (first match wins).
DATASET_KEYS: dict[str, list[tuple[str, ...]]] = {
    "scrape": [("data", "out")],
    "dedupe": [("data", "directory")],
    "train": [("data", "config", "train", "data")],
    "eval": [("data", "reference")],
}
RUN_KEYS: dict[str, list[tuple[str, ...]]] = {
    "train": [("data", "config", "train", "out"), ("summary", "run")],
    "sample": [("data", "result", "run"), ("data", "run")],
    "eval": [("data", "config", "run")],
}
# A command not listed above (a future one) is linked by these, when its data has them.
GENERIC_DATASET_KEYS = [("data", "dataset"), ("data", "config", "data")]
GENERIC_RUN_KEYS = [("data", "run"), ("data", "config", "run"), ("summary", "run")]
# A snapshot or a samples folder lives inside its run folder.
RUN_CHILD_KEYS = [("data", "result", "snapshot"), ("summary", "snapshot")]


@dataclass(frozen=True)
class Sidecar:
    """One report found in the folder: its sidecar's content and the HTML page beside it."""

    json_path: Path
    html_path: Path
    content: dict[str, Any]

    @property
    def command(self) -> str:
        return str(self.content.get("command", ""))

    @property
    def created(self) -> str:
        return str(self.content.get("created", ""))

    @property
    def title(self) -> str:
        return str(self.content.get("title", self.json_path.stem))

    @property
    def summary(self) -> dict[str, Any]:
        summary = self.content.get("summary")
        return summary if isinstance(summary, dict) else {}

    @property
    def headline(self) -> str:
        return str(self.content.get("headline") or "")


@dataclass(frozen=True)
class Skipped:
    """A file in the reports folder that looks like a report but could not be read, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"file": self.name, "reason": self.reason}


@dataclass
class SidecarScan:
    """What a reports folder holds: the readable reports (newest first) and the files skipped."""

    sidecars: list[Sidecar] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


class UnreadableFile(Exception):
    """A file that is not read: not a regular file, too large, or not openable. ``str()`` says why."""


_KINDS = (
    (stat.S_ISLNK, "a symlink (not followed)"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def read_regular_file(path: Path, limit: int) -> bytes:
    """The bytes of ``path`` if it is a regular file (not a link) of at most ``limit`` bytes.

    Opened with O_NONBLOCK and checked with fstat on the open descriptor: a named pipe swapped in
    after the lstat can neither block the open nor be read. Raises :class:`UnreadableFile`.
    """
    try:
        kind = _not_regular(os.lstat(path).st_mode)
    except OSError as error:
        raise UnreadableFile(error.strerror or type(error).__name__) from None
    if kind is not None:
        raise UnreadableFile(kind)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as error:
        reason = "a symlink (not followed)" if error.errno == errno.ELOOP else error.strerror
        raise UnreadableFile(reason or type(error).__name__) from None
    try:
        info = os.fstat(fd)
        kind = _not_regular(info.st_mode)
        if kind is not None:
            raise UnreadableFile(kind)
        if info.st_size > limit:
            raise UnreadableFile(f"{info.st_size:,} bytes, over the {_mib(limit)} limit")
        chunks, size = [], 0
        while size <= limit:  # read to the cap, not to st_size: the file may grow meanwhile
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise UnreadableFile(f"grew past the {_mib(limit)} limit while read")
        return b"".join(chunks)
    except OSError as error:
        raise UnreadableFile(error.strerror or type(error).__name__) from None
    finally:
        os.close(fd)


def _too_deep(value: Any, limit: int = MAX_NESTING) -> bool:
    """Whether ``value`` nests lists and dicts deeper than ``limit`` (iterative: no recursion to overflow)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def parse_sidecar(data: bytes) -> Any:
    """A sidecar's JSON; :class:`UnreadableFile` for invalid UTF-8 or JSON, or JSON nested too deep."""
    try:
        content = json.loads(data.decode("utf-8"))
    except RecursionError:  # the decoder's own limit (~1,000 levels) is hit before any check of ours
        raise UnreadableFile(f"JSON nested deeper than {MAX_NESTING} levels") from None
    except UnicodeDecodeError as error:
        raise UnreadableFile(f"not UTF-8 (byte {error.start:,})") from None
    except ValueError as error:
        raise UnreadableFile(f"not valid JSON ({getattr(error, 'msg', error)})") from None
    if isinstance(content, (dict, list)) and _too_deep(content):
        raise UnreadableFile(f"JSON nested deeper than {MAX_NESTING} levels")
    return content


def _page_problem(html_path: Path) -> str | None:
    """Why the page beside a sidecar is not a report page in this folder, or None when it is one."""
    try:
        kind = _not_regular(os.lstat(html_path).st_mode)
    except OSError as error:
        return error.strerror or type(error).__name__
    return None if kind is None else f"its page {html_path.name} is {kind}"


def scan_sidecars(reports_dir: Path) -> SidecarScan:
    """Every readable report sidecar whose HTML page lives in ``reports_dir`` (no symlinks), newest first.

    A ``.json`` with no page beside it is not a report (a benchmark's data, a user's file) and is left
    out silently; one with a page that cannot be read (a pipe, a link, too large, invalid or too deeply
    nested JSON) is listed in ``skipped``.
    """
    scan = SidecarScan()
    for json_path in sorted(reports_dir.glob("*.json")):
        html_path = json_path.with_suffix(".html")
        if not os.path.lexists(html_path):
            continue  # only pages that live in this folder are listed
        problem = _page_problem(html_path)
        try:
            if problem is not None:
                raise UnreadableFile(problem)
            content = parse_sidecar(read_regular_file(json_path, SIDECAR_MAX_BYTES))
        except UnreadableFile as error:
            scan.skipped.append(Skipped(json_path.name, str(error)))
            continue
        if isinstance(content, dict) and content.get("schema") == SCHEMA:
            scan.sidecars.append(Sidecar(json_path, html_path, content))
    scan.sidecars.sort(key=lambda sidecar: sidecar.created, reverse=True)
    return scan


def load_sidecars(reports_dir: Path) -> list[Sidecar]:
    """The readable reports of ``reports_dir``, newest first (see :func:`scan_sidecars`)."""
    return scan_sidecars(reports_dir).sidecars


def _lookup(content: dict[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = content
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


def _first(content: dict[str, Any], paths: list[tuple[str, ...]]) -> str | None:
    return next((found for path in paths if (found := _lookup(content, path)) is not None), None)


def folder_key(folder: str, base: Path) -> str:
    """A folder as one comparable string: relative paths are taken from ``base`` (where the command ran)."""
    path = Path(folder)
    return os.path.normpath(path if path.is_absolute() else base / path)


def dataset_of(sidecar: Sidecar) -> str | None:
    paths = DATASET_KEYS.get(sidecar.command, GENERIC_DATASET_KEYS)
    return _first(sidecar.content, paths)


def run_of(sidecar: Sidecar) -> str | None:
    found = _first(sidecar.content, RUN_KEYS.get(sidecar.command, GENERIC_RUN_KEYS))
    if found is None and sidecar.command not in ("scrape", "dedupe"):
        child = _first(sidecar.content, RUN_CHILD_KEYS)
        found = str(Path(child).parent) if child else None
    return found
