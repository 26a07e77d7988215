"""Read ``diffkit scrape --urls FILE``: a text, CSV or Parquet list of image URLs, as img2dataset reads.

- Text (any other suffix): one URL per line; blank lines and lines starting with ``#`` are ignored.
- CSV (``.csv``, ``.tsv``): a header row with a ``url`` column; every other column (``caption``...)
  is kept, as text, for the image that URL gives, in ``metadata.jsonl``.
- Parquet (``.parquet``, ``.pq``): the same, read with pyarrow when it is installed.

A line that is not an http(s) URL is a *bad line*: counted and listed (redacted, with its line number),
never a traceback. A URL listed twice is fetched once. The key of a URL is its redacted text, as the
manifest stores it: credentials are used for the request and never written.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from diffkit.console import printable
from diffkit.dataset.redact import redact
from diffkit.errors import DiffkitError

__all__ = ["BadLine", "ListedUrl", "UrlList", "host_of", "read_url_list"]

URL_COLUMN = "url"
BAD_LINES_SHOWN = 50  # the report lists this many bad lines; the count covers all
_TEXT_CHARS = 200  # a bad line is shown cut to this many characters


@dataclass(frozen=True)
class ListedUrl:
    url: str  # as listed (credentials included: used for the request only)
    key: str  # redacted: what the manifest and the reports hold
    host: str  # host[:port], the unit of politeness (a rate limiter and Retry-After per host)
    line: int  # 1-based line (text) or row (CSV: the header is line 1; Parquet: row 1 is the first)
    extra: dict[str, str] = field(default_factory=dict)  # the other columns of its row


@dataclass(frozen=True)
class BadLine:
    line: int
    text: str  # redacted, printable, cut short
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"line": self.line, "text": self.text, "reason": self.reason}


@dataclass
class UrlList:
    path: Path
    urls: list[ListedUrl]  # unique, in list order
    listed: int  # URL entries in the file, repeats included (bad lines not)
    repeats: int  # entries naming a URL listed before (fetched once)
    bad: list[BadLine]
    columns: list[str]  # the extra columns kept per image


def host_of(url: str) -> str:
    """``host[:port]`` of a checked URL: one politeness unit (127.0.0.1:8000 and :8001 are two sites)."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port is not None else host


def _problem(url: str) -> str | None:
    """Why ``url`` cannot be fetched, or None."""
    if not url:
        return "empty url"
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
        parts.port  # noqa: B018 - raises on a port that is not a number or out of range
    except ValueError as exc:
        return f"unparseable ({exc})"
    if parts.scheme.lower() not in {"http", "https"}:
        return "not an http:// or https:// URL"
    if not hostname:
        return "no host name"
    if any(char in url for char in "\r\n\t ") or any(ord(char) < 32 for char in url):
        return "whitespace or control characters inside the URL"
    return None


def _shown(text: str) -> str:
    text = printable(redact(text))
    return text if len(text) <= _TEXT_CHARS else text[: _TEXT_CHARS - 1] + "…"


def _rows_text(path: Path) -> list[tuple[int, str, dict[str, str]]]:
    rows = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        line = raw.strip()
        if line and not line.startswith("#"):
            rows.append((number, line, {}))
    return rows


def _read_text(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DiffkitError(f"cannot read --urls {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")  # a BOM from a spreadsheet export is not part of the first URL
    except UnicodeDecodeError as exc:
        raise DiffkitError(f"--urls {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _rows_csv(path: Path, delimiter: str) -> list[tuple[int, str, dict[str, str]]]:
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DiffkitError(
            f"--urls {path} is empty: a CSV list needs a header row with a 'url' column"
        ) from None
    except csv.Error as exc:
        raise DiffkitError(f"--urls {path}: cannot read its header row ({exc})") from None
    names = [name.strip() for name in header]
    column = _url_column(path, names)
    rows = []
    try:
        for cells in reader:
            if not any(cell.strip() for cell in cells):
                continue  # a blank line is not an entry
            values = dict(zip(names, cells, strict=False))
            url = values.pop(names[column], "").strip()
            rows.append((reader.line_num, url, {k: v for k, v in values.items() if k}))
    except csv.Error as exc:
        raise DiffkitError(f"--urls {path}: line {reader.line_num} cannot be read as CSV ({exc})") from None
    return rows


def _url_column(path: Path, names: list[str]) -> int:
    lowered = [name.lower() for name in names]
    if URL_COLUMN not in lowered:
        found = ", ".join(repr(printable(name)) for name in names[:10]) or "none"
        raise DiffkitError(f"--urls {path} has no 'url' column (columns: {found})")
    return lowered.index(URL_COLUMN)


def _rows_parquet(path: Path) -> list[tuple[int, str, dict[str, str]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DiffkitError(
            f"reading the Parquet list {path} needs pyarrow: pip install pyarrow (or pass a .csv or .txt)"
        ) from None
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DiffkitError(f"cannot read --urls {path} as Parquet: {str(exc)[:200]}") from None
    column = _url_column(path, list(table.column_names))
    names = list(table.column_names)
    rows = []
    for number, record in enumerate(table.to_pylist(), start=1):
        url = record.pop(names[column])
        extra = {str(k): "" if v is None else str(v) for k, v in record.items()}
        rows.append((number, "" if url is None else str(url).strip(), extra))
    return rows


def read_url_list(path: Path) -> UrlList:
    """The list in ``path``; :class:`DiffkitError` when the file itself cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise DiffkitError(f"--urls {path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        rows = _rows_parquet(path)
    elif suffix in (".csv", ".tsv"):
        rows = _rows_csv(path, "\t" if suffix == ".tsv" else ",")
    else:
        rows = _rows_text(path)
    urls: list[ListedUrl] = []
    bad: list[BadLine] = []
    seen: set[str] = set()
    listed = repeats = 0
    columns: dict[str, None] = {}
    for line, url, extra in rows:
        problem = _problem(url)
        if problem is not None:
            bad.append(BadLine(line, _shown(url), problem))
            continue
        listed += 1
        key = redact(url)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        columns.update(dict.fromkeys(extra))
        urls.append(ListedUrl(url, key, host_of(url), line, extra))
    return UrlList(path, urls, listed, repeats, bad, list(columns))
