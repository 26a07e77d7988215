"""Reports: escaping of hostile text, and the JSON sidecar agreeing with the HTML's numbers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

from PIL import Image

from diffkit.report.index import IndexConfig, build_index
from diffkit.report.model import Report, ReportImage, Section
from diffkit.report.plots import line_plot
from diffkit.report.render import format_value, label, write_report

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
    """One rule for every number: 4 significant digits, one decimal with separators from 1,000."""
    assert format_value(1234567) == "1,234,567"
    assert format_value(0.5) == "0.5"
    assert format_value(25.81234) == "25.81"
    assert format_value(21.2638) == "21.26"  # the scrape report's unrounded rate
    assert format_value(7399.032085) == "7,399.0" and format_value(31727.11) == "31,727.1"
    assert format_value(13.539717) == "13.54"
    assert format_value(0.0769230769) == "0.07692"
    assert format_value(0.00009) == "9e-05"
    assert format_value(None) == "—"
    assert format_value(True) == "true"


def test_labels_for_keys_headers_and_option_columns(tmp_path: Path) -> None:
    assert label("batch_size") == "Batch size" and label("n_generated") == "N generated"
    assert label("model.channel_mult") == "Model · channel mult" and label("img_per_s") == "Img/s"
    assert label("kimg") == "kimg" and label("ema_halflife_kimg") == "EMA halflife kimg"
    assert label("FID@16 (reference 24)") == "FID@16 (reference 24)"  # prose and names stay
    assert label("images/ab/ab_cd.jpg") == "images/ab/ab_cd.jpg"
    report = Report(
        title="t",
        command="train",
        summary={"final_loss": 0.25},
        sections=[Section(heading="Config", table=[{"option": "warmup_kimg", "value": 2.0}])],
    )
    html = write_report(report, tmp_path / "r.html").html.read_text(encoding="utf-8")
    assert '<th title="final_loss">Final loss</th>' in html
    assert '<th title="option">Option</th>' in html
    assert 'data-value="&#34;warmup_kimg&#34;">Warmup kimg</td>' in html  # the raw key kept in data-value
    assert "warmup_kimg</td>" not in html


def test_log_axis_ticks_are_plain_numbers() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = line_plot({"loss": ([0, 1, 2, 3], [0.31, 0.27, 0.26, 0.22])}, "kimg", "loss", logy=True)
    FigureCanvasAgg(figure).draw()
    axes = figure.axes[0]
    low, high = axes.get_ylim()
    labels = [
        tick.get_text()
        for tick in [*axes.get_yticklabels(), *axes.get_yticklabels(minor=True)]
        if tick.get_text() and low <= tick.get_position()[1] <= high
    ]
    assert labels and "0.3" in labels, labels
    assert all(float(text) > 0 and "10" not in text and "e" not in text for text in labels), labels


def test_plots_fill_the_card_and_long_names_wrap(tmp_path: Path) -> None:
    """Plots are drawn the card's width; the CSS lets sha256 paths wrap inside their card."""
    import base64
    import io

    report = Report(
        title="t",
        command="x",
        sections=[Section(heading="p", figure=line_plot({"a": ([0, 1], [1, 2])}, "x", "y"))],
    )
    html = write_report(report, tmp_path / "r.html").html.read_text(encoding="utf-8")
    parser = _CellCollector()
    parser.feed(html)
    plot = Image.open(io.BytesIO(base64.b64decode(parser.images[0].split(",", 1)[1])))
    assert 1000 <= plot.width <= 1250
    assert "figure.plot img { width: 100%;" in html and "overflow-wrap: anywhere" in html


