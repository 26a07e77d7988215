"""Reports: escaping of hostile text, and the JSON sidecar agreeing with the HTML's numbers."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from diffkit.report import (
    IndexConfig,
    Report,
    ReportImage,
    Section,
    build_index,
    format_value,
    line_plot,
    write_report,
)

HOSTILE = '<script>alert("x")</script>&.jpg'
HOSTILE_FILE_NAME = '<script>alert("x")&.jpg'  # a file name cannot hold "/", so no closing tag here


class _CellCollector(HTMLParser):
    """Collects script tags and every ``data-value`` cell, keyed by its row header in the summary."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts = 0
        self.values: list[object] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "td" and "data-value" in attributes:
            self.values.append(json.loads(attributes["data-value"] or "null"))
        if tag == "img":
            self.images.append(attributes.get("src") or "")


def _hostile_report(tmp_path: Path) -> Report:
    image_path = tmp_path / "face.png"
    Image.new("RGB", (2000, 1000), (200, 120, 90)).save(image_path)
    return Report(
        title=f"Scrape of {HOSTILE}",
        command="scrape",
        summary={"kept": 1234, "duplicate_rate": 0.0123456789, "url": HOSTILE, "fid": 25.8123},
        sections=[
            Section(
                heading=f"Rejected {HOSTILE}",
                text=f"file {HOSTILE} was rejected",
                badges=[HOSTILE],
                table=[{"file": HOSTILE, "bytes": 17}, {"file": "b.jpg", "bytes": 3, "extra": 1.5}],
            ),
            Section(heading="Plot", figure=line_plot({"loss": ([0, 1, 2], [3.0, 2.0, 1.0])}, "step", "loss")),
            Section(
                heading="Images",
                images=[ReportImage(image_path, HOSTILE), ReportImage(Image.new("RGB", (8, 8)))],
            ),
        ],
        data={"nested": {"numbers": [1, 2, 3]}},
    )


def test_hostile_names_render_escaped(tmp_path: Path) -> None:
    paths = write_report(_hostile_report(tmp_path), tmp_path / f"{HOSTILE_FILE_NAME}.html")
    html = paths.html.read_text(encoding="utf-8")
    parser = _CellCollector()
    parser.feed(html)
    assert parser.scripts == 0
    assert "<script>" not in html
    assert "&lt;script&gt;alert(" in html
    assert paths.html.name == f"{HOSTILE_FILE_NAME}.html"
    assert paths.json.name == f"{HOSTILE_FILE_NAME}.json"
    assert "&lt;script&gt;alert(&#34;x&#34;)&amp;.jpg.json" in html  # the footer link to the sidecar


def test_sidecar_matches_html_numbers(tmp_path: Path) -> None:
    report = _hostile_report(tmp_path)
    paths = write_report(report, tmp_path / "r.html")
    sidecar = json.loads(paths.json.read_text(encoding="utf-8"))
    parser = _CellCollector()
    parser.feed(paths.html.read_text(encoding="utf-8"))
    summary_values = list(sidecar["summary"].values())
    table = sidecar["sections"][0]["table"]
    table_values = [row.get(column) for row in table for column in ("file", "bytes", "extra")]
    assert parser.values == summary_values + table_values
    assert sidecar["summary"]["duplicate_rate"] == 0.0123456789
    assert sidecar["data"] == {"nested": {"numbers": [1, 2, 3]}}
    assert sidecar["schema"] == "diffkit.report/1" and sidecar["command"] == "scrape"


def test_images_and_plots_are_embedded_and_shrunk(tmp_path: Path) -> None:
    paths = write_report(_hostile_report(tmp_path), tmp_path / "r.html")
    parser = _CellCollector()
    parser.feed(paths.html.read_text(encoding="utf-8"))
    assert len(parser.images) == 3
    assert all(src.startswith("data:image/png;base64,") for src in parser.images)
    import base64
    import io

    big = Image.open(io.BytesIO(base64.b64decode(parser.images[1].split(",", 1)[1])))
    assert big.size == (1024, 512)


def test_default_path_never_overwrites(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    first = write_report(Report(title="a", command="eval", summary={"fid": 1.0}))
    second = write_report(Report(title="b", command="eval", summary={"fid": 2.0}))
    assert first.html != second.html
    assert first.html.parent == Path("reports")
    assert json.loads(first.json.read_text())["summary"]["fid"] == 1.0


def test_index_lists_reports(tmp_path: Path) -> None:
    write_report(Report(title="one", command="scrape", summary={"kept": 5}), tmp_path / "a.html")
    write_report(Report(title="two", command="eval", summary={"fid": 3.5}), tmp_path / "b.html")
    (tmp_path / "junk.json").write_text("not json")
    result = build_index(IndexConfig(reports_dir=tmp_path))
    html = result.index.read_text(encoding="utf-8")
    assert result.n_reports == 2
    assert 'href="./a.html"' in html and 'href="./b.html"' in html


def test_format_value() -> None:
    assert format_value(1234567) == "1,234,567"
    assert format_value(0.5) == "0.5"
    assert format_value(25.81234) == "25.8123"
    assert format_value(0.00009) == "9e-05"
    assert format_value(None) == "—"
    assert format_value(True) == "true"

