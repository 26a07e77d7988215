"""A report only when a command did work, or when ``--report`` asks for one (issue 25.6, docs/reports.md).

Every test runs in its own folder (``monkeypatch.chdir``), so the default ``reports/`` is the test's own
and its exact listing is asserted before and after the run that must leave it alone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.dedupe.config import DedupeConfig
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.run import dedupe
from diffkit.fakesite.faces import write_face_folder
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

        (out / ".half-written.tmp").write_bytes(b"left by a killed run")  # the reconcile repairs it: work
        repaired = _scrape(site, out, 4)
        assert repaired.requests == 0 and repaired.reconcile["temp_files_removed"] == 1
        assert repaired.report_html is not None and repaired.report_skipped is None
        reports = listing(tmp_path / "reports")
        assert len(reports) == 4

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
        assert len(listing(tmp_path / "reports")) == 6


def test_a_url_list_already_fetched_writes_no_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffkit.scrape.config import ALL_LISTED
    from diffkit.scrape.listrun import scrape_urls

    monkeypatch.chdir(tmp_path)
    listed = tmp_path / "list.txt"
    with FaceSite(SiteConfig(seed=1, size=32, image_prefix="/img/")) as site:
        listed.write_text("\n".join(f"{site.base_url}/img/{i}.jpg" for i in range(3)) + "\n")

        def run() -> ScrapeResult:
            config = ScrapeConfig(n=ALL_LISTED, out=tmp_path / "listed", urls=listed, seed=0, **FAST)  # type: ignore[arg-type]
            return scrape_urls(config)

        first = run()
        reports = listing(tmp_path / "reports")
        assert first.kept_new == 3 and len(reports) == 2
        again = run()
        assert again.requests == 0 and again.report_html is None and listing(tmp_path / "reports") == reports
        assert (
            again.report_skipped == f"nothing to do: every URL of {listed} was fetched before (3 images kept)"
        )


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
    # `report = true` in a --config file asks for the report by name (TrainConfig.given): written.
    (tmp_path / "report.toml").write_text("report = true\n")
    args = ["train", "--out", str(run), "--resume", "--config", "report.toml", "--no-progress", "--json"]
    forced = CliRunner().invoke(app, args)
    assert forced.exit_code == 0, forced.output
    data = json.loads(forced.stdout)
    assert data["report"] is not None and data["report_skipped"] is None and data["step"] == 2
    assert len(listing(tmp_path / "reports")) == 4
    plain = CliRunner().invoke(app, args[:4] + ["--no-progress", "--json"])  # the CLI without the file: none
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["report_skipped"] == f"nothing to do: {run} is already at step 2 of 2"
    assert len(listing(tmp_path / "reports")) == 4

    more = train(TrainConfig(data=faces, out=run, steps=3, resume=True, **TRAIN))  # type: ignore[arg-type]
    assert more.step == 3 and more.report is not None and more.report_skipped is None
    assert len(listing(tmp_path / "reports")) == 6


def _dedupe(folder: Path, **options: object) -> DedupeResult:
    return dedupe(DedupeConfig(directory=folder, progress=False, workers=1, **options))  # type: ignore[arg-type]


def test_dedupe_writes_a_report_only_when_something_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "imgs"
    paths = write_face_folder(folder, 5, size=48, seed=8, fmt="png")
    shutil.copyfile(paths[3], folder / "dup.png")
    reports = tmp_path / "reports"

    first = _dedupe(folder)
    assert first.report_html is not None and first.report_skipped is None and first.n_duplicates == 1
    before = listing(reports)
    assert before == [Path(first.report_html).name, Path(first.report_html).with_suffix(".json").name]

    again = _dedupe(folder)  # the same images (all from the hash cache), options and findings
    assert again.n_hashed == 0 and again.report_html is None and listing(reports) == before
    expected = (
        f"nothing changed since {first.report_html} (the same images, options and findings; nothing "
        "moved or deleted)"
    )
    assert again.report_skipped == expected
    assert f"{expected}; no report (pass --report to write one)" in again.summary_lines()
    assert again.fingerprint == first.fingerprint

    write_face_folder(tmp_path / "other", 3, size=48, seed=9, fmt="png")
    elsewhere = _dedupe(tmp_path / "other")  # another folder's newer report: not this folder's last one
    assert elsewhere.report_html is not None and len(listing(reports)) == 4
    assert _dedupe(folder).report_skipped == expected
    (reports / Path(elsewhere.report_html).name).unlink()
    (reports / Path(str(elsewhere.report_json)).name).unlink()

    asked = _dedupe(folder, report_path=tmp_path / "asked.html")  # --report X: always written
    assert asked.report_html == str(tmp_path / "asked.html") and (tmp_path / "asked.json").is_file()
    assert listing(reports) == before

    other = _dedupe(folder, threshold=2)  # other options: another report
    assert other.report_html is not None and len(listing(reports)) == 4
    again = _dedupe(folder, threshold=2)
    assert again.report_skipped is not None and len(listing(reports)) == 4

    back = _dedupe(folder)  # the newest report of the folder decides, not any older one
    assert back.report_html is not None and len(listing(reports)) == 6
    Path(back.report_html).unlink()  # a sidecar without its page is no report: the run writes one again
    orphaned = listing(reports)
    rewritten = _dedupe(folder)
    assert rewritten.report_html is not None and rewritten.report_json is not None
    written = {Path(rewritten.report_html).name, Path(rewritten.report_json).name}
    assert listing(reports) == sorted(set(orphaned) | written)  # (the orphan's name may be taken again)
    count = len(listing(reports))

    os.utime(paths[0], ns=(1_000_000_000, 1_000_000_000))  # the hash cache sees a changed file
    touched = _dedupe(folder)
    assert touched.n_hashed == 1 and touched.report_html is not None and len(listing(reports)) == count + 2

    moved = _dedupe(folder, action="move", quarantine=tmp_path / "quarantine")
    assert moved.n_removed == 1 and moved.report_html is not None and len(listing(reports)) == count + 4
    clean = _dedupe(folder, action="move", quarantine=tmp_path / "quarantine")  # nothing left to move
    assert clean.n_removed == 0 and clean.report_html is not None and len(listing(reports)) == count + 6
    assert _dedupe(folder, action="move", quarantine=tmp_path / "quarantine").report_skipped is not None
    assert len(listing(reports)) == count + 6


def test_dedupe_against_a_reference_writes_again_only_when_the_leaks_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    paths = write_face_folder(tmp_path / "gen", 4, size=48, seed=8, fmt="png")
    write_face_folder(tmp_path / "ref", 4, size=48, seed=9, fmt="png")
    first = _dedupe(tmp_path / "gen", against=tmp_path / "ref")
    before = listing(tmp_path / "reports")
    assert first.report_html is not None and len(before) == 2
    again = _dedupe(tmp_path / "gen", against=tmp_path / "ref")
    assert again.report_skipped is not None and listing(tmp_path / "reports") == before
    shutil.copyfile(paths[0], tmp_path / "ref" / "leak.png")  # a generated image now in the reference
    leaked = _dedupe(tmp_path / "gen", against=tmp_path / "ref")
    assert len(leaked.leaks) == 1 and leaked.report_html is not None
    assert len(listing(tmp_path / "reports")) == 4
