"""``diffkit scrape`` as a user runs it: real subprocesses, kill -9, Ctrl-C, one-line errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from test_scrape_site import assert_consistent_folder

from diffkit.fakesite.site import FaceSite, SiteConfig


def _scrape_command(url: str, out: Path, n: int, *extra: str, rps: float = 200) -> list[str]:
    return [sys.executable, "-m", "diffkit.cli", "scrape", "--n", str(n), "--out", str(out), "--url", url,
            "--rps", str(rps), "--concurrency", "2", "--no-progress",
            "--report", str(out.parent / "report.html"), *extra]


def _popen(command: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files(out: Path) -> int:
    return sum(1 for _ in (out / "images").glob("*/*.jpg")) if (out / "images").exists() else 0


def _wait_for_files(out: Path, count: int, process: subprocess.Popen[str], limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s  # a guard against hanging, not a performance assertion
    while _files(out) < count and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_html_only_and_non_http_urls_fail_in_one_line(tmp_path: Path) -> None:
    with FaceSite(SiteConfig(size=64)) as site:
        urls = {
            "unreachable": f"http://127.0.0.1:{_closed_port()}/random-person.jpeg",
            "html": site.base_url + "/",
            "scheme": "ftp://thispersondoesnotexist.com/random-person.jpeg",
        }
        processes = {name: _popen(_scrape_command(url, tmp_path / name, 5), tmp_path)
                     for name, url in urls.items()}
        outputs = {name: process.communicate(timeout=120) for name, process in processes.items()}
    expected = {"unreachable": "cannot connect", "html": "HTML page", "scheme": "only http:// and https://"}
    for name, (stdout, stderr) in outputs.items():
        assert processes[name].returncode == 2, (name, stderr)
        assert stdout == ""
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, stderr)
        assert expected[name] in lines[0] and "Traceback" not in stderr
        assert not (tmp_path / name).exists()  # a failed start leaves nothing behind


def test_kill_9_at_several_moments_then_rerun_gives_exactly_n(tmp_path: Path) -> None:
    out, n = tmp_path / "faces", 30
    with FaceSite(SiteConfig(size=64, latency_s=0.02, repeat_rate=0.1)) as site:
        # 10 req/s while killing: the last kill still has ~1 s of work left, so a loaded machine cannot
        # finish the whole scrape between "20 files seen" and the kill.
        command = _scrape_command(site.url, out, n, rps=10)
        for moment in (0, 3, 10, 20):  # 0: during start-up, before any file
            process = _popen(command, tmp_path)
            if moment == 0:
                time.sleep(0.5)
            else:
                _wait_for_files(out, moment, process)
            assert process.poll() is None, process.communicate()
            process.send_signal(signal.SIGKILL)
            process.wait()
            assert _files(out) < n
        final = subprocess.run([*_scrape_command(site.url, out, n), "--json"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    result = json.loads(final.stdout)
    assert result["kept_total"] == n and not result["interrupted"]
    assert_consistent_folder(out, n, size=64)


def test_ctrl_c_finishes_writes_prints_summary_and_exits_130(tmp_path: Path) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=64, latency_s=0.05)) as site:
        process = _popen([*_scrape_command(site.url, out, 500), "--json"], tmp_path)
        _wait_for_files(out, 5, process)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    result = json.loads(stdout)
    assert result["interrupted"] is True and result["stopped"] == "interrupted"
    kept = result["kept_total"]
    assert 5 <= kept < 500
    assert_consistent_folder(out, kept, size=64)
    sidecar = json.loads((tmp_path / "report.json").read_text())
    assert sidecar["summary"]["kept"] == kept and sidecar["summary"]["stopped"] == "interrupted"
    assert os.path.getsize(tmp_path / "report.html") > 0


def test_ctrl_c_does_not_wait_for_requests_stalled_in_worker_threads(tmp_path: Path) -> None:
    """Issue 14 moved each request onto a worker thread; a stalled one (here up to --timeout 60 s) must not
    hold up the exit after Ctrl-C, and the folder stays consistent."""
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=64, faults={"stall": 0.5}, stall_s=60.0)) as site:
        command = [*_scrape_command(site.url, out, 500, "--timeout", "60", rps=50), "--json"]
        process = _popen(command, tmp_path)
        _wait_for_files(out, 3, process)
        time.sleep(0.5)  # half the answers stall: by now both workers almost surely wait on one
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        stdout, stderr = process.communicate(timeout=90)
        elapsed = time.monotonic() - started
    assert process.returncode == 130, stderr
    assert elapsed < 20, elapsed  # not the 60 s a stalled request would take (a loaded machine: slack)
    result = json.loads(stdout)
    assert result["interrupted"] is True and 3 <= result["kept_total"] < 500
    assert_consistent_folder(out, result["kept_total"], size=64)


def test_threshold_is_one_name_and_the_old_scrape_name_still_works(tmp_path: Path, monkeypatch) -> None:
    """Issue 27.6: scrape's ``--near-dup-threshold`` is ``--threshold`` (``-t``), as in dedupe; the old
    name works for one more release, with one deprecation line on stderr."""
    import pytest
    from typer.testing import CliRunner

    import diffkit.scrape.run
    from diffkit.cli import app
    from diffkit.scrape.config import ScrapeConfig

    seen: list[ScrapeConfig] = []
    monkeypatch.setattr(diffkit.scrape.run, "scrape", lambda config: seen.append(config))
    base = ["scrape", "--n", "1", "--out", str(tmp_path / "faces")]
    runner = CliRunner()
    for extra, deprecated in (
        (["--threshold", "6"], False),
        (["-t", "6"], False),
        (["--near-dup-threshold", "6"], True),
        (["--near-dup-threshold", "6", "--threshold", "6"], True),
    ):
        done = runner.invoke(app, [*base, *extra])
        assert done.exit_code == 0, done.output
        assert seen.pop().threshold == 6
        warned = [line for line in done.stderr.splitlines() if "deprecated" in line]
        assert warned == (["deprecated: --near-dup-threshold is now --threshold (the same name as dedupe's); "
                           "the old name will be removed in the next release"] if deprecated else [])
    assert runner.invoke(app, base).exit_code == 0 and seen.pop().threshold == 12  # the shared default
    clash = runner.invoke(app, [*base, "--near-dup-threshold", "6", "--threshold", "8"])
    assert clash.exit_code == 2 and not seen
    last_line = clash.stderr.splitlines()[-1]
    assert last_line.startswith("error: --threshold and --near-dup-threshold are the same option")
    help_text = runner.invoke(app, ["scrape", "--help"], env={"COLUMNS": "200"}).output
    assert "--threshold" in help_text and "--near-dup-threshold" not in help_text
    with pytest.raises(TypeError):  # one name in the config too
        ScrapeConfig(n=1, near_dup_threshold=6)  # type: ignore[call-arg]
