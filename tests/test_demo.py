"""The demo runs the whole pipeline end to end: scrape -> dedupe -> train -> sample -> eval."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from demo_run import DemoRun, shared_demo

from diffkit.demo import DemoConfig
from diffkit.errors import DiffkitError


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return shared_demo(tmp_path_factory)


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []
        self.pictures = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "a" and attributes.get("href"):
            self.hrefs.append(attributes["href"] or "")
        if tag == "img" and "picture" in (attributes.get("class") or ""):
            self.pictures += 1


def test_demo_end_to_end(demo: DemoRun) -> None:
    root, result = demo.root, demo.result
    images = sorted((root / "demo" / "data" / "images").rglob("*.jpg"))
    assert len(images) == 24
    assert list(result.seconds) == ["scrape", "dedupe", "train", "sample", "eval"]
    assert result.skipped == {}
    assert {"scrape", "dedupe", "train", "eval"} <= set(result.reports)
    for html in result.reports.values():
        assert (root / html).is_file() and (root / html).with_suffix(".json").is_file()
    assert len(list((root / "demo" / "run").glob("ema-*.safetensors"))) >= 1
    eval_numbers = json.loads((root / result.reports["eval"]).with_suffix(".json").read_text())["data"]
    assert eval_numbers["n_generated"] == 16 and eval_numbers["n_reference"] == 24
    assert math.isfinite(eval_numbers["fid"]) and eval_numbers["fid"] > 0
    index = (root / "reports" / "index.html").read_text(encoding="utf-8")
    assert all(Path(html).name in index for html in result.reports.values())


def test_demo_fid_carries_n_reference_engine_and_weights_everywhere(demo: DemoRun) -> None:
    """The demo's generated Inception weights are not the official file: every FID line says so."""
    root, result = demo.root, demo.result
    fid = json.loads((root / result.reports["eval"]).with_suffix(".json").read_text())["data"]["fid"]
    expected = "(reference 24, torch-fidelity, unofficial weights)"
    assert result.fid is not None and result.fid.startswith("FID@16 ") and result.fid.endswith(expected)
    assert f"{fid:,.1f}" in result.fid  # the FID itself, in the reports' one number format
    summary = "\n".join(result.summary_lines())
    assert result.fid in summary
    for page in (root / "reports" / "index.html", root / result.run_page):
        assert result.fid in page.read_text(encoding="utf-8"), page  # the index headline and the run page
    eval_sidecar = json.loads((root / result.reports["eval"]).with_suffix(".json").read_text())
    assert eval_sidecar["headline"] == result.fid
    assert eval_sidecar["summary"]["weights"] == "unofficial weights"


def test_demo_measures_fid_during_training_and_eval_reuses_its_reference_features(demo: DemoRun) -> None:
    """Halfway and at the end of its 4 steps, at the eval step's N, against the same 24 images."""
    root, result = demo.root, demo.result
    stats = [json.loads(line) for line in (root / "demo" / "run" / "stats.jsonl").read_text().splitlines()]
    evals = [record for record in stats if record.get("kind") == "eval"]
    assert [(record["step"], record["n"], record["n_reference"]) for record in evals] == [
        (2, 16, 24),
        (4, 16, 24),
    ]
    assert all(math.isfinite(record["fid"]) and record["fid"] > 0 for record in evals)
    expected = "(reference 24, torch-fidelity, unofficial weights)"
    assert result.train_fid == evals[-1]["headline"] and result.train_fid.startswith("FID@16 ")
    assert result.train_fid.endswith(expected) and result.train_fid in result.steps["train"]
    train_html = (root / result.reports["train"]).read_text(encoding="utf-8")
    assert "<h2>FID during training</h2>" in train_html and result.train_fid in train_html
    eval_numbers = json.loads((root / result.reports["eval"]).with_suffix(".json").read_text())["data"]
    # extracted once, while training (a real check on a cold feature cache; test_train_eval has its own)
    assert eval_numbers["feature_cache"]["inception_reference"] == "hit"


def test_demo_ends_with_its_run_page_linking_every_stage(demo: DemoRun) -> None:
    root, result = demo.root, demo.result
    assert result.run_page is not None
    lines = result.summary_lines()
    assert lines[-1].endswith(str(result.run_page))  # the last thing the demo prints
    page = root / result.run_page
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    linked = {href.removeprefix("./") for href in parser.hrefs}
    assert {Path(html).name for html in result.reports.values()} <= linked  # all five stage reports
    assert all(href.startswith("./") for href in parser.hrefs)  # relative file links only
    # the pictures of the stages: scrape thumbnails (6 of 24), train progression and grids, the
    # sample grid and denoising animation, the eval sample grid
    assert parser.pictures >= 6 + 2 + 1 + 1
    sidecar = json.loads(page.with_suffix(".json").read_text())
    assert sidecar["command"] == "run" and sidecar["data"]["run"] == "demo/run"
    assert set(sidecar["data"]["reports"]) == set(result.reports)


def test_demo_says_which_stage_it_is_in_and_where_the_time_went(demo: DemoRun) -> None:
    """A stage line when each stage starts and one with its seconds when it ends, in the order run."""
    from diffkit.demo import STAGES

    lines = demo.result.timeline
    assert len(lines) == 2 * len(STAGES)
    for index, name in enumerate(STAGES):
        started, ended = lines[2 * index], lines[2 * index + 1]
        assert started == f"[{index + 1}/{len(STAGES)}] {name}: started"
        assert ended.startswith(f"[{index + 1}/{len(STAGES)}] {name}: {demo.result.seconds[name]:.1f} s")
    totals = [float(line.split("so far ")[1].split(" s")[0]) for line in lines[1::2]]
    assert totals == sorted(totals) and totals[-1] >= sum(demo.result.seconds.values()) - 0.2


def test_demo_rejects_impossible_settings() -> None:
    with pytest.raises(DiffkitError, match="eval-samples"):
        DemoConfig(n_images=20, eval_samples=50).validate()
