"""``scrape`` end to end against the local fake-face site over real sockets."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from diffkit.errors import DiffkitError
from diffkit.fakesite.site import FAULT_KINDS, FaceSite, SiteConfig
from diffkit.scrape.config import DEFAULT_USER_AGENT, ScrapeConfig
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.run import scrape
from diffkit.scrape.storage import Store
from diffkit.scrape.validate import is_transient

# What the site does -> the reason diffkit must count it under.
REASON_OF_KIND = {
    "http_503": "http_503",
    "stall": "timeout",
    "truncated": "truncated",
    "bad_length": "truncated_image",
    "html_block": "block_page",
    "not_image": "magic_bytes",
    "bomb": "decompression_bomb",
    "redirect_offhost": "redirect_offhost",
    "429": "http_429",
}
FAST = dict(
    rps=200.0, concurrency=3, timeout_s=2.0, backoff_base_s=0.01, backoff_cap_s=0.1, progress=False, seed=0
)


def run_scrape(site: FaceSite, out: Path, n: int, **changes: object) -> ScrapeResult:
    options = {**FAST, "url": site.url, "report_path": out.parent / f"{out.name}-report.html", **changes}
    return scrape(ScrapeConfig(n=n, out=out, **options))  # type: ignore[arg-type]


def assert_consistent_folder(out: Path, n: int, size: int | None = None) -> list[str]:
    """Exactly ``n`` valid, content-addressed files; manifest, metadata.jsonl and disk agree."""
    files = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*") if p.is_file())
    assert not [name for name in files if name.endswith(".tmp") or "/." in name], files
    store = Store(out)
    rows = store.rows()
    store.close()
    assert len(files) == len(rows) == n
    assert sorted(row["file_name"] for row in rows) == files
    digests = []
    for row in rows:
        data = (out / str(row["file_name"])).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        assert digest == row["sha256"] and str(row["file_name"]).endswith(f"/{digest[:2]}/{digest}.jpg")
        with Image.open(out / str(row["file_name"])) as image:
            image.load()
            assert size is None or image.size == (size, size)
        digests.append(digest)
    assert len(set(digests)) == n
    metadata = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert sorted(entry["file_name"] for entry in metadata) == files  # imagefolder's file_name column
    assert all((out / entry["file_name"]).is_file() for entry in metadata)
    return digests


def test_every_fault_kind_yields_exactly_n_unique_valid_images(tmp_path: Path) -> None:
    faults = dict.fromkeys(FAULT_KINDS, 0.04)
    site_config = SiteConfig(
        seed=3,
        size=128,
        repeat_rate=0.08,
        near_dup_rate=0.08,
        retry_after_s=0.0,
        faults=faults,
        max_rps=12,
        stall_s=30.0,
    )
    out = tmp_path / "faces"
    with FaceSite(site_config) as site:
        # 6 bits: procedural 128 px faces re-encoded or resized move pHash by up to ~6 bits
        result = run_scrape(
            site, out, 40, timeout_s=1.0, max_retries=30, max_consecutive_failures=40, threshold=6
        )
        records = site.requests
    served = site.served()
    # every fault happened (429s too, most runs; they are not required: a loaded machine may be slower
    # than the cap, and test_retry_after_* cover them)
    assert {*FAULT_KINDS, "repeat", "near_dup"} <= set(served), served
    digests = assert_consistent_folder(out, 40, size=128)
    assert result.kept_total == result.kept_new == 40 and not result.interrupted
    expected = {REASON_OF_KIND[kind]: count for kind, count in served.items() if kind in REASON_OF_KIND}
    assert result.rejections == expected
    # every saved file is byte-identical to a complete fresh image the site served: no rejected bytes
    fresh = {record.sha256 for record in records if record.kind == "image"}
    assert set(digests) <= fresh
    valid_received = served.get("image", 0) + served.get("repeat", 0) + served.get("near_dup", 0)
    assert result.kept_new + result.duplicates_exact + result.duplicates_near == valid_received
    assert 0 < result.duplicates_exact <= served["repeat"]
    assert result.duplicates_near >= served["near_dup"]
    assert {record.headers["User-Agent"] for record in records} == {DEFAULT_USER_AGENT}
    assert all(record.headers["Host"].startswith("127.0.0.1:") for record in records)  # no off-host follow
    sidecar = json.loads(Path(str(result.report_json)).read_text())
    assert sidecar["summary"]["kept"] == 40 and Path(str(result.report_html)).is_file()
    table = {row["reason"]: row["this run"] for row in sidecar["sections"][0]["table"]}
    assert all(table[reason] == count for reason, count in expected.items())
    html = Path(str(result.report_html)).read_text()
    assert "Contact sheet" in html and html.count("data:image/png;base64") == 36 + 3  # thumbnails + plots


def _gaps_after_429(records: list, window: float, clock: str = "time_monotonic") -> list[float]:
    """For each 429, how long until the next request arrived."""
    gaps = []
    for position, record in enumerate(records):
        if record.status == 429 and position + 1 < len(records):
            gaps.append(getattr(records[position + 1], clock) - getattr(record, clock))
    return gaps


def test_retry_after_seconds_pause_everything_and_the_rate_adapts(tmp_path: Path) -> None:
    with FaceSite(SiteConfig(size=64, max_rps=4, retry_after_s=1.0)) as site:
        result = run_scrape(site, tmp_path / "faces", 10, concurrency=1, rps=100.0)
        records = site.requests
    gaps = _gaps_after_429(records, 1.0)
    assert gaps, "the site never throttled: the test proves nothing"
    assert min(gaps) >= 1.0
    assert result.rejections["http_429"] == len([r for r in records if r.status == 429])
    rates = [rate for _, rate in result.rate_history]
    decreases = [(a, b) for a, b in zip(rates, rates[1:], strict=False) if b < a]
    assert len(decreases) == result.rejections["http_429"]  # halved once per 429...
    assert all(b == a / 2 for a, b in decreases)
    increases = [b - a for a, b in zip(rates, rates[1:], strict=False) if b > a]
    assert increases and max(increases) <= 100.0 / 50 + 1e-9  # ...and climbs back in small steps
    assert_consistent_folder(tmp_path / "faces", 10)


def test_retry_after_http_date_is_honoured(tmp_path: Path) -> None:
    with FaceSite(SiteConfig(size=64, max_rps=2, retry_after_s=2.0, retry_after_http_date=True)) as site:
        run_scrape(site, tmp_path / "faces", 4, concurrency=1, rps=100.0)
        records = site.requests
    throttled = [i for i, r in enumerate(records) if r.status == 429 and i + 1 < len(records)]
    assert throttled
    for i in throttled:  # the date has whole seconds: the next request may not come before it
        assert records[i + 1].time_wall >= math.floor(records[i].time_wall + 2.0)


def test_rate_adapts_down_without_retry_after_and_recovers(tmp_path: Path) -> None:
    # The cap is far below what the client manages even on a loaded machine, so 429s are certain.
    with FaceSite(SiteConfig(size=64, max_rps=3, retry_after_s=0.0)) as site:
        result = run_scrape(site, tmp_path / "faces", 10, concurrency=2, rps=48.0)
    rates = [rate for _, rate in result.rate_history]
    assert min(rates) < 3.0  # went below the site's cap
    # at a fixed 48 req/s a 3 req/s site answers ~15 of 16 requests with 429: ~150 for 10 images
    assert result.rejections["http_429"] < 30
    assert any(b > a for a, b in zip(rates, rates[1:], strict=False))  # and climbed back


def test_probe_falls_back_along_the_known_endpoints(tmp_path: Path) -> None:
    with FaceSite(SiteConfig(size=64, image_path="/image")) as site:
        candidates = tuple(site.base_url + path for path in ("/random-person.jpeg", "/", "/image"))
        result = run_scrape(site, tmp_path / "faces", 3, url=None, candidate_urls=candidates)
        paths = [record.path for record in site.requests[:5]]
    assert result.url == site.base_url + "/image"
    # A 404 says "not here" at once; an HTML page might be served once only: it gets every try.
    assert [step["outcome"] for step in result.probe] == ["http_404", *["block_page"] * 3, "image"]
    assert paths == ["/random-person.jpeg", "/", "/", "/", "/image"]
    assert_consistent_folder(tmp_path / "faces", 3)

    with FaceSite(SiteConfig(size=64, image_path="/moved.jpg")) as site:
        candidates = tuple(site.base_url + path for path in ("/random-person.jpeg", "/", "/image"))
        with pytest.raises(DiffkitError, match="none of the known image endpoints"):
            run_scrape(site, tmp_path / "nothing", 3, url=None, candidate_urls=candidates)
    assert not (tmp_path / "nothing").exists()  # nothing created for a failed probe


class FaultsFirst(FaceSite):
    """The fake site, but its next image requests get the faults in ``faults_first`` (in order) before
    it serves as configured: a fault on exactly the first request(s) of a run, no timing luck."""

    def __init__(self, config: SiteConfig, faults_first: list[str] | None = None) -> None:
        super().__init__(config)
        self.faults_first = list(faults_first or [])

    def _plan_image(self):  # type: ignore[no-untyped-def]  # called with the site's lock held
        plan = super()._plan_image()
        if self.faults_first:
            plan.kind, plan.payload = self.faults_first.pop(0), None
            plan.params = {"fraction": 0.5, "length": 3000.0}  # what stall/truncated/not_image read
        return plan


# Issue 24.9: each of these, once at the first request, made the scrape refuse to start ("gave no image").
FIRST_FAULTS = ["html_block", "redirect_offhost", "bad_length", "not_image", "truncated", "http_503"]


@pytest.mark.parametrize("kind", FIRST_FAULTS)
def test_one_fault_at_the_first_request_does_not_stop_the_start(tmp_path: Path, kind: str) -> None:
    config = SiteConfig(size=64, retry_after_s=0.0)
    with FaultsFirst(config, [kind]) as site:
        result = run_scrape(site, tmp_path / "faces", 3, concurrency=1, max_retries=0)
        kinds = [record.kind for record in site.requests]
    assert kinds[0] == kind and kinds[1:] == ["image"] * 3
    reason = REASON_OF_KIND[kind]
    retried_inside = is_transient(reason)  # retried with backoff within one probe step (even at 0 retries)
    assert [step["outcome"] for step in result.probe] == ([] if retried_inside else [reason]) + ["image"]
    assert result.rejections == {REASON_OF_KIND[kind]: 1} and result.kept_new == 3
    assert_consistent_folder(tmp_path / "faces", 3)


def test_probe_gives_up_only_after_every_try_failed(tmp_path: Path) -> None:
    config = SiteConfig(size=64, retry_after_s=0.0)
    with FaultsFirst(config, ["html_block"] * 3) as site:
        with pytest.raises(DiffkitError, match=r"gave no image in 3 tries \(block_page"):
            run_scrape(site, tmp_path / "faces", 3, concurrency=1)
        assert [record.kind for record in site.requests] == ["html_block"] * 3
    assert not (tmp_path / "faces").exists()


def test_a_resume_trusts_the_recorded_endpoint_and_still_counts_its_faults(tmp_path: Path) -> None:
    """Seen after a kill -9: the resume met a faulty moment. It goes straight to the endpoint that filled
    the folder (no probe: not even the first known endpoint is asked), and the faults count as usual."""
    out = tmp_path / "faces"
    with FaultsFirst(SiteConfig(size=64, retry_after_s=0.0, image_path="/image")) as site:
        candidates = tuple(site.base_url + path for path in ("/random-person.jpeg", "/", "/image"))
        run_scrape(site, out, 3, url=None, candidate_urls=candidates)
        served = len(site.requests)
        site.faults_first = ["html_block"] * 4  # more than the probe's tries, fewer than a stop's 5
        resumed = run_scrape(site, out, 6, url=None, candidate_urls=candidates, concurrency=1)
        after = site.requests[served:]
        assert [record.path for record in after] == ["/image"] * 7
        assert [record.kind for record in after] == ["html_block"] * 4 + ["image"] * 3
        assert resumed.probe == [
            {
                "url": site.base_url + "/image",
                "outcome": "recorded",
                "detail": "recorded in the manifest by an earlier run: not probed again",
            }
        ]
        assert resumed.rejections == {"block_page": 4} and resumed.kept_total == 6
        assert_consistent_folder(out, 6)

        site.config = dataclasses.replace(site.config, faults={"html_block": 1.0})  # now it really blocks
        served = len(site.requests)
        with pytest.raises(DiffkitError, match="5 block pages in a row"):
            run_scrape(site, out, 9, url=None, candidate_urls=candidates, concurrency=1)
        assert len(site.requests) - served == 5  # the usual stop condition, on the recorded endpoint
    assert_consistent_folder(out, 6)


def test_a_resume_with_the_same_url_is_not_probed_but_another_url_is(tmp_path: Path) -> None:
    out = tmp_path / "faces"
    with FaultsFirst(SiteConfig(size=64, retry_after_s=0.0)) as site:
        url = site.url.replace("http://", "http://alice:pw@")  # credentials: compared redacted
        run_scrape(site, out, 2, url=url)
        site.faults_first = ["html_block"] * 3  # every try of a probe
        resumed = run_scrape(site, out, 4, url=url, concurrency=1)
        assert [step["outcome"] for step in resumed.probe] == ["recorded"]
        assert resumed.kept_total == 4 and resumed.rejections == {"block_page": 3}
        other = site.url + "?another=1"  # another --url is a new source: probed, then recorded
        moved = run_scrape(site, out, 5, url=other, concurrency=1)
        assert [step["outcome"] for step in moved.probe] == ["image"]
        again = run_scrape(site, out, 6, url=other, concurrency=1)
        assert [step["outcome"] for step in again.probe] == ["recorded"]
    assert_consistent_folder(out, 6)


def test_same_host_redirects_are_followed(tmp_path: Path) -> None:
    config = SiteConfig(size=64, seed=1, faults={"redirect_offhost": 0.3}, redirect_host="127.0.0.1")
    with FaceSite(config) as site:  # "off-host" redirects that point back to this host and port
        result = run_scrape(site, tmp_path / "faces", 8, concurrency=1)
        records = site.requests
    redirects = [record for record in records if record.kind == "redirect_offhost"]
    assert redirects and not result.rejections
    assert len(records) == result.requests + len(redirects)  # each redirect: one more request, no failure
    assert_consistent_folder(tmp_path / "faces", 8)
    assert result.report_html is not None and not result.warnings


def test_an_unwritable_report_fails_before_any_request(tmp_path: Path) -> None:
    """Issue 24.10: it was a warning after the whole scrape; the README promises one line before."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the report folder should be")
    with FaceSite(SiteConfig(size=64)) as site:
        with pytest.raises(DiffkitError, match=r"cannot write the report \(--report\) to .*not-a-folder"):
            run_scrape(site, tmp_path / "faces", 3, report_path=blocker / "r.html")
        assert site.requests == []
    assert not (tmp_path / "faces").exists()


