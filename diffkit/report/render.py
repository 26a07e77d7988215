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
import re
import urllib.parse
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
from PIL import Image

from diffkit import __version__
from diffkit.atomic import atomic_write_text
from diffkit.console import printable, to_jsonable
from diffkit.report.model import Report, ReportImage, ReportPaths, Section
from diffkit.report.sidecars import SCHEMA

DEFAULT_REPORTS_DIR = Path("reports")

# Characters that hide text or change the order it shows in (C0/C1 controls other than tab and line
# breaks, bidi overrides, embeddings, isolates and marks, zero-width space, BOM, line separators) and
# lone surrogates (a file name that is not UTF-8). Autoescape keeps markup literal; these stay literal
# only when written out. ZWJ/ZWNJ stay: emoji and several scripts need them.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u2028-\u202e"
    "\u2066-\u2069\ufeff\ud800-\udfff]"
)


def _escape_invisible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not UTF-8, as Python decodes file names
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code > 0xFF else f"\\x{code:02x}"


def visible(text: str) -> str:
    """``text`` with every invisible or reordering character written out (``\\u202e``, ``\\x1b``).

    A class label or file name with a right-to-left override would otherwise show reversed text in a
    page or a model card, and one with an escape code could rewrite a terminal line.
    """
    return _INVISIBLE.sub(_escape_invisible, text)


def _finalize(value: Any) -> Any:
    """Every ``{{ }}`` of every page: user strings made visible (already rendered markup is left)."""
    if isinstance(value, str) and not isinstance(value, markupsafe.Markup):
        return visible(value)
    return value


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("diffkit.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    finalize=_finalize,
)


def format_value(value: Any) -> str:
    """Human form of a number, the same rule everywhere: 4 significant digits, thousands separators.

    Floats of 1,000 and above keep one decimal (``31,727.1``); below that 4 significant digits
    (``21.26``, ``0.07692``), with an exponent only outside 1e-3 .. 1e7. The exact value stays in
    the JSON sidecar and in each cell's ``data-value``.
    """
    if isinstance(value, bool) or value is None:
        return "—" if value is None else str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e7):
            return f"{value:.4g}"
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


# Words a snake_case key spells differently as a label.
_LABEL_WORDS = {
    "n": "N",
    "fid": "FID",
    "kid": "KID",
    "is": "IS",
    "ema": "EMA",
    "lr": "LR",
    "url": "URL",
    "id": "ID",
    "amp": "AMP",
    "gpu": "GPU",
    "cpu": "CPU",
    "sha256": "SHA-256",
    "ci95": "95% CI",
    "kimg": "kimg",
    "px": "px",
}
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[_.][A-Za-z0-9]+)*")
_LOWER_PROSE = re.compile(r"[a-z][a-z0-9 /%()-]*")


def label(key: Any) -> Any:
    """``batch_size`` -> ``Batch size``, ``model.channel_mult`` -> ``Model · channel mult``.

    Only identifiers change: a heading that is already prose (``kept this run``, ``FID@16``) or
    any other text is returned as it is. The raw key stays in the JSON sidecar.
    """
    if not isinstance(key, str) or key.isupper():
        return key
    if not _IDENTIFIER.fullmatch(key):
        return key[0].upper() + key[1:] if _LOWER_PROSE.fullmatch(key) else key
    parts = []
    for dotted in key.split("."):
        words = [_LABEL_WORDS.get(word.lower(), word) for word in dotted.split("_")]
        parts.append(" ".join(words).replace(" per s", "/s"))
    text = " · ".join(parts)
    first = key.split("_")[0].split(".")[0].lower()
    return text if first in _LABEL_WORDS else text[0].upper() + text[1:]


# Text with a token longer than this (a sha256 path, a URL) may break anywhere to stay in its card;
# shorter words wrap only between words.
LONG_TOKEN = 24

# Columns whose cells are names of settings or fields: shown as labels, like the headers.
LABEL_COLUMNS = frozenset({"option", "field", "key", "setting", "parameter"})


_env.filters["fmt"] = format_value
_env.filters["label"] = label
_env.tests["unbreakable"] = lambda value: (
    isinstance(value, str) and any(len(token) > LONG_TOKEN for token in value.split())
)
_env.globals["label_columns"] = LABEL_COLUMNS
_env.filters["tojson_attr"] = lambda value: json.dumps(to_jsonable(value))


def relative_href(file_name: str) -> str:
    """A link to a file beside the page, and nothing else.

    ``./`` plus percent-encoding keeps a name such as ``javascript:alert(1).html`` (or one with
    ``#``, ``?`` or ``//``) a relative file link instead of a scheme, a fragment or another host.
    """
    return "./" + urllib.parse.quote(printable(file_name), safe="")


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# Plots are drawn about the width of a report's card, so that shown at 100% they are sharp.
PLOT_WIDTH_PX = 1250  # before bbox "tight" trims the margins: ~1,060 px, a card at 1280 px


def figure_to_data_uri(figure: Any) -> str:
    """A plot as a PNG data URI, drawn ~PLOT_WIDTH_PX wide whatever its size in inches."""
    buffer = io.BytesIO()
    dpi = min(200.0, max(72.0, PLOT_WIDTH_PX / figure.get_figwidth()))
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return _data_uri(buffer.getvalue(), "image/png")


_ANIMATED_MIME = {"GIF": "image/gif", "WEBP": "image/webp", "PNG": "image/png"}


def image_to_data_uri(image: Image.Image | Path | str, max_size: int = 1024) -> str:
    """Embed an image; larger ones are shrunk to ``max_size`` so a contact sheet stays small.

    An animated file (GIF, WebP, APNG) is embedded byte for byte so that it plays in the page.
    """
    if isinstance(image, Image.Image):
        picture = image.convert("RGB")
    else:
        with Image.open(image) as opened:
            if getattr(opened, "is_animated", False) and opened.format in _ANIMATED_MIME:
                return _data_uri(Path(image).read_bytes(), _ANIMATED_MIME[opened.format])
            picture = opened.convert("RGB")
    if max(picture.size) > max_size:
        picture.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return _data_uri(buffer.getvalue(), "image/png")


def report_metadata() -> dict[str, str]:
    """Who wrote a page, when and where: the same block on every page and in every sidecar."""
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


def render_template(name: str, **context: Any) -> str:
    """One of the package's templates (report, index, run page), with the filters every page shares."""
    return _env.get_template(name).render(**context)


def report_json(report: Report, meta: dict[str, str]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "title": report.title,
        "command": report.command,
        **meta,
        "headline": report.headline,
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
    meta = report_metadata()
    html = render_template(
        "report.html",
        title=report.title,
        command=report.command,
        headline=report.headline,
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
