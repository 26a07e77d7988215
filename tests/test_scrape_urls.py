"""``diffkit scrape --urls``: a list of URLs against the local fake site (several hosts, real sockets)."""

from __future__ import annotations

import base64
import contextlib
import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffkit.errors import DiffkitError
from diffkit.fakesite.site import FaceSite, SiteConfig
from diffkit.scrape.config import ALL_LISTED, ScrapeConfig
from diffkit.scrape.listrun import scrape_urls
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.run import scrape
from diffkit.scrape.urllist import read_url_list

FAST = dict(timeout_s=5.0, backoff_base_s=0.01, backoff_cap_s=0.1, progress=False, seed=0)
REPO = Path(__file__).resolve().parents[1]


def site_config(seed: int, **changes: object) -> SiteConfig:
    return SiteConfig(seed=seed, size=48, image_prefix="/img/", **changes)  # type: ignore[arg-type]


def run_list(urls: Path, out: Path, n: int = ALL_LISTED, **changes: object) -> ScrapeResult:
    options = {"rps": 50.0, "concurrency": 2, **FAST, "report_path": out.parent / "report.html", **changes}
    return scrape_urls(ScrapeConfig(n=n, out=out, urls=urls, **options))  # type: ignore[arg-type]


def statuses(out: Path) -> dict[str, tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(out / "manifest.sqlite")) as db:
        return {
            url: (status, reason)
            for url, status, reason in db.execute("SELECT url, status, reason FROM url_status")
        }


def metadata(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]


def paths_requested(site: FaceSite) -> list[str]:
    return [record.path for record in site.requests]


# -- politeness per host -------------------------------------------------------------------------------


def test_a_429_pauses_only_its_host_the_other_keeps_its_pace(tmp_path: Path) -> None:
    """Host A allows 3 requests/s and answers 429 + Retry-After: 2 beyond; host B has no limit. Both are
    asked at 8/s: A's 429 holds A for 2 s, while B's requests go on at 8/s (the site's request log)."""
    with FaceSite(site_config(1, max_rps=3, retry_after_s=2)) as a, FaceSite(site_config(2)) as b:
        lines = [f"{a.base_url}/img/a{i}.jpg" for i in range(8)] + [
            f"{b.base_url}/img/b{i}.jpg" for i in range(30)
        ]
        listed = tmp_path / "list.txt"
        listed.write_text("\n".join(lines) + "\n")
        result = run_list(listed, tmp_path / "out", rps=8.0, concurrency=2)
        log_a, log_b = a.requests, b.requests
    assert result.urls is not None
    assert result.kept_total == 38 and result.urls["kept"] == 38 and result.urls["not_fetched"] == 0
    first_429 = next(record for record in log_a if record.status == 429)
    pause_end = first_429.time_monotonic + 2.0
    # A: nothing during its announced pause (all its requests were sent before the 429 arrived or after)
    during_a = [r for r in log_a if first_429.time_monotonic + 0.05 < r.time_monotonic < pause_end - 0.05]
    assert during_a == []
    # B: kept its pace during A's pause: 8/s for 2 s is 16 requests (a loaded machine: at least 8)
    during_b = [r for r in log_b if first_429.time_monotonic < r.time_monotonic < pause_end]
    assert len(during_b) >= 8, len(during_b)
    # from its second request on (the first validation of a process imports the decoders: ~1 s), B's
    # requests are 1/8 s apart, A's pause included
    times_b = [r.time_monotonic for r in log_b][1:]
    gaps_b = [later - earlier for earlier, later in zip(times_b, times_b[1:], strict=False)]
    assert max(gaps_b) < 1.0  # A's pause is 2 s
    assert (
        min(r.time_monotonic for r in log_a if r.time_monotonic > first_429.time_monotonic)
        >= pause_end - 0.05
    )
    assert [r.status for r in log_b] == [200] * 30  # B was never rate limited, never paused
    hosts = result.urls["hosts"]
    host_a, host_b = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    assert hosts[host_a]["retry_after_pauses"] >= 1 and hosts[host_b]["retry_after_pauses"] == 0
    assert hosts[host_a]["kept"] == 8 and hosts[host_b]["kept"] == 30
    assert hosts[host_a]["requests"] == len(log_a) and hosts[host_b]["requests"] == 30
    assert result.rejections == {"http_429": sum(r.status == 429 for r in log_a)}


