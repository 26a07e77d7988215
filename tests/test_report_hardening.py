"""`diffkit report` on a hostile reports folder: pipes, huge files and deep JSON are skipped, and said so.

Every command here runs in a thread or subprocess with a timeout, so that a regression (a FIFO opened
for a blocking read) fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from diffkit.report.index import IndexConfig, build_index
from diffkit.report.model import Report, Section
from diffkit.report.render import write_report
from diffkit.report.runpage import pictures_of
from diffkit.report.sidecars import (
    MAX_NESTING,
    SIDECAR_MAX_BYTES,
    UnreadableFile,
    read_regular_file,
    scan_sidecars,
)

TIMEOUT_S = 60.0  # generous on a loaded 2-core machine; a hang never ends


def within_timeout(call: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
    """``call()`` in a daemon thread: its result, or a failed test (not a hung suite) if it blocks."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: blocked on a file?"
    if "error" in box:
        raise box["error"]
    return box["value"]


def _reports(folder: Path) -> Path:
    folder.mkdir()
    write_report(Report(title="scraped", command="scrape", summary={"kept": 5}), folder / "a.html")
    return folder


def _page_beside(json_path: Path) -> None:
    json_path.with_suffix(".html").write_text("<html>a page</html>")


def test_a_named_pipe_beside_the_reports_is_skipped_by_the_cli(tmp_path: Path) -> None:
    """The real command, in a subprocess: a FIFO named as a sidecar, and one named as a page."""
    reports = _reports(tmp_path / "reports")
    os.mkfifo(reports / "pipe.json")
    _page_beside(reports / "pipe.json")
    (reports / "page.json").write_text(json.dumps({"schema": "diffkit.report/1", "command": "eval"}))
    os.mkfifo(reports / "page.html")
    result = subprocess.run(
        [sys.executable, "-m", "diffkit", "report", str(reports), "--json"],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["n_reports"] == 1
    assert answer["skipped"] == [
        {"file": "page.json", "reason": "its page page.html is a named pipe"},
        {"file": "pipe.json", "reason": "a named pipe"},
    ]
    html = (reports / "index.html").read_text(encoding="utf-8")
    assert '<section id="skipped">' in html and "2 files skipped" in html
    assert '<td class="long">pipe.json</td><td>a named pipe</td>' in html
    text = subprocess.run(
        [sys.executable, "-m", "diffkit", "report", str(reports)],
        capture_output=True, text=True, timeout=TIMEOUT_S, cwd=tmp_path,
    )  # fmt: skip
    assert text.returncode == 0 and "skipped pipe.json: a named pipe" in text.stdout + text.stderr


def test_json_nested_100k_deep_is_skipped_not_a_recursion_error(tmp_path: Path) -> None:
    reports = _reports(tmp_path / "reports")
    (reports / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    _page_beside(reports / "deep.json")
    # Deep enough to pass json.loads (~1,000 levels) yet deeper than any report: refused too.
    shallow = {"schema": "diffkit.report/1", "command": "eval", "created": "9999", "summary": {}}
    node: dict[str, Any] = shallow
    for _ in range(MAX_NESTING + 5):
        node["x"] = {}
        node = node["x"]
    (reports / "nested.json").write_text(json.dumps(shallow))
    _page_beside(reports / "nested.json")
    result = within_timeout(lambda: build_index(IndexConfig(reports_dir=reports)))
    assert result.n_reports == 1
    assert [(s.name, s.reason) for s in result.skipped] == [
        ("deep.json", f"JSON nested deeper than {MAX_NESTING} levels"),
        ("nested.json", f"JSON nested deeper than {MAX_NESTING} levels"),
    ]


def test_an_oversized_sidecar_is_skipped_without_being_read(tmp_path: Path) -> None:
    reports = _reports(tmp_path / "reports")
    with open(reports / "huge.json", "wb") as handle:  # sparse: no disk used, but over the cap
        handle.truncate(SIDECAR_MAX_BYTES + 1)
    _page_beside(reports / "huge.json")
    scan = within_timeout(lambda: scan_sidecars(reports))
    assert [s.title for s in scan.sidecars] == ["scraped"]
    assert [s.to_dict() for s in scan.skipped] == [
        {"file": "huge.json", "reason": f"{SIDECAR_MAX_BYTES + 1:,} bytes, over the 64 MiB limit"}
    ]
    exactly = reports / "exact.bin"
    exactly.write_bytes(b"x" * 100)
    assert read_regular_file(exactly, 100) == b"x" * 100  # the cap itself is allowed
    with pytest.raises(UnreadableFile, match="100 bytes, over the"):
        read_regular_file(exactly, 99)


def test_other_unreadable_sidecars_are_skipped_with_their_reason(tmp_path: Path) -> None:
    reports = _reports(tmp_path / "reports")
    (reports / "folder.json").mkdir()
    (reports / "latin1.json").write_bytes(b'{"title": "caf\xe9"}')
    (reports / "broken.json").write_text('{"schema": ')
    (reports / "link.json").symlink_to(reports / "a.json")
    for name in ("folder", "latin1", "broken", "link"):
        _page_beside(reports / f"{name}.json")
    (reports / "lonely.json").write_text("not a report, and no page beside it: not mentioned")
    result = within_timeout(lambda: build_index(IndexConfig(reports_dir=reports)))
    assert {s.name: s.reason for s in result.skipped} == {
        "broken.json": "not valid JSON (Expecting value)",
        "folder.json": "a folder",
        "latin1.json": "not UTF-8 (byte 14)",
        "link.json": "a symlink (not followed)",
    }
    assert result.n_reports == 1 and "skipped" in result.to_dict()


def test_a_clean_folder_reports_no_skipped_key(tmp_path: Path) -> None:
    reports = _reports(tmp_path / "reports")
    result = build_index(IndexConfig(reports_dir=reports))
    assert result.skipped == [] and "skipped" not in result.to_dict()
    assert 'id="skipped"' not in result.index.read_text(encoding="utf-8")


def test_a_page_swapped_for_a_pipe_gives_no_pictures_and_no_hang(tmp_path: Path) -> None:
    """The run page reads each stage's HTML for its pictures: a pipe put there meanwhile is not read."""
    os.mkfifo(tmp_path / "page.html")
    assert within_timeout(lambda: pictures_of(tmp_path / "page.html")) == []
    with pytest.raises(UnreadableFile, match="a named pipe"):
        within_timeout(lambda: read_regular_file(tmp_path / "page.html", 1000))


def test_labels_with_bidi_overrides_and_controls_show_written_out_in_every_page(tmp_path: Path) -> None:
    """A class label is user text: in the page it must not reverse or hide the text around it."""
    label = "evil\u202egnp.exe\x1b[2J"
    paths = write_report(
        Report(
            title=f"Train {label}",
            command="train",
            summary={"classes": label},
            sections=[Section(heading="Classes", table=[{"class": 0, "name": label}])],
            data={"classes": [label]},
        ),
        tmp_path / "train.html",
    )
    page = paths.html.read_text(encoding="utf-8")
    assert "\u202e" not in page and "\x1b" not in page
    assert '">evil\\u202egnp.exe\\x1b[2J</td>' in page
    assert json.loads(paths.json.read_text())["data"]["classes"] == [label]  # the sidecar keeps it exact
    index = build_index(IndexConfig(reports_dir=tmp_path)).index.read_text(encoding="utf-8")
    assert "\u202e" not in index and "Train evil\\u202egnp.exe\\x1b[2J" in index


def test_a_skipped_file_name_is_shown_written_out(tmp_path: Path) -> None:
    reports = _reports(tmp_path / "reports")
    name = "eval\u202enosj.json"
    os.mkfifo(reports / name)
    _page_beside(reports / name)
    result = within_timeout(lambda: build_index(IndexConfig(reports_dir=reports)))
    assert result.summary_lines()[-1] == "[yellow]skipped[/] eval\\u202enosj.json: a named pipe"
    assert result.to_dict()["skipped"] == [{"file": name, "reason": "a named pipe"}]  # JSON: exact
    assert "eval\\u202enosj.json" in result.index.read_text(encoding="utf-8")
