"""The demo's reports opened in a real browser (Debian's chromium, headless, networking off).

Read as a user would, at 1280 and 800 px wide: every image loads, the console stays clean, no request
leaves the file (only file: and data: URLs), and no card (section), header or footer is wider than
itself. A browser that cannot be found or started fails the test with the reason: it is not skipped
(`.ci/run` installs chromium; `pip install -e '.[test]'` installs playwright, which drives it).

Set DIFFKIT_SCREENSHOTS=<folder> to also save a screenshot of each page (used for docs/img/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_run import DemoRun, shared_demo

WIDTHS = (1280, 800)
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
]
ALLOWED_SCHEMES = ("file:", "data:")

# Every card, the page header and footer, and every table's scroll box: what overflows is listed.
OVERFLOWING = """() => [...document.querySelectorAll('section, header, footer, .table-wrap, .stats')]
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => `${(e.querySelector('h2') || e).textContent.trim().slice(0, 60)}: ` +
               `${e.scrollWidth} > ${e.clientWidth} px`)"""
BROKEN_IMAGES = """() => [...document.images]
    .filter(i => !i.complete || i.naturalWidth === 0)
    .map(i => i.alt || i.src.slice(0, 40))"""


def chromium_path() -> Path:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed (no `chromium` on PATH): run `apt-get install -y chromium` "
            "(.ci/run installs it); this test is not skipped without a browser"
        )
    return Path(found)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    return shared_demo(tmp_path_factory)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless chromium context with its own fresh profile and the network switched off."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError as exc:
        pytest.fail(f"playwright is not installed ({exc}): pip install -e '.[test]'")
    executable = chromium_path()
    with sync_playwright() as playwright:
        try:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path_factory.mktemp("chromium-profile")),
                executable_path=str(executable),
                args=CHROMIUM_FLAGS,
                headless=True,
                offline=True,
            )
        except Error as exc:
            pytest.fail(f"chromium at {executable} could not be launched: {exc}")
        yield context
        context.close()


def report_pages(demo: DemoRun) -> list[Path]:
    pages = sorted((demo.root / "reports").glob("*.html"))
    commands = {page.name.split("-")[0] for page in pages}
    assert {"index.html", "scrape", "dedupe", "train", "eval", "run"} <= commands, commands
    return pages


def read_at_width(browser: Any, pages: list[Path], width: int, screenshots: str | None) -> list[str]:
    """Open every page at ``width`` px as a user would; the problems found, one line each."""
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    problems: list[str] = []
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    for report in pages:
        errors.clear()
        page.goto(report.as_uri(), wait_until="load")
        where = f"{report.name} at {width} px"
        problems += [f"{where}: image not loaded: {name}" for name in page.evaluate(BROKEN_IMAGES)]
        problems += [f"{where}: console: {text}" for text in errors]
        problems += [f"{where}: overflows its card: {what}" for what in page.evaluate(OVERFLOWING)]
        if page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth"):
            problems.append(f"{where}: the page scrolls sideways")
        if screenshots:
            Path(screenshots).mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(Path(screenshots) / f"{report.stem.split('-')[0]}-{width}.png"))
    problems += [f"request left the file: {url}" for url in requests if not url.startswith(ALLOWED_SCHEMES)]
    page.close()
    return problems


def test_demo_reports_read_well_in_chromium(demo: DemoRun, browser: Any) -> None:
    pages = report_pages(demo)
    screenshots = os.environ.get("DIFFKIT_SCREENSHOTS")
    problems = [line for width in WIDTHS for line in read_at_width(browser, pages, width, screenshots)]
    assert problems == []


def test_the_checks_catch_a_broken_page(browser: Any, tmp_path: Path) -> None:
    """The same checks on a page that loads from the network, logs an error and overflows its card."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<html><body><section style="width:300px"><h2>Wide</h2><div style="width:2000px">x</div>'
        '</section><img alt="remote" src="http://127.0.0.1:9/x.png">'
        "<script>console.error('boom')</script></body></html>"
    )
    problems = "\n".join(read_at_width(browser, [bad], 800, None))
    assert "image not loaded: remote" in problems
    assert "console: boom" in problems
    assert "overflows its card: Wide" in problems
    assert "request left the file: http://127.0.0.1:9/x.png" in problems


def test_the_run_page_draws_the_runs_curves_and_the_index_groups_its_reports(
    demo: DemoRun, browser: Any
) -> None:
    """What issue 25 added, as a reader sees it: the training curves drawn on the run page, its
    headline naming what the FID was measured on, and the index grouped by dataset and run."""
    assert demo.result.run_page is not None
    page = browser.new_page()
    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto((demo.root / demo.result.run_page).as_uri(), wait_until="load")
    plots = page.evaluate(
        "() => [...document.querySelectorAll('img.plot')]"
        ".map(i => [i.alt, i.naturalWidth > 0 && i.getBoundingClientRect().width > 300])"
    )
    assert ["Loss", True] in plots, plots
    headline = page.evaluate("() => document.querySelector('#run .headline').innerText")
    assert " — generated: " in headline and ", M=" in headline, headline
    page.goto((demo.root / "reports" / "index.html").as_uri(), wait_until="load")
    headings = page.evaluate(
        "() => [...document.querySelectorAll('#reports h3, #reports h4')].map(h => h.innerText)"
    )
    assert headings and headings[0].startswith("Dataset "), headings
    assert any(heading.startswith("Run ") for heading in headings), headings
    page.close()