def test_a_retry_after_beyond_the_cap_leaves_that_host_for_a_rerun(tmp_path: Path) -> None:
    with FaceSite(site_config(1, max_rps=0.01, retry_after_s=5000)) as a, FaceSite(site_config(2)) as b:
        listed = tmp_path / "list.txt"
        a_urls = [f"{a.base_url}/img/a{i}.jpg" for i in range(4)]
        listed.write_text("\n".join(a_urls + [f"{b.base_url}/img/b{i}.jpg" for i in range(6)]))
        result = run_list(listed, tmp_path / "out", retry_after_cap_s=60.0)
        assert result.urls is not None
        host_a = result.urls["hosts"][f"127.0.0.1:{a.port}"]
        assert "Retry-After" in host_a["given_up"] and host_a["not_fetched"] == 3  # 1 kept (the burst token)
        assert result.urls["hosts"][f"127.0.0.1:{b.port}"]["kept"] == 6 and result.kept_total == 7
        a.config = site_config(1)  # the host lets us in again
        before_a, before_b = len(a.requests), len(b.requests)
        again = run_list(listed, tmp_path / "out")
        assert again.urls is not None and again.urls["already_done"] == 7
        assert len(b.requests) == before_b  # B was done: not asked again
        assert len(a.requests) - before_a == 3 and again.kept_total == 10


# -- the list: CSV columns, repeats, broken and bad lines, credentials, non-ASCII -------------------------


def test_csv_captions_repeats_broken_bad_lines_credentials_and_non_ascii(tmp_path: Path) -> None:
    with FaceSite(site_config(3)) as site:
        base = site.base_url
        secret_url = base.replace("http://", "http://user:s3cr%20et@") + "/img/secret.jpg"
        rows = [
            (f"{base}/img/1.jpg", 'a face, "quoted", with a comma', "cc-by"),
            (f"{base}/img/visage-é.jpg", "visage é 顔 — non-ASCII path", "cc0"),
            (f"{base}/img/1.jpg", "the same URL again", "x"),  # a repeat: fetched once
            (f"{base}/missing.jpg", "a broken URL", "x"),  # 404
            ("ftp://example.com/a.jpg", "not http", "x"),  # bad line
            ("not a url at all", "bad", "x"),  # bad line
            ("ftp://user:s3cret@example.com/b.jpg", "bad, with a password", "x"),  # bad line, redacted
            (secret_url, "two\nlines", ""),
            (f"{base}/img/3.jpg?size=big&q=ü", "", "mit"),
        ]
        listed = tmp_path / "list.csv"
        with listed.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["url", "caption", "licence"])
            writer.writerows(rows)
        out = tmp_path / "out"
        command = [sys.executable, "-m", "diffkit", "scrape", "--urls", str(listed), "--out", str(out)]
        command += ["--rps", "50", "--json", "--no-progress", "--report", str(tmp_path / "r.html")]
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        requested = paths_requested(site)
        auth = [r.headers.get("Authorization") for r in site.requests if r.path == "/img/secret.jpg"]
    summary = json.loads(done.stdout)["urls"]
    assert (summary["listed"], summary["unique"], summary["repeats"], summary["bad_lines"]) == (6, 5, 1, 3)
    assert [bad["line"] for bad in summary["bad"]] == [6, 7, 8]
    assert [bad["text"] for bad in summary["bad"]] == [
        "ftp://example.com/a.jpg",
        "not a url at all",
        "ftp://***@example.com/b.jpg",
    ]
    assert summary["kept"] == 4 and summary["rejected"] == {"http_404": 1} and summary["fetched"] == 5
    assert summary["columns"] == ["caption", "licence"]
    assert sorted(requested) == sorted(
        [
            "/img/1.jpg",
            "/img/visage-%C3%A9.jpg",
            "/missing.jpg",
            "/img/secret.jpg",
            "/img/3.jpg?size=big&q=%C3%BC",
        ]
    )
    assert auth == ["Basic " + base64.b64encode(b"user:s3cr et").decode()]  # the credentials were sent
    by_url = {entry["url"]: entry for entry in metadata(out)}
    redacted = f"{base.replace('http://', 'http://***@')}/img/secret.jpg"
    assert set(by_url) == {
        f"{base}/img/1.jpg",
        f"{base}/img/visage-é.jpg",
        redacted,
        f"{base}/img/3.jpg?size=big&q=ü",
    }
    assert by_url[f"{base}/img/1.jpg"]["caption"] == 'a face, "quoted", with a comma'  # the first listing
    assert by_url[f"{base}/img/visage-é.jpg"]["caption"] == "visage é 顔 — non-ASCII path"
    assert by_url[redacted]["caption"] == "two\nlines" and by_url[redacted]["licence"] == ""
    assert by_url[f"{base}/img/3.jpg?size=big&q=ü"]["licence"] == "mit"
    # the password is nowhere: folder, report, stdout, stderr
    written = [path.read_bytes() for path in [*out.rglob("*"), *tmp_path.glob("r.*")] if path.is_file()]
    assert not [blob for blob in written if b"s3cr" in blob]
    assert "s3cr" not in done.stdout + done.stderr
    assert statuses(out)[f"{base}/missing.jpg"] == ("rejected", "http_404")
    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "URL list, per host" in html and f"127.0.0.1:{site.port}" in html
    assert "Bad lines of the list" in html and "ftp://***@example.com/b.jpg" in html
    sidecar = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert sidecar["data"]["urls"] == summary