def test_animated_images_are_embedded_as_they_are(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    gif = tmp_path / "denoise.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    report = Report(title="t", command="sample", sections=[Section(heading="a", images=[ReportImage(gif)])])
    html = write_report(report, tmp_path / "r.html").html.read_text(encoding="utf-8")
    parser = _CellCollector()
    parser.feed(html)
    import base64

    assert parser.images[0].startswith("data:image/gif;base64,")
    assert base64.b64decode(parser.images[0].split(",", 1)[1]) == gif.read_bytes()


def _stage(
    folder: Path, name: str, command: str, data: dict, headline: str = "", picture: bool = False
) -> None:
    images = [ReportImage(Image.new("RGB", (16, 16), (9, 9, 9)), f"{command} picture")] if picture else []
    sections = [
        Section(heading=f"{command} pictures", images=images),
        Section(heading="Caveats", text=f"{command} caveat"),
    ]
    report = Report(
        title=f"{command} {name}",
        command=command,
        summary={"n": 1},
        sections=sections,
        data=data,
        headline=headline,
    )
    write_report(report, folder / f"{command}-{name}.html")


def test_run_pages_link_the_stages_of_each_dataset_and_run(tmp_path: Path) -> None:
    """Sidecars name their folders as each command records them (relative or absolute): one page per run."""
    reports = tmp_path / "reports"
    reports.mkdir()
    data = str(tmp_path / "data")  # dedupe and train record it absolute, scrape relative
    _stage(reports, "1", "scrape", {"out": "data"}, picture=True)
    _stage(reports, "1", "dedupe", {"directory": data}, picture=True)
    for run in ("runs/00000-tiny", "runs/00001-tiny"):
        tag = run[-10:-5]
        _stage(
            reports,
            tag,
            "train",
            {"config": {"train": {"data": data, "out": run, "batch_size": 8}}},
            picture=True,
        )
        _stage(
            reports, tag, "sample", {"result": {"snapshot": f"{run}/ema-000001.safetensors"}}, picture=True
        )
    fid = "FID@16 6,534.8 (reference 24, torch-fidelity, unofficial weights)"
    made = "ema-000001.safetensors of runs/00001-tiny (1 kimg), DDIM 50 steps, seed 0, N=16"
    provenance = {"run": "runs/00001-tiny", "snapshot": "runs/00001-tiny/ema-000001.safetensors"}
    _stage(
        reports,
        "1",
        "eval",
        {"reference": data, "n_reference": 24, "provenance": provenance, "made_by": made, "config": {}},
        headline=fid,
        picture=True,
    )
    # An eval of two folders whose reference is the runs' data: its images came from no known run.
    stranger = "FID@16 53.79 (reference 24, torch-fidelity, unofficial weights)"
    _stage(reports, "3", "eval", {"reference": data, "provenance": None, "config": {}}, headline=stranger)
    _stage(reports, "2", "scrape", {"out": "other"})  # a dataset with no run yet

    result = build_index(IndexConfig(reports_dir=reports))

    assert len(result.run_pages) == 4
    sidecars = {p: json.loads(p.with_suffix(".json").read_text()) for p in result.run_pages}
    pages = {(s["data"]["run"] or s["data"]["dataset"]): p for p, s in sidecars.items()}
    pages[None] = pages.pop("other")
    assert set(pages) == {"runs/00000-tiny", "runs/00001-tiny", None, data}
    second = json.loads(pages["runs/00001-tiny"].with_suffix(".json").read_text())
    assert second["data"]["reports"] == {
        "scrape": ["scrape-1.html"], "dedupe": ["dedupe-1.html"], "train": ["train-00001.html"],
        "sample": ["sample-00001.html"], "eval": ["eval-1.html"],
    }  # fmt: skip
    assert second["headline"] == f"{fid} — generated: {made}; reference: {data}, M=24"
    # the stranger eval is on its reference's own page, credited to no run
    assert json.loads(pages[data].with_suffix(".json").read_text())["data"] == {
        "dataset": data, "run": None, "reports": {"eval": ["eval-3.html"]}
    }  # fmt: skip
    assert all(stranger not in p.read_text() for p in result.run_pages if p != pages[data])
    first = json.loads(pages["runs/00000-tiny"].with_suffix(".json").read_text())
    assert set(first["data"]["reports"]) == {"scrape", "dedupe", "train", "sample"}
    assert json.loads(pages[None].with_suffix(".json").read_text())["data"]["reports"] == {
        "scrape": ["scrape-2.html"]
    }
    html = pages["runs/00001-tiny"].read_text(encoding="utf-8")
    parser = _CellCollector()
    parser.feed(html)
    assert len(parser.images) == 5 and all(src.startswith("data:image/png;base64,") for src in parser.images)
    for command in ("scrape", "dedupe", "train", "sample", "eval"):
        assert f'href="./{command}-' in html and f"{command} caveat" in html
    assert "Batch size" in html  # the train config, labelled
    index = result.index.read_text(encoding="utf-8")
    assert all(f'href="./{page.name}"' in index for page in result.run_pages) and fid in index
    assert result.page_for_run(Path("runs/00001-tiny")) == pages["runs/00001-tiny"]
    rebuilt = build_index(IndexConfig(reports_dir=reports))  # run pages are not taken for stage reports
    assert (
        sorted(rebuilt.run_pages) == sorted(result.run_pages) and rebuilt.n_reports == result.n_reports == 9
    )


def _plot_headings(html: str) -> list[str]:
    return re.findall(r'<img class="plot" alt="([^"]*)" src="data:image/png;base64,', html)


def test_an_interrupted_run_leads_with_its_training_state_and_shows_its_curves(tmp_path: Path) -> None:
    """Not the scrape's headline: the run's own state first, its last FID labelled with what made the
    images; the loss, FID and KID curves are drawn from the train report's stats."""
    reports = tmp_path / "reports"
    reports.mkdir()
    data = str(tmp_path / "data")
    _stage(reports, "1", "scrape", {"out": data}, headline="24 images from fake.example (0 failed)")
    stats = [{"kimg": 0.008 * i, "step": 2 * i, "loss": 1.0 / i} for i in range(1, 6)]
    evals = [
        {"kind": "eval", "kimg": kimg, "step": 10, "fid": fid, "kid": 0.5, "n": 16, "n_reference": 24,
         "fid_label": "FID@16 (ref 24)", "headline": f"FID@16 {fid} (reference 24, torch-fidelity)",
         "sampler": "dpmpp", "sampler_steps": 25, "seed": 0}
        for kimg, fid in ((0.016, 400.0), (0.04, 300.5))
    ]  # fmt: skip
    train_data = {"config": {"train": {"data": data, "out": "runs/00002-tiny"}}, "stats": stats + evals}
    report = Report(
        title="Training 00002-tiny", command="train", data=train_data,
        summary={"run": "runs/00002-tiny", "status": "interrupted", "steps": 12, "kimg": 0.048},
    )  # fmt: skip
    write_report(report, reports / "train-2.html")
    _stage(
        reports, "3", "train", {"config": {"train": {"data": data, "out": "runs/00003-tiny"}}, "stats": stats}
    )

    result = build_index(IndexConfig(reports_dir=reports))
    pages = {json.loads(p.with_suffix(".json").read_text())["data"]["run"]: p for p in result.run_pages}
    interrupted = json.loads(pages["runs/00002-tiny"].with_suffix(".json").read_text())
    assert interrupted["headline"] == (
        "Training interrupted at 0.048 kimg (step 12); last FID@16 300.5 (reference 24, torch-fidelity) — "
        "generated during training: the EMA weights at 0.04 kimg, DPMPP 25 steps, seed 0, N=16; "
        f"reference: {data}, M=24"
    )
    html = pages["runs/00002-tiny"].read_text(encoding="utf-8")
    assert _plot_headings(html) == ["Loss", "FID during training", "KID during training"]
    assert "24 images from fake.example" in html  # the scrape still has its section, below
    assert html.index("Training interrupted") < html.index("24 images from fake.example")
    finished = pages["runs/00003-tiny"].read_text(encoding="utf-8")
    assert _plot_headings(finished) == ["Loss"]  # no evaluation while training: no FID curve


class _IndexOutline(HTMLParser):
    """The index's report listing as [(heading, [report links])], in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.outline: list[tuple[str, list[str]]] = []
        self._in: str | None = None
        self._listing = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "section":
            self._listing = dict(attrs).get("id") == "reports"
        elif self._listing and tag in ("h3", "h4"):
            self._in = tag
            self.outline.append(("", []))
        elif self._listing and tag == "a" and self._in is None and self.outline:
            self.outline[-1][1].append(str(dict(attrs).get("href")))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h3", "h4"):
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            heading, links = self.outline[-1]
            self.outline[-1] = (heading + data, links)


def test_the_index_groups_reports_by_dataset_and_run_newest_first(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    train = {"config": {"train": {"data": a, "out": "runs/1"}}}
    made = [
        ("scrape", "a", {"out": a}, "10:00"),
        ("dedupe", "a", {"directory": a}, "10:05"),
        ("train", "1", train, "10:10"),
        ("train", "2", {"config": {"train": {"data": a, "out": "runs/2"}}}, "10:20"),
        ("scrape", "b", {"out": b}, "10:30"),
        ("eval", "1", {"reference": a, "provenance": {"run": "runs/1"}, "config": {}}, "11:00"),
        ("bench", "x", {}, "12:00"),  # names no dataset and no run
    ]
    for command, name, data, created in made:
        _stage(reports, name, command, data)
        sidecar = reports / f"{command}-{name}.json"
        sidecar.write_text(sidecar.read_text().replace(json.loads(sidecar.read_text())["created"],
                                                       f"2026-01-01 {created}:00 UTC"))  # fmt: skip
    result = build_index(IndexConfig(reports_dir=reports))
    parser = _IndexOutline()
    parser.feed(result.index.read_text(encoding="utf-8"))
    assert parser.outline == [
        (f"Dataset {a}", ["./dedupe-a.html", "./scrape-a.html"]),
        ("Run runs/1", ["./eval-1.html", "./train-1.html"]),
        ("Run runs/2", ["./train-2.html"]),
        (f"Dataset {b}", ["./scrape-b.html"]),
        ("Other reports", ["./bench-x.html"]),
    ]


def test_help_reads_finished_flags_usage_wrapping_and_completion() -> None:
    """--json is a flag (no <bool>), dedupe's usage says DIR (not {DIR}), docstrings reflow, completion on."""
    from typer.testing import CliRunner

    from diffkit.cli import app

    def help_of(*args: str) -> str:
        result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert result.exit_code == 0, result.output
        return result.output

    dedupe = help_of("dedupe")
    assert "Usage: diffkit dedupe [OPTIONS] DIR " in dedupe and "{DIR}" not in dedupe
    assert "<bool>" not in dedupe and "--json" in dedupe
    lines = {line.strip(" │") for line in dedupe.splitlines()}
    # the paragraph reflows at the terminal's width: no line ends after "then" (the source's break)
    assert not any(line.endswith("earliest (scrape time or file time), then") for line in lines)
    assert "--install-completion" in help_of()
    for command in ("scrape", "train", "sample", "eval", "report", "demo"):
        assert "<bool>" not in help_of(command), command


def test_a_run_stopped_on_its_time_budget_says_so_not_trained(tmp_path: Path) -> None:
    """`train --max-minutes` ends a session that is resumable, not finished: the run page says which."""
    reports = tmp_path / "reports"
    reports.mkdir()
    report = Report(
        title="Training 00004-tiny", command="train",
        data={"config": {"train": {"data": str(tmp_path / "data"), "out": "runs/00004-tiny"}}, "stats": []},
        summary={"run": "runs/00004-tiny", "status": "stopped on the time budget", "steps": 7, "kimg": 0.028},
    )  # fmt: skip
    write_report(report, reports / "train-4.html")
    result = build_index(IndexConfig(reports_dir=reports))
    (page,) = result.run_pages
    headline = json.loads(page.with_suffix(".json").read_text())["headline"]
    assert headline == "Training stopped on the time budget at 0.028 kimg (step 7)"
