"""A report only when a command did work, or when ``--report`` asks for one (issue 25.6, docs/reports.md).

Every test runs in its own folder (``monkeypatch.chdir``), so the default ``reports/`` is the test's own
and its exact listing is asserted before and after the run that must leave it alone.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.fakesite.site import FaceSite, SiteConfig
from diffkit.scrape.config import ScrapeConfig
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.run import scrape

FAST = dict(rps=200.0, concurrency=2, timeout_s=2.0, backoff_base_s=0.01, backoff_cap_s=0.1, progress=False)


def listing(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, sorted): what a no-op run must leave exactly as it was."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _scrape(site: FaceSite, out: Path, n: int, **changes: object) -> ScrapeResult:
    return scrape(ScrapeConfig(n=n, out=out, url=site.url, seed=0, **{**FAST, **changes}))  # type: ignore[arg-type]


def test_scrape_twice_with_the_same_n_writes_one_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=32)) as site:
        first = _scrape(site, out, 4)
        reports = listing(tmp_path / "reports")
        assert len(reports) == 2 and first.report_html is not None and first.report_skipped is None
        assert reports == sorted(
            [Path(first.report_html).name, Path(first.report_html).with_suffix(".json").name]
        )

        again = _scrape(site, out, 4)  # a resume that already holds --n: no request, no report
        assert listing(tmp_path / "reports") == reports
        assert again.requests == 0 and again.kept_new == 0 and again.kept_total == 4
        assert again.report_html is None and again.report_json is None
        assert again.report_skipped == "nothing to do: 4 of 4 images already kept"
        assert (
            "nothing to do: 4 of 4 images already kept; no report (pass --report to write one)"
            in again.summary_lines()
        )

        fewer = _scrape(site, out, 3)  # a smaller --n than the folder holds: nothing to do either
        assert fewer.report_skipped == "nothing to do: 4 images already kept (--n 3)"
        assert listing(tmp_path / "reports") == reports

        asked = _scrape(site, out, 4, report_path=tmp_path / "asked" / "x.html")  # --report X: always
        assert asked.requests == 0 and asked.report_skipped is None
        assert asked.report_html == str(tmp_path / "asked" / "x.html")
        assert listing(tmp_path / "asked") == ["x.html", "x.json"]
        assert listing(tmp_path / "reports") == reports

        more = _scrape(site, out, 6)  # a larger --n fetches: a report again
        assert more.kept_new == 2 and more.report_skipped is None and more.report_html is not None
        assert len(listing(tmp_path / "reports")) == 4


def test_scrape_no_report_is_said_in_text_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with FaceSite(SiteConfig(size=32)) as site:
        base = ["scrape", "--n", "3", "--out", "faces", "--url", site.url, "--rps", "200", "--no-progress"]
        first = CliRunner().invoke(app, [*base, "--json"])
        assert first.exit_code == 0, first.output
        reports = listing(tmp_path / "reports")
        assert len(reports) == 2

        again = CliRunner().invoke(app, [*base, "--json"])
        assert again.exit_code == 0, again.output
        data = json.loads(again.stdout)
        assert data["report_skipped"] == "nothing to do: 3 of 3 images already kept"
        assert data["report_html"] is None and data["kept_new"] == 0

        text = CliRunner().invoke(app, base)
        assert text.exit_code == 0, text.output
        assert (
            "nothing to do: 3 of 3 images already kept; no report (pass --report to write one)" in text.stdout
        )
        assert listing(tmp_path / "reports") == reports


# Train as tests/test_train.py does: the tiny U-Net at 16 px, fp32, a 4-image grid of 3 DDIM steps.
TRAIN = dict(
    preset="tiny",
    resolution=16,
    batch_size=8,
    device="cpu",
    precision="fp32",
    progress=False,
    sample_every_kimg=0.0,
    sample_grid=4,
    sample_steps=3,
    log_every_steps=1,
)


def test_a_resume_already_at_its_target_writes_no_report(
    faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffkit.train.config import TrainConfig
    from diffkit.train.run import train

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    first = train(TrainConfig(data=faces, out=run, steps=2, **TRAIN))  # type: ignore[arg-type]
    reports = listing(tmp_path / "reports")
    assert first.report is not None and first.report_skipped is None
    assert reports == [first.report.name, first.report.with_suffix(".json").name]

    again = train(TrainConfig(data=faces, out=run, steps=2, resume=True, **TRAIN))  # type: ignore[arg-type]
    assert again.step == again.resumed_from_step == 2 and again.report is None
    assert again.report_skipped == f"nothing to do: {run} is already at step 2 of 2"
    assert listing(tmp_path / "reports") == reports
    assert (
        f"nothing to do: {run} is already at step 2 of 2; no report (a longer --steps/--kimg/--epochs "
        "trains on)" in again.summary_lines()
    )
    # A report asked for by name (TrainConfig.given, as the CLI fills it) is written all the same.
    asked = TrainConfig(data=faces, out=run, steps=2, resume=True, given=frozenset({"report"}), **TRAIN)
    forced = train(asked)  # type: ignore[arg-type]
    assert forced.report is not None and forced.report_skipped is None
    assert len(listing(tmp_path / "reports")) == 4

    more = train(TrainConfig(data=faces, out=run, steps=3, resume=True, **TRAIN))  # type: ignore[arg-type]
    assert more.step == 3 and more.report is not None and more.report_skipped is None
    assert len(listing(tmp_path / "reports")) == 6
