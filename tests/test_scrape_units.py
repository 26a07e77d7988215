"""Scrape building blocks without a network: validation, hashing, storage/reconcile, politeness maths."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import random
import re
import sqlite3
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from pathlib import Path
from types import SimpleNamespace

import imagehash
import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from diffkit.dataset.manifest import MANIFEST_NAME, RemovedFile, record_removals, relative_file_name
from diffkit.dataset.phash import to_signed64, to_unsigned64
from diffkit.errors import DiffkitError
from diffkit.fakesite.content import bomb_jpeg
from diffkit.fakesite.faces import draw_face
from diffkit.fakesite.transforms import encode_image
from diffkit.scrape.client import RateLimiter, full_jitter_delay, parse_retry_after, same_host
from diffkit.scrape.config import ScrapeConfig, parse_size
from diffkit.scrape.endpoints import probe_endpoints
from diffkit.scrape.kept import KeptIndex
from diffkit.scrape.report import reason_table
from diffkit.scrape.result import estimate_pool
from diffkit.scrape.storage import Store
from diffkit.scrape.validate import Rejection, ValidImage, validate

JPEG_HEADERS = {"content-type": "image/jpeg"}


def face_bytes(seed: int, size: int = 64, fmt: str = "JPEG") -> bytes:
    return encode_image(draw_face(np.random.default_rng(seed), size), fmt)


def reason(status: int, headers: dict[str, str], body: bytes, **kwargs: object) -> str:
    result = validate(status, headers, body, max_pixels=kwargs.pop("max_pixels", 10**7), **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, Rejection), result
    return result.reason


# -- validation ------------------------------------------------------------------------------------
def test_valid_jpeg_and_png_pass_with_hashes_on_the_shared_decode_path() -> None:
    data = face_bytes(1)
    result = validate(200, {**JPEG_HEADERS, "content-length": str(len(data))}, data, max_pixels=10**7)
    assert isinstance(result, ValidImage)
    assert (result.width, result.height, result.extension) == (64, 64, "jpg")
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    with Image.open(io.BytesIO(data)) as image:  # independent: draft("L", 256) then imagehash.phash
        image.draft("L", (256, 256))
        expected = int(str(imagehash.phash(image)), 16)
    assert result.phash == expected
    png = face_bytes(1, fmt="PNG")
    assert isinstance(validate(200, {"content-type": "image/png"}, png, max_pixels=10**7), ValidImage)


def test_each_rejection_reason() -> None:
    data = face_bytes(2)
    assert reason(503, JPEG_HEADERS, data) == "http_503"
    assert reason(404, {"content-type": "text/html"}, b"<html>no</html>") == "http_404"
    assert reason(200, {"content-type": "text/html"}, b"<!doctype html><p>blocked") == "block_page"
    assert reason(200, JPEG_HEADERS, b"  <html><body>CAPTCHA</body></html>") == "block_page"
    assert reason(200, {"content-type": "application/octet-stream"}, data) == "content_type"
    assert reason(200, JPEG_HEADERS, b"GIF89a" + data[6:]) == "magic_bytes"
    assert reason(200, {**JPEG_HEADERS, "content-length": str(len(data) + 5)}, data) == "length_mismatch"
    assert reason(200, JPEG_HEADERS, data[: len(data) * 9 // 10]) == "truncated_image"
    broken = data[:200] + bytes(len(data) - 202) + b"\xff\xd9"  # scan data zeroed, markers intact
    assert reason(200, JPEG_HEADERS, broken) in {"decode_error"}
    assert reason(200, JPEG_HEADERS, bomb_jpeg(30000)) == "decompression_bomb"
    assert reason(200, JPEG_HEADERS, data, max_pixels=63 * 64) == "decompression_bomb"
    assert reason(200, JPEG_HEADERS, data, expect_size=(128, 128)) == "wrong_size"
    assert isinstance(validate(200, JPEG_HEADERS, data, max_pixels=64 * 64, expect_size=(64, 64)), ValidImage)


def test_phash_int64_round_trip() -> None:
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1, 0xEA52AD85FA907AA1):
        signed = to_signed64(value)
        assert -(2**63) <= signed < 2**63
        assert to_unsigned64(signed) == value


def test_kept_index_matches_brute_force_hamming() -> None:
    rng = random.Random(0)
    hashes = [rng.getrandbits(64) for _ in range(3000)]  # more than the initial capacity
    index = KeptIndex()
    for number, value in enumerate(hashes):
        index.add(f"{number:064x}", value)
    probe = rng.getrandbits(64)
    assert index.nearest_distance(probe) == min(bin(probe ^ value).count("1") for value in hashes)
    assert KeptIndex().nearest_distance(probe) is None


# -- politeness ------------------------------------------------------------------------------------
def test_parse_retry_after_seconds_and_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert parse_retry_after("120", now) == 120.0
    assert parse_retry_after(" 0 ", now) == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90.0
    assert parse_retry_after("Wed, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # in the past: go now
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after("-5", now) is None
    assert parse_retry_after(None, now) is None


def test_full_jitter_is_uniform_below_the_capped_exponential() -> None:
    rng = random.Random(1)
    for attempt, bound in [(0, 1.0), (3, 8.0), (10, 60.0), (500, 60.0)]:
        draws = [full_jitter_delay(attempt, 1.0, 60.0, rng) for _ in range(2000)]
        assert 0.0 <= min(draws) < bound * 0.02
        assert bound * 0.98 < max(draws) <= bound
        assert abs(sum(draws) / len(draws) - bound / 2) < bound * 0.05


def test_same_host_policy() -> None:
    base = "http://example.com/random-person.jpeg"
    assert same_host(base, "http://example.com/other.jpeg")
    assert same_host(base, "https://example.com/x")  # upgrade on default ports
    assert not same_host(base, "http://cdn.example.com/x")
    assert not same_host(base, "http://example.com:8080/x")
    assert not same_host(base, "ftp://example.com/x")
    assert same_host("http://127.0.0.1:8000/a", "http://127.0.0.1:8000/b")
    assert not same_host("http://127.0.0.1:8000/a", "http://127.0.0.2:8000/a")


def test_rate_limiter_spacing_pause_and_aimd() -> None:
    async def scenario() -> tuple[list[float], float]:
        limiter = RateLimiter(max_rate=40.0)
        stamps = []
        for _ in range(6):
            await limiter.acquire()
            stamps.append(time.monotonic())
        limiter.pause(0.3)
        before = time.monotonic()
        await limiter.acquire()
        return stamps, time.monotonic() - before

    stamps, paused = asyncio.run(scenario())
    # slots are k/rate after the first request: a late wake-up never lets the long-run rate exceed 40/s
    assert all(stamp - stamps[0] >= k / 40 - 0.002 for k, stamp in enumerate(stamps))
    assert paused >= 0.3 - 0.002

    limiter = RateLimiter(max_rate=8.0)
    limiter.on_throttled()
    limiter.on_throttled()
    assert limiter.rate == 2.0
    for _ in range(100):
        limiter.on_throttled()
    assert limiter.rate == 8.0 / 64  # floor
    steps = 0
    while limiter.rate < 8.0:
        limiter.on_success()
        steps += 1
    assert limiter.rate == 8.0 and steps == 50  # additive: back up slowly


def test_a_later_shorter_retry_after_never_shortens_the_shared_pause() -> None:
    """Issue 24: ``pause`` overwriting instead of extending passed the suite. Workers answer in any
    order: a 503's "Retry-After: 2" handled after a 429's "Retry-After: 30" must not let every worker
    go again after 2 s."""
    now = [1000.0]
    limiter = RateLimiter(max_rate=10.0, clock=lambda: now[0])
    limiter.pause(30.0)
    now[0] += 1.0
    limiter.pause(2.0)
    assert limiter.paused_for() == 29.0
    now[0] += 5.0
    limiter.pause(0.0)
    assert limiter.paused_for() == 24.0
    limiter.pause(40.0)  # a longer one does extend it
    assert limiter.paused_for() == 40.0

    async def scenario() -> float:  # and acquire, which every worker calls, waits for the long one
        limiter = RateLimiter(max_rate=1000.0)
        limiter.pause(0.3)
        limiter.pause(0.01)
        started = time.monotonic()
        await limiter.acquire()
        return time.monotonic() - started

    assert asyncio.run(scenario()) >= 0.3 - 0.002


# -- config and probe logic ------------------------------------------------------------------------
def test_config_rejects_bad_options() -> None:
    for bad in (
        dict(n=0),
        dict(n=1, rps=0),
        dict(n=1, concurrency=0),
        dict(n=1, url="ftp://x/y.jpg"),
        dict(n=1, url="file:///etc/passwd"),
        dict(n=1, threshold=65),
    ):
        with pytest.raises(DiffkitError):
            ScrapeConfig(**bad)  # type: ignore[arg-type]
    assert parse_size("1024x768") == (1024, 768)
    with pytest.raises(DiffkitError, match="is a file, not a folder"):
        ScrapeConfig(n=1, out=Path(__file__))
    with pytest.raises(DiffkitError):
        parse_size("big")


def test_probe_falls_back_in_order_and_names_every_failure() -> None:
    image = validate(200, JPEG_HEADERS, face_bytes(3), max_pixels=10**7)
    assert isinstance(image, ValidImage)
    answers = {"a": Rejection("http_404"), "b": Rejection("block_page", "HTML"), "c": (image, "c2")}
    tried: list[str] = []

    async def attempt(url: str) -> tuple[ValidImage, str] | Rejection:
        tried.append(url)
        return answers[url]  # type: ignore[return-value]

    paused: list[int] = []

    async def pause(failed: int) -> None:
        paused.append(failed)

    found = asyncio.run(probe_endpoints(("a", "b", "c"), None, attempt, pause))
    # a 404 is "not here": no second try; an HTML page may be a one-off: 3 tries, with backoff between
    assert (found.url, found.served_by, tried) == ("c", "c2", ["a", "b", "b", "b", "c"])
    assert [step.outcome for step in found.steps] == ["http_404", *["block_page"] * 3, "image"]
    assert paused == [0, 1]
    answers["f"] = Rejection("truncated")  # transient: already retried inside one attempt
    tried.clear()
    assert asyncio.run(probe_endpoints(("f", "c"), None, attempt)).url == "c" and tried == ["f", "c"]
    flaky = [Rejection("block_page", "HTML"), Rejection("redirect_offhost"), (image, "g")]

    async def flaky_attempt(url: str) -> tuple[ValidImage, str] | Rejection:
        return flaky.pop(0)  # type: ignore[return-value]

    assert asyncio.run(probe_endpoints((), "g", flaky_attempt)).url == "g"  # a user's URL gets 3 tries too
    with pytest.raises(DiffkitError, match="a -> http_404; b -> block_page"):
        asyncio.run(probe_endpoints(("a", "b"), None, attempt))
    with pytest.raises(DiffkitError, match="b gave no image in 3 tries .*HTML page"):
        asyncio.run(probe_endpoints(("a", "c"), "b", attempt))  # a user's URL: no fallback
    answers.update(d=Rejection("connection_error"), e=Rejection("timeout"))
    with pytest.raises(DiffkitError, match="cannot reach any known image endpoint .*check your network"):
        asyncio.run(probe_endpoints(("d", "e"), None, attempt))  # offline: not "the site moved"


# -- storage ---------------------------------------------------------------------------------------
def _valid(seed: int, size: int = 64) -> ValidImage:
    result = validate(200, JPEG_HEADERS, face_bytes(seed, size), max_pixels=10**7)
    assert isinstance(result, ValidImage)
    return result


def test_store_writes_content_addressed_files_manifest_and_metadata(tmp_path: Path) -> None:
    store = Store(tmp_path)
    images = [_valid(seed) for seed in range(3)]
    names = [store.add(image, "http://site/x") for image in images]
    store.count("http_503", 2)
    store.count("http_503")
    store.write_metadata()
    for image, name in zip(images, names, strict=True):
        assert name == f"images/{image.sha256[:2]}/{image.sha256}.jpg"
        assert (tmp_path / name).read_bytes() == image.data
    assert store.counts() == {"http_503": 3}
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    assert [row["file_name"] for row in rows] == names
    assert [int(row["phash"], 16) for row in rows] == [image.phash for image in images]
    store.close()
    reopened = Store(tmp_path)
    assert reopened.kept_count() == 3
    assert reopened.manifest.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_reconcile_fixes_planted_damage_and_says_what(tmp_path: Path) -> None:
    store = Store(tmp_path)
    kept = [_valid(seed) for seed in range(3)]
    names = [store.add(image, "u") for image in kept]
    store.close()
    (tmp_path / names[0]).unlink()  # a row without its file
    truncated = (tmp_path / names[1]).read_bytes()[:-100]
    (tmp_path / names[1]).write_bytes(truncated)  # a row whose file lost its end (wrong size)
    images = tmp_path / "images"
    (images / "ab").mkdir(exist_ok=True)
    (images / "ab" / ".abc.jpg.123.tmp").write_bytes(b"partial")  # interrupted atomic writes
    (tmp_path / ".metadata.jsonl.x.tmp").write_text("{")
    orphan = _valid(10)  # a complete file whose row never got committed
    orphan_path = images / orphan.sha256[:2] / f"{orphan.sha256}.jpg"
    orphan_path.parent.mkdir(exist_ok=True)
    orphan_path.write_bytes(orphan.data)
    liar = _valid(11)  # named after a different hash
    liar_path = images / "00" / f"{'0' * 64}.jpg"
    liar_path.parent.mkdir(exist_ok=True)
    liar_path.write_bytes(liar.data)
    corrupt = face_bytes(12)[:300]
    corrupt_sha = hashlib.sha256(corrupt).hexdigest()
    corrupt_path = images / corrupt_sha[:2] / f"{corrupt_sha}.jpg"
    corrupt_path.parent.mkdir(exist_ok=True)
    corrupt_path.write_bytes(corrupt)
    (images / "ab" / "notes.txt").write_text("mine")

    store = Store(tmp_path)
    report = store.reconcile(max_pixels=10**7, threshold=4)
    assert (report.temp_files_removed, report.files_adopted, report.files_removed, report.rows_dropped) == (
        2,
        1,
        2,
        2,
    )
    assert report.unknown_files == ["images/ab/notes.txt"]
    assert "adopted 1" in report.describe() and "dropped 2" in report.describe()
    on_disk = sorted(p.relative_to(tmp_path).as_posix() for p in images.rglob("*.jpg"))
    rows = store.rows()
    assert sorted(row["file_name"] for row in rows) == on_disk
    assert {row["sha256"] for row in rows} == {kept[2].sha256, orphan.sha256}
    assert not (tmp_path / names[1]).exists()  # the truncated file went with its row
    assert not list(tmp_path.rglob("*.tmp"))
    assert len(store.index) == 2
    again = store.reconcile(max_pixels=10**7, threshold=4)
    assert not again.changed
    store.close()


def test_images_removed_by_dedupe_count_as_known_duplicates(tmp_path: Path) -> None:
    store = Store(tmp_path)
    kept, removed = _valid(20), _valid(21)
    store.add(kept, "u")
    name = store.add(removed, "u")
    # what `diffkit dedupe --action delete` does to the manifest after deleting the file
    (tmp_path / name).unlink()
    moved = record_removals(tmp_path, [RemovedFile(name, "delete", None, "images/k.jpg", 2)])
    assert moved == 1
    store.load_index()
    assert store.kept_count() == 1 and len(store.index) == 2
    assert removed.sha256 in store.index.sha256 and store.index.nearest_distance(removed.phash) == 0
    store.close()


def _quarantine(root: Path, name: str, keeper: str) -> bytes:
    """What `diffkit dedupe --action move` does: the file to the quarantine, its row to dedupe_removed."""
    data = (root / name).read_bytes()
    moved_to = root.parent / "quarantine" / name
    moved_to.parent.mkdir(parents=True)
    (root / name).rename(moved_to)
    assert record_removals(root, [RemovedFile(name, "move", str(moved_to), keeper, 2)]) == 1
    return data


def test_reconcile_removes_a_restored_duplicate_that_dedupe_removed(tmp_path: Path) -> None:
    """A quarantined duplicate put back under images/ is a copy of a known image: removed, not adopted."""
    root = tmp_path / "out"
    store = Store(root)
    kept, duplicate, fresh = _valid(40), _valid(41), _valid(42)
    keeper = store.add(kept, "u")
    name = store.add(duplicate, "u")
    store.close()
    data = _quarantine(root, name, keeper)
    (root / name).write_bytes(data)  # the user moves it back by hand
    fresh_path = root / relative_file_name(fresh.sha256, fresh.extension)
    fresh_path.parent.mkdir(parents=True, exist_ok=True)
    fresh_path.write_bytes(fresh.data)  # and one genuine orphan, which is adopted
    store = Store(root)
    report = store.reconcile(max_pixels=10**7, threshold=4)
    assert (report.files_adopted, report.files_removed, report.rows_dropped) == (1, 1, 0)
    assert not (root / name).exists() and fresh_path.exists()
    assert {row["sha256"] for row in store.rows()} == {kept.sha256, fresh.sha256}
    assert len(store.index) == 3 and duplicate.sha256 in store.index.sha256
    assert not store.reconcile(max_pixels=10**7, threshold=4).changed
    store.close()


def test_reconcile_removes_an_exact_copy_even_when_its_recorded_phash_disagrees(tmp_path: Path) -> None:
    """The sha256 stage does not lean on the pHash: a removed image whose recorded pHash is not what this
    decoder computes (a manifest written by another version or decoder) is still an exact duplicate."""
    root = tmp_path / "out"
    store = Store(root)
    kept, duplicate = _valid(43), _valid(44)
    keeper = store.add(kept, "u")
    name = store.add(duplicate, "u")
    store.close()
    data = _quarantine(root, name, keeper)
    far = to_signed64(duplicate.phash ^ 0xFFFF_FFFF_FFFF_FFFF)  # 64 bits away from this decode's
    with contextlib.closing(sqlite3.connect(root / MANIFEST_NAME)) as db, db:
        db.execute("UPDATE dedupe_removed SET phash = ? WHERE sha256 = ?", (far, duplicate.sha256))
    (root / name).write_bytes(data)
    store = Store(root)
    store.load_index()
    assert duplicate.sha256 in store.index.sha256
    assert not store.index.near_duplicate(duplicate.phash, data, 4, thumb=duplicate.thumb)  # by pHash: new
    report = store.reconcile(max_pixels=10**7, threshold=4)
    assert (report.files_adopted, report.files_removed) == (0, 1)
    assert not (root / name).exists()
    assert [row["sha256"] for row in store.rows()] == [kept.sha256]
    store.close()


def test_report_table_separates_this_run_from_all_runs() -> None:
    this_run = {"http_503": 1, "duplicate_exact": 0, "duplicate_near": 2}
    all_runs = {"http_503": 4, "duplicate_exact": 3, "duplicate_near": 2, "block_page": 1}
    assert reason_table(this_run, all_runs) == [
        {"reason": "block_page", "this run": 0, "all runs": 1},
        {"reason": "duplicate_exact", "this run": 0, "all runs": 3},
        {"reason": "duplicate_near", "this run": 2, "all runs": 2},
        {"reason": "http_503", "this run": 1, "all runs": 4},
    ]
    assert reason_table({"duplicate_exact": 0}, {}) == []


def test_pool_estimate_counts_images_kept_by_earlier_runs() -> None:
    assert estimate_pool(0, 100, 0) is None
    assert estimate_pool(0, 1000, 50) == 1000**2 / 100
    # A uniform draw from 10,000: starting from 5,000 kept, 1,000 draws meet ~550 known images.
    rng = random.Random(3)
    pool, kept = 10_000, set(range(5000))
    draws = [rng.randrange(pool) for _ in range(1000)]
    duplicates = 0
    for image in draws:
        duplicates += image in kept
        kept.add(image)
    estimate = estimate_pool(5000, 1000, duplicates)
    assert estimate is not None and abs(estimate - pool) < 0.1 * pool


# -- the progress bar --------------------------------------------------------------------------------------
def test_bar_at_80_columns_keeps_count_and_eta_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: a long rejection text pushed kept/N and the ETA out of an 80-column terminal."""
    import diffkit.console
    from diffkit.console import Bar
    from diffkit.scrape.run import _Scrape

    console = Console(file=io.StringIO(), width=80, force_terminal=False, color_system=None)
    monkeypatch.setattr(diffkit.console, "err_console", console)  # the bar's stderr console
    # the run's own refresh, on a stand-in holding only the counters it reads
    run = SimpleNamespace(
        bar=Bar("kept", 30000, enabled=True, transient=False),  # not transient: the last frame stays
        bar_shown_at=0.0,
        started=time.monotonic() - 10,
        requests=123_456,
        kept=12_345,
        duplicates=Counter(duplicate_exact=99_999, duplicate_near=7),
        rejections=Counter({"not_an_image_html": 50_000, "decode_error": 38_888, "http_503": 1}),
    )
    with run.bar:
        _Scrape.show_progress(run, force=True)  # type: ignore[arg-type]
    lines = [line for line in console.file.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    line = lines[0]
    assert line.startswith("kept ") and " 12345/30000 " in line, line
    assert re.search(r" 12\d\d\d\.\d req/s dup 100006 ", line), line  # rate and duplicates lead the info
    assert re.search(r"\d+:\d\d:\d\d (\d+:\d\d:\d\d|-:--:--)$", line.rstrip()), line  # elapsed, ETA


# -- validation cost: one reduced-scale decode serves the check and the pHash ---------------------------
def _old_full_decode_verdict(data: bytes) -> bool:
    """What the full decode (the validation before issue 14) accepted."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except (OSError, ValueError, SyntaxError, EOFError):
        return False
    return True


def test_validation_decodes_each_jpeg_once_at_reduced_scale_with_the_same_phash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from PIL import ImageFile

    from diffkit.dataset.phash import DRAFT_DECODE, phash

    data = face_bytes(11, size=640)  # > 8x the draft size: libjpeg scales by 1/8
    decoded_sizes: list[tuple[int, int]] = []
    original_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        if self.tile:  # an image with tiles left to decode: a real decode, not a no-op re-load
            decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    result = validate(200, JPEG_HEADERS, data, max_pixels=10**7, expect_size=(640, 640))
    monkeypatch.undo()
    assert isinstance(result, ValidImage)
    assert (result.width, result.height) == (640, 640)  # the header's size, not the decoded one
    assert decoded_sizes == [(80, 80)]  # one decode, at 1/8 scale: no second full-size pass
    assert result.phash == phash(data, DRAFT_DECODE)  # the shared pHash, unchanged for these bytes


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_validation_decodes_other_formats_once_in_full(fmt: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import ImageFile

    from diffkit.dataset.phash import DRAFT_DECODE, phash

    data = face_bytes(12, size=48, fmt=fmt)
    calls: list[tuple[int, int]] = []
    original_load = ImageFile.ImageFile.load

    def counting_load(self: ImageFile.ImageFile) -> object:
        if self.tile:
            calls.append(self.size)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", counting_load)
    result = validate(200, {"content-type": f"image/{fmt.lower()}"}, data, max_pixels=10**7)
    monkeypatch.undo()
    assert isinstance(result, ValidImage) and result.phash == phash(data, DRAFT_DECODE)
    assert calls == [(48, 48)]


def test_reduced_scale_validation_rejects_exactly_what_a_full_decode_rejects() -> None:
    """Corrupt streams: the verdict of the one reduced-scale decode equals the old full decode's."""
    data = face_bytes(13, size=600)
    rng = np.random.default_rng(0)
    variants = {"intact": data, "no scan data": data[:400] + b"\xff\xd9"}
    for cut in (0.1, 0.5, 0.9):
        variants[f"cut at {cut}"] = data[: int(len(data) * cut)] + b"\xff\xd9"
    for k in range(6):  # bytes of the header and the entropy-coded data overwritten
        garbled = bytearray(data)
        start = int(rng.integers(2, len(data) - 40))
        garbled[start : start + 24] = rng.integers(0, 256, 24, dtype=np.uint8).tobytes()
        variants[f"garbled {k} at {start}"] = bytes(garbled)
    for cut in (20, 150):  # the header itself broken
        variants[f"header cut at {cut}"] = data[:cut] + b"\xff\xd9"
    verdicts = {}
    for name, body in variants.items():
        result = validate(200, JPEG_HEADERS, body, max_pixels=10**7)
        verdicts[name] = isinstance(result, ValidImage)
        assert verdicts[name] == _old_full_decode_verdict(body), (name, result)
        if not verdicts[name]:
            assert isinstance(result, Rejection) and result.reason == "decode_error", (name, result)
    assert verdicts["intact"] and not verdicts["header cut at 20"]
    assert not all(verdicts.values())  # some corruptions are caught, by both decodes alike


# -- issue 14: one decode feeds the check, the pHash and dedupe's thumbnail; the sync Fetcher -------------
@pytest.mark.parametrize("fmt", ["JPEG", "L-JPEG", "PNG"])
def test_validation_gives_exactly_dedupes_phash_and_thumbnail(fmt: str) -> None:
    """The stored pHash and the near-duplicate thumbnail must be what ``diffkit dedupe`` computes."""
    from diffkit.dataset.phash import DRAFT_DECODE, phash
    from diffkit.dataset.verify import open_for_hash_and_thumbnail
    from diffkit.scrape.validate import decode_image

    picture = draw_face(np.random.default_rng(21), 600)  # > 8x the draft size: decoded at 1/8 scale
    buffer = io.BytesIO()
    (picture.convert("L") if fmt == "L-JPEG" else picture).save(buffer, format=fmt[-4:].strip("-"))
    data = buffer.getvalue()
    result = decode_image(data, 10**8, None)
    assert isinstance(result, ValidImage) and result.thumb is not None
    assert result.thumb == open_for_hash_and_thumbnail(data, DRAFT_DECODE)[1]  # dedupe's hashing worker
    assert result.phash == phash(data, DRAFT_DECODE)
    with Image.open(io.BytesIO(data)) as image:  # independent: the thumbnail from its definition
        if fmt.endswith("JPEG"):  # the same DCT scale; greyscale stays greyscale
            image.draft("L" if fmt == "L-JPEG" else "YCbCr", (64, 64))
            assert image.size == (75, 75)
        colour = image.convert("RGB").convert("YCbCr") if image.mode != "YCbCr" else image
        expected = colour.resize((16, 16), Image.Resampling.BOX).tobytes()
    assert result.thumb == expected


def test_near_duplicate_check_of_fetched_images_decodes_nothing_in_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thumbnails come from validation (the worker thread) and are remembered for kept images."""
    import diffkit.scrape.kept as kept_module
    from diffkit.scrape.validate import decode_image

    store = Store(tmp_path / "out")
    kept = decode_image(face_bytes(31, size=128), 10**8, None)
    distinct = decode_image(face_bytes(32, size=128), 10**8, None)
    with Image.open(io.BytesIO(kept.data)) as image:  # a near copy: the same face re-encoded
        copy = decode_image(encode_image(image.convert("RGB"), "JPEG", quality=60), 10**8, None)
    assert isinstance(kept, ValidImage) and isinstance(copy, ValidImage) and isinstance(distinct, ValidImage)
    assert copy.sha256 != kept.sha256
    store.add(kept, "http://example.com/x")
    decodes: list[int] = []
    real = kept_module.open_for_hash_and_thumbnail
    monkeypatch.setattr(kept_module, "open_for_hash_and_thumbnail", lambda *a: decodes.append(1) or real(*a))
    index = store.index
    assert index.near_duplicate(copy.phash, copy.data, 64, thumb=copy.thumb) is True
    assert index.near_duplicate(distinct.phash, distinct.data, 64, thumb=distinct.thumb) is False
    assert decodes == []  # neither the fetched image nor the kept file was decoded again
    assert index.near_duplicate(copy.phash, copy.data, 64) is True  # without a thumbnail: decoded here
    assert decodes == [1]
    store.close()


@pytest.mark.parametrize("drip", [True, False])
def test_fetcher_deadline_covers_the_whole_request(drip: bool) -> None:
    """A server dripping one byte at a time (each read on time) or going silent after the headers is cut
    off at the request's deadline, not at httpx's per-read timeout or when the server gives up."""
    import socket
    import threading

    from diffkit.scrape.client import Fetcher

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.recv(4096)
            connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(40):  # the server gives up after 4 s
                if done.wait(0.1):
                    return
                if drip:
                    connection.sendall(b"\xff")

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    fetcher = Fetcher("test", 0.8, 10**6, 1)
    started = time.monotonic()
    try:
        answer = fetcher.get(f"http://127.0.0.1:{port}/x.jpg")
    finally:
        elapsed = time.monotonic() - started
        done.set()
        fetcher.close()
        listener.close()
    assert getattr(answer, "reason", None) == "timeout", answer
    assert 0.7 <= elapsed < 2.0, elapsed  # the 0.8 s deadline, with room for a loaded machine


def test_worker_pool_runs_jobs_on_daemon_threads_and_passes_results_and_errors() -> None:
    import threading

    from diffkit.scrape.client import WorkerPool

    pool = WorkerPool(2)
    assert pool._threads == []  # nothing started before the first job
    gate = threading.Event()
    blockers = [pool.submit(gate.wait, 5.0) for _ in range(2)]  # both threads busy
    queued = pool.submit(lambda: 1 / 0)
    assert queued.cancel()  # still queued: cancelled, never run
    results = [pool.submit(pow, 2, k) for k in range(5)]
    failing = pool.submit(int, "x")
    gate.set()
    assert [future.result(5) for future in results] == [1, 2, 4, 8, 16]
    assert all(future.result(5) is True for future in blockers)
    with pytest.raises(ValueError):
        failing.result(5)
    assert queued.cancelled() and all(thread.daemon for thread in pool._threads)
    pool.shutdown(wait=True)
    assert not any(thread.is_alive() for thread in pool._threads)
