"""Figures that remember where they came from.

``load`` reads ``reports/bench_<name>.json`` with every number (and every string with a digit in it)
wrapped in a value that knows its report and key path. Formatting one (``f"{value:.2f}"``) gives the text
wrapped in invisible marks that carry ``[report, source, format]``; ``collect`` turns a finished text
into the clean text and its figure list: each figure's offset, text, report, source and format, and each
remaining number of the template's own words (``8x8``, ``DDPM-1000``) as a literal ``[offset, text]``.

A source is a key path (``["summary", "diffkit_s"]``, list items by index) or, for a figure derived from
several keys of one report, ``{"op": "/" | "+" | "len", "args": [source, ...]}`` (an argument may also be
a plain number: a unit, such as 1000000 for millions). Formats are Python format specs, plus ``~e``: one
significant digit in the short form people write (3.95e-05 -> 4e-5).

A figure the reading computes outside these operations (``len()`` rather than ``count()``, ``int()`` of a
value) loses its source and is listed as a literal: the map shows it, so a reviewer can see it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPORTS = Path(__file__).resolve().parents[2] / "reports"
_OPEN, _MID, _CLOSE = "\x1e", "\x1f", "\x1d"  # ASCII separators: never in a report or a template
_MARKED = re.compile(f"{_OPEN}([^{_MID}]*){_MID}([^{_CLOSE}]*){_CLOSE}")
# A number: not part of a word (fp32, UNet2DModel) or of a longer number; "2.6x", "97%", "4e-5" count
# (the same pattern as tests/test_docs.py).
NUMBER = re.compile(r"(?<![\w.\-/])\d[\d,]*(?:\.\d+)?(?:e-?\d+)?(?![\d.,]\d|\w(?<!x))")


def format_value(value: Any, spec: str) -> str:
    """``format(value, spec)``, plus ``~e`` (short scientific notation with one significant digit)."""
    if spec == "~e":
        mantissa, exponent = f"{float(value):.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return format(value, spec)


class Traced:
    """The mix-in: a report name, a source, and formatting that marks the text with both."""

    report: str
    source: Any

    def _marked(self, plain: Any, spec: str) -> str:
        text = format_value(plain, spec)
        if not any(char.isdigit() for char in text):  # "fp" or "diffkit": a label, not a figure
            return text
        return f"{_OPEN}{json.dumps([self.report, self.source, spec])}{_MID}{text}{_CLOSE}"

    def _derived(self, op: str, other: Any, value: Any, reverse: bool = False) -> Any:
        """A figure computed from two traced values of one report, or from one and a constant (a number
        in ``args``, e.g. 1e6 for "M parameters"), keeps its sources."""
        if isinstance(other, Traced) and other.report == self.report:
            theirs = other.source
        elif isinstance(other, (int, float)) and not isinstance(other, (bool, Traced)):
            theirs = other
        else:
            return value
        args = [theirs, self.source] if reverse else [self.source, theirs]
        kind = TInt if isinstance(value, int) else TFloat
        return kind(value, self.report, {"op": op, "args": args})


class TFloat(Traced, float):
    def __new__(cls, value: float, report: str, source: Any) -> TFloat:
        self = float.__new__(cls, value)
        self.report, self.source = report, source
        return self

    def __format__(self, spec: str) -> str:
        return self._marked(float(self), spec)

    def __str__(self) -> str:
        return self.__format__("")

    def __truediv__(self, other: Any) -> Any:
        return self._derived("/", other, float(self) / other)

    def __add__(self, other: Any) -> Any:
        return self._derived("+", other, float(self) + other)


class TInt(Traced, int):
    def __new__(cls, value: int, report: str, source: Any) -> TInt:
        self = int.__new__(cls, value)
        self.report, self.source = report, source
        return self

    def __format__(self, spec: str) -> str:
        return self._marked(int(self), spec)

    def __str__(self) -> str:
        return self.__format__("")

    def __truediv__(self, other: Any) -> Any:
        return self._derived("/", other, int(self) / other)

    def __add__(self, other: Any) -> Any:
        return self._derived("+", other, int(self) + other)

    def __radd__(self, other: Any) -> Any:
        return self._derived("+", other, other + int(self), reverse=True)


class TStr(Traced, str):
    def __new__(cls, value: str, report: str, source: Any) -> TStr:
        self = str.__new__(cls, value)
        self.report, self.source = report, source
        return self

    def __format__(self, spec: str) -> str:
        return self._marked(str.__str__(self), spec)

    def __str__(self) -> str:
        return self.__format__("")


class TList(list):  # type: ignore[type-arg]
    """A report's list: its items are traced; ``count`` reads its length as a figure."""

    report: str
    source: Any


def trace(node: Any, report: str, path: list[Any] | None = None) -> Any:
    """``node`` (a report's JSON, or part of one) with every value traced to ``report`` and its key path."""
    path = path or []
    if isinstance(node, bool) or node is None:
        return node  # True/False carry no digit
    if isinstance(node, int):
        return TInt(node, report, path)
    if isinstance(node, float):
        return TFloat(node, report, path)
    if isinstance(node, str):
        return TStr(node, report, path)
    if isinstance(node, dict):
        return {key: trace(value, report, [*path, key]) for key, value in node.items()}
    items = TList(trace(value, report, [*path, index]) for index, value in enumerate(node))
    items.report, items.source = report, path
    return items


# Reports that are not a comparison with a peer keep their own file name (issue 28: reports/rehearsal.json).
OWN_NAMES = frozenset({"rehearsal"})


def report_stem(name: str) -> str:
    """The file name (without .json/.html) of reading ``name``'s report: ``bench_<name>`` for benchmarks."""
    return name if name in OWN_NAMES else f"bench_{name}"


def load(name: str, reports: Path = REPORTS) -> dict[str, Any]:
    """``reports/<report_stem(name)>.json``, every value traced to that stem and its key path."""
    report = report_stem(name)
    return trace(json.loads((reports / f"{report}.json").read_text(encoding="utf-8")), report, [])


def count(items: Any) -> Any:
    """``len(items)``, traced to the list when it is one of a report's lists."""
    if isinstance(items, TList):
        return TInt(len(items), items.report, {"op": "len", "args": [items.source]})
    return len(items)


def collect(text: str) -> tuple[str, list[list[Any]]]:
    """(the clean text, its figures): ``[offset, text, report, source, format]`` per traced figure and
    ``[offset, text]`` per number of the template's own words, in order."""
    clean, figures, spans, last = [], [], [], 0
    length = 0
    for match in _MARKED.finditer(text):
        before = text[last : match.start()]
        clean.append(before)
        length += len(before)
        report, source, spec = json.loads(match.group(1))
        figures.append([length, match.group(2), report, source, spec])
        spans.append((length, length + len(match.group(2))))
        clean.append(match.group(2))
        length += len(match.group(2))
        last = match.end()
    clean.append(text[last:])
    plain = "".join(clean)
    for match in NUMBER.finditer(plain):
        if not any(start <= match.start() < end for start, end in spans):
            figures.append([match.start(), match.group().rstrip(",")])  # "12, " is the number 12
    return plain, sorted(figures, key=lambda figure: figure[0])


def plain(text: str) -> str:
    """The text without its marks (for a report's own headline)."""
    return _MARKED.sub(lambda match: match.group(2), text)


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table; each cell formatted, so a report's string in a cell keeps its source."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(f"{cell}" for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def x(value: Any, digits: int = 1) -> str:
    """A ratio as people write it: 2.48x."""
    return f"{value:.{digits}f}x"
