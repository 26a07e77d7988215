"""Render a :class:`Report` to one self-contained HTML file plus a JSON sidecar with the same numbers.

Images and plots are embedded as data URIs, so the HTML can be mailed or attached to an issue alone.
All text goes through Jinja2's autoescape: file names and URLs that contain markup render as text.
"""

from __future__ import annotations

import base64
import io
import json
import math
import platform
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
from PIL import Image

from diffkit import __version__
from diffkit.atomic import atomic_write_text
from diffkit.console import printable, to_jsonable
from diffkit.report.model import Report, ReportImage, ReportPaths, Section

SCHEMA = "diffkit.report/1"
DEFAULT_REPORTS_DIR = Path("reports")

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("diffkit.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def format_value(value: Any) -> str:
    """Human form of a number: 4 significant digits for small floats, thousands separators for ints."""
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e7):
            return f"{value:.4g}"
        return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"
    return str(value)


_env.filters["fmt"] = format_value
_env.filters["tojson_attr"] = lambda value: json.dumps(to_jsonable(value))


def relative_href(file_name: str) -> str:
    """A link to a file beside the page, and nothing else.

    ``./`` plus percent-encoding keeps a name such as ``javascript:alert(1).html`` (or one with
    ``#``, ``?`` or ``//``) a relative file link instead of a scheme, a fragment or another host.
    """
    return "./" + urllib.parse.quote(printable(file_name), safe="")


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def figure_to_data_uri(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return _data_uri(buffer.getvalue(), "image/png")


def image_to_data_uri(image: Image.Image | Path | str, max_size: int = 1024) -> str:
    """Embed an image; larger ones are shrunk to ``max_size`` so a contact sheet stays small."""
    if isinstance(image, Image.Image):
        picture = image.convert("RGB")
    else:
        with Image.open(image) as opened:
            picture = opened.convert("RGB")
    if max(picture.size) > max_size:
        picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return _data_uri(buffer.getvalue(), "image/png")


def _metadata() -> dict[str, str]:
    return {
        "diffkit_version": __version__,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
    }


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    return columns


def _section_view(section: Section) -> dict[str, Any]:
    table = [to_jsonable(row) for row in section.table] if section.table else None
    return {
        "heading": section.heading,
        "text": section.text,
        "badges": section.badges,
        "table": table,
        "columns": _columns(table) if table else [],
        "figure": figure_to_data_uri(section.figure) if section.figure is not None else None,
        "images": [_image_view(image) for image in section.images],
    }


def _image_view(image: ReportImage) -> dict[str, str]:
    return {"src": image_to_data_uri(image.image), "caption": image.caption}


def default_report_path(command: str, reports_dir: Path = DEFAULT_REPORTS_DIR) -> Path:
    """``reports/<command>-<YYYYmmdd-HHMMSS>.html``, with a counter if that name is taken."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = reports_dir / f"{command}-{stamp}.html"
    counter = 2
    while candidate.exists():
        candidate = reports_dir / f"{command}-{stamp}-{counter}.html"
        counter += 1
    return candidate


def report_json(report: Report, meta: dict[str, str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "title": report.title,
        "command": report.command,
        **meta,
        "summary": to_jsonable(report.summary),
        "sections": [
            {"heading": s.heading, "text": s.text, "badges": s.badges, "table": to_jsonable(s.table)}
            for s in report.sections
        ],
        "data": to_jsonable(report.data),
    }


def write_report(report: Report, path: Path | str | None = None) -> ReportPaths:
    """Write ``path`` (HTML) and the same name with ``.json``; both atomically. Returns both paths."""
    html_path = Path(path) if path is not None else default_report_path(report.command)
    if html_path.suffix.lower() not in {".html", ".htm"}:
        html_path = html_path.with_name(html_path.name + ".html")
    json_path = html_path.with_suffix(".json")
    meta = _metadata()
    html = _env.get_template("report.html").render(
        title=report.title,
        command=report.command,
        meta=meta,
        json_name=printable(json_path.name),
        json_href=relative_href(json_path.name),
        summary=to_jsonable(report.summary),
        sections=[_section_view(section) for section in report.sections],
    )
    atomic_write_text(json_path, json.dumps(report_json(report, meta), indent=2) + "\n", durable=False)
    # printable(): a non-UTF-8 file name in the report must not make the page unwritable.
    atomic_write_text(html_path, printable(html), durable=False)
    return ReportPaths(html=html_path, json=json_path)


def render_index(reports_dir: Path) -> tuple[str, int]:
    """HTML listing every report sidecar in ``reports_dir``, newest first, and how many it lists."""
    entries = []
    for json_path in sorted(reports_dir.glob("*.json")):
        html_path = json_path.with_suffix(".html")
        if json_path.is_symlink() or html_path.is_symlink() or not html_path.is_file():
            continue  # only pages that live in this folder are listed
        try:
            sidecar = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(sidecar, dict) or sidecar.get("schema") != SCHEMA:
            continue
        summary = sidecar.get("summary") or {}
        entries.append(
            {
                "created": sidecar.get("created", ""),
                "command": sidecar.get("command", ""),
                "title": sidecar.get("title", json_path.stem),
                "href": relative_href(html_path.name),
                "headline": list(summary.items())[:6],
            }
        )
    entries.sort(key=lambda entry: entry["created"], reverse=True)
    html = _env.get_template("index.html").render(
        title=f"diffkit reports in {reports_dir}",
        command="report",
        meta=_metadata(),
        json_name="",
        json_href="",
        entries=entries,
    )
    return html, len(entries)
