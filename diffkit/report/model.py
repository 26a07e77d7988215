"""What a report holds: a title, a flat summary of numbers, and sections of tables, plots and images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class ReportImage:
    """An image shown in a report: a PIL image or a file path, embedded into the HTML as a data URI."""

    image: Image.Image | Path | str
    caption: str = ""


@dataclass
class Section:
    """One block of a report. Every part is optional; they render in the order of the fields."""

    heading: str
    text: str = ""
    badges: list[str] = field(default_factory=list)
    table: list[dict[str, Any]] | None = None
    figure: Any = None  # a matplotlib Figure, rendered to an embedded PNG
    images: list[ReportImage] = field(default_factory=list)


@dataclass
class Report:
    """A command's report. ``summary`` holds the headline numbers; ``data`` any further JSON-able result."""

    title: str
    command: str
    summary: dict[str, Any] = field(default_factory=dict)
    sections: list[Section] = field(default_factory=list)
    data: Any = None
    # One sentence for the index and the run page, e.g. "FID@100 31,727.1 (reference 300, ...)".
    headline: str = ""


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    json: Path

    def to_dict(self) -> dict[str, str]:
        return {"html": str(self.html), "json": str(self.json)}