def test_text_list_comments_and_bad_lines_and_n_caps_the_list(tmp_path: Path) -> None:
    with FaceSite(site_config(4)) as site:
        listed = tmp_path / "list.txt"
        listed.write_text(
            f"# faces\n\n{site.base_url}/img/1.jpg\n  {site.base_url}/img/2.jpg  \nhttp://[::1\n"
            f"{site.base_url}/img/3.jpg\n#{site.base_url}/img/commented.jpg\n{site.base_url}/img/4.jpg\n",
            encoding="utf-8",
        )
        url_list = read_url_list(listed)
        assert [u.line for u in url_list.urls] == [3, 4, 6, 8] and [b.line for b in url_list.bad] == [5]
        assert url_list.bad[0].reason.startswith("unparseable")
        result = run_list(listed, tmp_path / "out", n=2, concurrency=1)
        assert result.kept_total == 2 and len(site.requests) == 2  # --n caps the list
        assert paths_requested(site) == ["/img/1.jpg", "/img/2.jpg"]
        rest = run_list(listed, tmp_path / "out")  # by default: every URL of the list
        assert rest.kept_total == 4 and paths_requested(site)[2:] == ["/img/3.jpg", "/img/4.jpg"]


def test_duplicate_images_from_distinct_urls_are_counted_not_kept(tmp_path: Path) -> None:
    with FaceSite(site_config(5, repeat_rate=0.5)) as site:
        listed = tmp_path / "list.txt"
        listed.write_text("".join(f"{site.base_url}/img/{i}.jpg\n" for i in range(20)))
        result = run_list(listed, tmp_path / "out", concurrency=1)
        served = site.served()
    assert result.urls is not None
    repeats = served["repeat"]
    assert repeats > 0 and result.duplicates_exact == result.urls["duplicates"] == repeats
    assert result.kept_total == 20 - repeats == served["image"]
    assert sorted(status for status, _ in statuses(tmp_path / "out").values()) == sorted(
        ["duplicate"] * repeats + ["kept"] * (20 - repeats)
    )


# -- resume --------------------------------------------------------------------------------------------

_CHILD = (
    "import sys; from pathlib import Path; from diffkit.scrape.config import ScrapeConfig; "
    "from diffkit.scrape.listrun import scrape_urls; "
    "scrape_urls(ScrapeConfig(n=0, out=Path(sys.argv[2]), urls=Path(sys.argv[1]), rps=8.0, concurrency=2,"
    " progress=False, report=False))"
)


def test_kill_9_mid_run_then_a_resume_fetches_only_what_is_missing(tmp_path: Path) -> None:
    with FaceSite(site_config(6)) as site:
        listed = tmp_path / "list.txt"
        listed.write_text(
            "".join(f"{site.base_url}/img/{i}.jpg\n" for i in range(40)) + f"{site.base_url}/gone\n"
        )
        out = tmp_path / "out"
        process = subprocess.Popen([sys.executable, "-c", _CHILD, str(listed), str(out)], cwd=REPO)
        deadline = time.monotonic() + 120
        while len(site.requests) < 12 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        done_before = {url for url, (status, _) in statuses(out).items() if status == "kept"}
        first_run = paths_requested(site)
        assert 8 <= len(done_before) < 41
        result = run_list(listed, out)
        second_run = paths_requested(site)[len(first_run) :]
    assert result.urls is not None
    # only what was not done: each missing URL once (one in flight at the kill may be asked again)
    done_paths = {url.split(str(site.port))[1] for url in done_before}
    assert not done_paths & set(second_run) and len(second_run) == len(set(second_run))
    assert len(second_run) == 41 - len(done_before) == result.urls["fetched"]
    assert result.urls["already_done"] == len(done_before)
    assert result.kept_total == 40 and len(metadata(out)) == 40
    assert statuses(out)[f"{site.base_url}/gone"] == ("rejected", "http_404")