def test_resume_fetches_only_the_missing_and_extend_adds(tmp_path: Path) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=64)) as site:
        first = run_scrape(site, out, 5)
        digests = assert_consistent_folder(out, 5)
        stamps = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.jpg")}
        served = len(site.requests)
        again = run_scrape(site, out, 5)
        assert (again.kept_new, again.requests, len(site.requests)) == (0, 0, served)
        lost = sorted(stamps)[0]  # damage between runs: a lost file and a stray temp file
        lost.unlink()
        del stamps[lost]
        (lost.parent / f".{lost.name}.x1y2.tmp").write_bytes(b"half")
        extended = run_scrape(site, out, 9, user_agent="tester/1.0")
        new_records = site.requests[served:]
    assert first.kept_new == 5 and extended.kept_total == 9
    assert extended.kept_new == 5  # 4 to extend + 1 to replace the lost file
    assert (extended.reconcile["rows_dropped"], extended.reconcile["temp_files_removed"]) == (1, 1)
    kept_now = set(assert_consistent_folder(out, 9))
    assert set(digests) - kept_now == {lost.stem} and len(set(digests) & kept_now) == 4
    assert all(p.stat().st_mtime_ns == stamp for p, stamp in stamps.items())  # old files untouched
    assert {record.headers["User-Agent"] for record in new_records} == {"tester/1.0"}


def _turn_bad_after_first_request(site: FaceSite, bad: SiteConfig) -> threading.Thread:
    def flip() -> None:
        while not site.requests:
            time.sleep(0.002)
        site.config = bad

    thread = threading.Thread(target=flip, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(
    ("bad", "options", "message"),
    [
        (dict(faults={"not_image": 1.0}), dict(max_consecutive_failures=4), "4 requests in a row failed"),
        (dict(faults={"html_block": 1.0}), dict(max_block_pages=3), "3 block pages in a row"),
        (dict(faults={"http_503": 1.0}), dict(max_retries=2), "failed 3 times in a row"),
        (
            dict(faults={"http_503": 1.0}, retry_after_s=100.0),
            dict(retry_after_cap_s=5.0),
            "asked to wait 100 s",
        ),
        (dict(repeat_rate=1.0), dict(exhaustion_window=8), "exhausted: [5-8] of the last 8"),
    ],
)
def test_stop_conditions_end_cleanly_with_a_report(
    tmp_path: Path, bad: dict, options: dict, message: str
) -> None:
    good = SiteConfig(size=64, retry_after_s=0.0)
    out = tmp_path / "faces"
    with FaceSite(good) as site:
        flipper = _turn_bad_after_first_request(site, dataclasses.replace(good, **bad))
        with pytest.raises(DiffkitError, match=message) as caught:
            run_scrape(site, out, 50, **options)
        flipper.join()
        served = len(site.requests)
    assert "kept " in str(caught.value) and "report: " in str(caught.value)
    assert served < 50  # stopped, did not loop
    store = Store(out)
    kept = store.kept_count()
    store.close()
    assert_consistent_folder(out, kept)