def test_a_kept_image_without_its_url_status_is_not_fetched_again(tmp_path: Path) -> None:
    """kill -9 between the image's row and its URL's status: the resume finds the image by its URL."""
    with FaceSite(site_config(7)) as site:
        listed = tmp_path / "list.csv"
        listed.write_text(f"url,caption\n{site.base_url}/img/1.jpg,one\n{site.base_url}/img/2.jpg,two\n")
        out = tmp_path / "out"
        run_list(listed, out)
        with contextlib.closing(sqlite3.connect(out / "manifest.sqlite")) as db, db:
            db.execute("DELETE FROM url_status WHERE url LIKE '%/1.jpg'")
        requests = len(site.requests)
        again = run_list(listed, out)
        assert len(site.requests) == requests and again.kept_total == 2
        assert statuses(out)[f"{site.base_url}/img/1.jpg"] == ("kept", "kept")
        assert {entry["caption"] for entry in metadata(out)} == {"one", "two"}
        # the other way round: a kept URL whose file was lost is fetched again (reconcile drops its row)
        lost = next(entry for entry in metadata(out) if entry["caption"] == "two")
        (out / str(lost["file_name"])).unlink()
        third = run_list(listed, out)
        assert paths_requested(site)[requests:] == ["/img/2.jpg"] and third.kept_total == 2
    assert sorted(entry["caption"] for entry in metadata(out)) == ["one", "two"]


def test_failed_urls_are_fetched_again_and_an_old_manifest_gains_the_table(tmp_path: Path) -> None:
    """A folder from a one-URL scrape (its manifest has no url_status table) takes a list; a URL that
    failed transiently (503 after every retry) is asked again by a rerun, a 404 is not."""
    with FaceSite(site_config(8)) as site:
        out = tmp_path / "out"
        scrape(ScrapeConfig(n=2, out=out, url=site.url, rps=50.0, report=False, **FAST))  # type: ignore[arg-type]
        with contextlib.closing(sqlite3.connect(out / "manifest.sqlite")) as db:
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "url_status" not in tables
        listed = tmp_path / "list.txt"
        listed.write_text(f"{site.base_url}/img/1.jpg\n{site.base_url}/nothing\n")
        site.config = site_config(8, faults={"http_503": 1.0}, retry_after_s=0)
        failing = run_list(listed, out, n=10, max_retries=1)
        assert failing.urls is not None and failing.urls["failed"] == {"http_503": 1}
        assert failing.urls["rejected"] == {"http_404": 1} and failing.kept_total == 2
        assert statuses(out)[f"{site.base_url}/img/1.jpg"] == ("failed", "http_503")
        site.config = site_config(8)
        count = len(site.requests)
        fixed = run_list(listed, out, n=10)
        assert paths_requested(site)[count:] == ["/img/1.jpg"] and fixed.kept_total == 3


# -- the file itself -------------------------------------------------------------------------------------


def test_parquet_list_keeps_its_columns(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    with FaceSite(site_config(9)) as site:
        urls = [f"{site.base_url}/img/{i}.jpg" for i in range(3)]
        table = pa.table({"caption": ["α", "β", None], "url": urls, "score": [0.5, 1.0, 2.5]})
        pq.write_table(table, tmp_path / "list.parquet")
        result = run_list(tmp_path / "list.parquet", tmp_path / "out")
    assert result.kept_total == 3
    by_url = {entry["url"]: entry for entry in metadata(tmp_path / "out")}
    assert [(by_url[url]["caption"], by_url[url]["score"]) for url in urls] == [
        ("α", "0.5"),
        ("β", "1.0"),
        ("", "2.5"),
    ]


def test_parquet_without_pyarrow_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "list.parquet").write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow raises ImportError
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DiffkitError, match=r"pip install pyarrow"):
        read_url_list(tmp_path / "list.parquet")


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("list.csv", "link,caption\nhttp://a/b.jpg,x\n", r"no 'url' column \(columns: 'link', 'caption'\)"),
        ("list.txt", "# nothing\nftp://a/b\n", r"lists no http\(s\) URL \(1 bad lines: line 2: not an http"),
        ("list.txt", b"\xff\xfe", r"not UTF-8"),
    ],
)
def test_unusable_lists_are_one_line_errors(
    tmp_path: Path, name: str, text: str | bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(DiffkitError, match=message):
        run_list(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_url_and_urls_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(DiffkitError, match="exclude each other"):
        ScrapeConfig(n=1, url="http://a/b.jpg", urls=tmp_path / "l.txt")


def test_the_cli_needs_n_or_urls_and_says_so_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "diffkit", "scrape", "--out", str(tmp_path / "out")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and "--n is required" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()
