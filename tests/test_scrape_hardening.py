"""``scrape`` against hostile servers, hostile folders and a hostile machine (issue 9).

Each test names the fault it plants; each one failed on the code before the fix (or with the
deliberate bug its docstring names applied).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import io
import os
import random
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from test_scrape_cli import _popen, _scrape_command, _wait_for_files
from test_scrape_site import assert_consistent_folder, run_scrape

from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import draw_face
from diffkit.fakesite.site import FaceSite, SiteConfig
from diffkit.fakesite.transforms import encode_image
from diffkit.lock import folder_lock
from diffkit.scrape.kept import KeptIndex
from diffkit.scrape.storage import Store
from diffkit.scrape.validate import ValidImage, phash_of, validate

JPEG = {"content-type": "image/jpeg"}


def _valid(seed: int, size: int = 32) -> ValidImage:
    result = validate(200, JPEG, encode_image(draw_face(np.random.default_rng(seed), size), "JPEG"), 10**7)
    assert isinstance(result, ValidImage)
    return result


def _run_cli(command: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _one_error_line(process: subprocess.CompletedProcess[str], expected: str) -> str:
    """Exit 2, no traceback, and the error is a single line (the last one) containing ``expected``."""
    assert process.returncode == 2, (process.stdout, process.stderr)
    assert "Traceback" not in process.stderr and "Traceback" not in process.stdout, process.stderr
    lines = process.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], process.stderr
    assert expected in errors[0], errors[0]
    return errors[0]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file (and symlink) under ``folder``: its content hash and mtime, without following links."""
    found = {}
    for directory, _, names in os.walk(folder):
        for name in names:
            path = Path(directory, name)
            data = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            found[path.relative_to(folder).as_posix()] = (digest, os.lstat(path).st_mtime_ns)
    return found


@contextlib.contextmanager
def _mount(target: Path, *arguments: str) -> Iterator[None]:
    """``mount ARGUMENTS TARGET`` for the block, or skip where this test may not mount (not root)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs / read-only bind mount")
    done = subprocess.run(["mount", *arguments, str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mount is not allowed here: {done.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


# -- 1. nothing outside the folder is ever deleted --------------------------------------------------
def test_reconcile_leaves_rows_and_symlinks_pointing_outside_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    keep = outside / "keep.txt"
    keep.write_text("the user's file")
    hex_victim = outside / ("ab" + "0" * 62 + ".jpg")  # matches diffkit's naming, fails verification
    hex_victim.write_bytes(b"not an image, but mine")
    out = tmp_path / "faces"
    store = Store(out)
    kept = _valid(1)
    store.add(kept, "http://site/x")
    bad_rows = [str(keep), "../outside/keep.txt", f"images/ab/{'ab' + '0' * 62}.jpg"]
    for number, name in enumerate(bad_rows):  # wrong sizes: old reconcile "dropped" them with their files
        store.manifest.db.execute(
            "INSERT INTO images(sha256, file_name, phash, width, height, bytes, url, fetched_at)"
            " VALUES (?, ?, 0, 1, 1, 999999, NULL, 'x')",
            ("ab" + f"{number}".rjust(62, "0"), name),
        )
    store.close()
    (out / "images" / "ab").symlink_to(outside, target_is_directory=True)
    before = _snapshot(outside)

    store = Store(out)
    report = store.reconcile(max_pixels=10**7, threshold=4)
    assert _snapshot(outside) == before and keep.read_text() == "the user's file"
    assert report.unsafe_rows_dropped == 3 and report.rows_dropped == report.files_removed == 0
    assert len(report.unsafe) == 4  # three rows and the symlinked folder
    assert any("images/ab: symlink" in line for line in report.unsafe)
    assert any(str(keep) in line and "absolute" in line for line in report.unsafe)
    assert "outside the folder or through a symlink" in report.describe()
    assert [row["sha256"] for row in store.rows()] == [kept.sha256]  # the real image stays kept
    # A write through the symlinked folder is refused too (the image's sha256 is made to start with ab).
    crafted = ValidImage(kept.data + b"\0", "ab" + "1" * 62, kept.phash, 32, 32, "jpg")
    with pytest.raises(DiffkitError, match="symlink"):
        store.add(crafted, "u")
    store.close()
    assert _snapshot(outside) == before


# -- 2. a hostile Retry-After ---------------------------------------------------------------------
@pytest.mark.parametrize("value", ["²", "¹"])
def test_retry_after_that_is_not_ascii_digits_is_ignored(tmp_path: Path, value: str) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=32, max_rps=3, retry_after_text=value)) as site:
        result = run_scrape(
            site, out, 4, concurrency=2, rps=100.0, max_retries=30, max_consecutive_failures=60
        )
        throttled = [record for record in site.requests if record.status == 429]
    assert throttled, "the site never throttled: the test proves nothing"
    assert result.kept_total == 4 and result.rejections["http_429"] == len(throttled)
    assert_consistent_folder(out, 4)  # metadata.jsonl written
    assert Path(str(result.report_json)).is_file()


# -- 3. rich markup in user text ------------------------------------------------------------------
def test_markup_in_url_folder_and_file_names_is_printed_literally(tmp_path: Path) -> None:
    out = tmp_path / "x[bold]y[/]"
    (out / "images" / "cd").mkdir(parents=True)
    (out / "images" / "cd" / "[bold]y.png").symlink_to(tmp_path)  # reported by name, not followed
    with FaceSite(SiteConfig(size=32)) as site:
        url = site.url + "?q=[/]&r=[bold]z"
        command = [c for c in _scrape_command(url, out, 2) if c != "--no-progress"]  # the bar too
        done = _run_cli(command, tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    text = done.stdout + done.stderr
    assert f"images in {out} " in done.stdout
    assert "?q=[/]&r=[bold]z" in text and "images/cd/[bold]y.png: symlink" in done.stderr


# -- 4. a User-Agent that HTTP cannot carry ---------------------------------------------------------
def test_non_ascii_user_agent_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=32)) as site:
        done = _run_cli([*_scrape_command(site.url, out, 2), "--user-agent", "bot/1.0 (café)"], tmp_path)
        assert site.requests == []
    _one_error_line(done, "--user-agent must be printable ASCII")
    assert len(done.stderr.strip().splitlines()) == 1
    assert not out.exists()


# -- 5. one run per folder --------------------------------------------------------------------------
def test_a_second_scrape_into_a_locked_folder_exits_2_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=32)) as site:
        run_scrape(site, out, 2)
        before = _snapshot(out)
        with folder_lock(out, "scrape"):
            done = _run_cli(_scrape_command(site.url, out, 5), tmp_path)
        served = len(site.requests)
    line = _one_error_line(done, "is in use by `diffkit scrape`")
    assert f"pid {os.getpid()}," in line and len(done.stderr.strip().splitlines()) == 1
    assert served == 2  # the second run sent nothing
    after = _snapshot(out)
    assert {k: v for k, v in after.items() if k != ".diffkit.lock"} == {
        k: v for k, v in before.items() if k != ".diffkit.lock"
    }


def test_two_real_scrapes_into_one_folder_one_waits_out_the_other(tmp_path: Path) -> None:
    out, n = tmp_path / "faces", 24
    with FaceSite(SiteConfig(size=32, latency_s=0.02)) as site:
        first = _popen(_scrape_command(site.url, out, n, rps=3), tmp_path)
        _wait_for_files(out, 2, first)
        second = _run_cli(_scrape_command(site.url, out, n), tmp_path)
        first_out, first_err = first.communicate(timeout=120)
    assert first.returncode == 0, first_err
    line = _one_error_line(second, "is in use by `diffkit scrape`")
    assert f"(pid {first.pid}," in line
    assert_consistent_folder(out, n)  # exactly n: no double rows, no lost temp files


# -- 6. a full disk ---------------------------------------------------------------------------------
def test_disk_full_is_one_line_keeps_the_folder_consistent_and_resumes(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    with _mount(disk, "-t", "tmpfs", "-o", "size=4m", "tmpfs"):
        filler = disk / "filler"
        with open(filler, "wb") as handle:  # leave ~150 KB: a dozen images and their WAL frames
            handle.write(bytes(4 * 1024 * 1024 - 150 * 1024))
        out, n = disk / "faces", 60
        with FaceSite(SiteConfig(size=64)) as site:
            command = _scrape_command(site.url, out, n)  # the report goes to tmp_path, off the tmpfs
            full = _run_cli(command, tmp_path)
            _one_error_line(full, "is full")
            still_full = _run_cli(command, tmp_path)  # rerun before any space is freed
            _one_error_line(still_full, "is full")
            # what is there is whole: every row names a complete file and every file has its row
            with sqlite3.connect(out / "manifest.sqlite") as db:
                rows = dict(db.execute("SELECT file_name, sha256 FROM images").fetchall())
            files = {p.relative_to(out).as_posix() for p in (out / "images").glob("*/*") if p.is_file()}
            assert 0 < len(rows) < n and set(rows) == files
            for name, sha in rows.items():
                assert hashlib.sha256((out / name).read_bytes()).hexdigest() == sha
            filler.unlink()
            resumed = _run_cli([*command, "--json"], tmp_path)
        assert resumed.returncode == 0, resumed.stderr
        assert_consistent_folder(out, n)
        assert set(rows) <= {p.relative_to(out).as_posix() for p in (out / "images").glob("*/*")}


# -- 7. a read-only folder and a damaged manifest ----------------------------------------------------
@pytest.mark.parametrize(
    "manifest", [b"\x00garbage, not sqlite" * 50, b"SQLite format 3\x00" + bytes(range(256)) * 20]
)
def test_damaged_manifest_is_one_line_and_touches_nothing(tmp_path: Path, manifest: bytes) -> None:
    out = tmp_path / "faces"
    image = _valid(3)
    (out / "images" / image.sha256[:2]).mkdir(parents=True)
    (out / "images" / image.sha256[:2] / f"{image.sha256}.jpg").write_bytes(image.data)
    (out / "manifest.sqlite").write_bytes(manifest)
    before = _snapshot(out)
    with FaceSite(SiteConfig(size=32)) as site:
        done = _run_cli(_scrape_command(site.url, out, 3), tmp_path)
        assert site.requests == []
    _one_error_line(done, "is damaged or not a diffkit manifest")
    after = _snapshot(out)
    after.pop(".diffkit.lock", None)  # at most the lock file appears (when the damage is past the header)
    assert after == before
    assert not (out / "manifest.sqlite-wal").exists()


def test_existing_folder_on_a_read_only_mount_is_one_line_and_touches_nothing(tmp_path: Path) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=32)) as site:
        run_scrape(site, out, 3)
        before = _snapshot(out)
        with _mount(out, "--bind", str(out)):
            subprocess.run(["mount", "-o", "remount,bind,ro", str(out)], check=True)
            done = _run_cli(_scrape_command(site.url, out, 5), tmp_path)
            assert _snapshot(out) == before
        served = len(site.requests)
    _one_error_line(done, "is not writable (Read-only file system)")
    assert served == 3


# -- 8. credentials in the URL ------------------------------------------------------------------------
# Issue 24.1: a password with a space, a no-break space or a line separator was written in plain text
# (percent-encoded in the manifest) while httpx still sent it. "s3cr3t" alone is looked for, so no
# encoding of the password (raw, %-encoded, JSON-escaped) can slip through.
@pytest.mark.parametrize("secret", ["s3cr3t-PW", "s3cr3t PW", "s3cr3t\u00a0PW", "s3cr3t\u2028PW"])
def test_url_credentials_are_used_but_never_written_or_printed(tmp_path: Path, secret: str) -> None:
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=32, faults={"http_503": 0.2}, retry_after_s=0.0)) as site:
        url = site.url.replace("http://", f"http://alice:{secret}@")
        text = _run_cli(_scrape_command(url, out, 3), tmp_path)
        as_json = _run_cli([*_scrape_command(url, out, 5), "--json"], tmp_path)
        html_page = url.replace("/random-person.jpeg", "/")
        broken = _run_cli(_scrape_command(html_page, tmp_path / "x", 1), tmp_path)
        headers = [record.headers for record in site.requests]
    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    assert broken.returncode == 2
    expected = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    assert {header.get("Authorization") for header in headers} == {expected}  # still used for requests
    assert "alice:***@" not in text.stdout and "***@127.0.0.1" in text.stdout
    for done in (text, as_json, broken):
        assert "s3cr3t" not in done.stdout + done.stderr
    assert "***@127.0.0.1" in broken.stderr  # the refusal names the URL, without the password
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"manifest.sqlite", "metadata.jsonl", "report.html", "report.json"} <= {p.name for p in written}
    assert [p for p in written if b"s3cr3t" in p.read_bytes()] == []
    with contextlib.closing(sqlite3.connect(tmp_path / "faces" / "manifest.sqlite")) as db:
        urls = {url for (url,) in db.execute("SELECT url FROM images")}
    assert urls == {site.url.replace("http://", "http://***@")}


# -- 9. tests that catch deliberate bugs -------------------------------------------------------------
def test_retry_after_holds_back_every_worker(tmp_path: Path) -> None:
    """Bug caught: only the worker that received the 429 honours Retry-After."""
    with FaceSite(SiteConfig(size=32, max_rps=4, retry_after_s=1.0)) as site:
        run_scrape(site, tmp_path / "faces", 10, concurrency=4, rps=50.0)
        records = site.requests
    throttled = [record.time_monotonic for record in records if record.status == 429]
    assert throttled, "the site never throttled: the test proves nothing"
    # Requests already on the wire when the 429 left may still arrive just after it; none may be sent
    # later inside the announced second, by any worker.
    during = [
        record.index
        for record in records
        for start in throttled
        if start + 0.3 < record.time_monotonic < start + 0.95
    ]
    assert during == []


def test_store_add_publishes_a_complete_fsynced_file_by_rename(tmp_path: Path, monkeypatch) -> None:
    """Bug caught: Store.add writes the image file in place (no temp file, no fsync, no rename)."""
    image = _valid(4)
    final = tmp_path / "images" / image.sha256[:2] / f"{image.sha256}.jpg"
    synced: list[str] = []
    renamed: list[tuple[Path, Path, bytes, bool, bool]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        src_path, dst_path = Path(src), Path(dst)
        synced_before = str(src_path) in synced
        renamed.append((src_path, dst_path, src_path.read_bytes(), synced_before, dst_path.exists()))
        real_replace(src, dst)

    store = Store(tmp_path)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    store.add(image, "u")
    monkeypatch.undo()
    store.close()
    published = [entry for entry in renamed if entry[1] == final]
    assert len(published) == 1, renamed
    source, _, content, was_synced, existed = published[0]
    assert source.parent == final.parent and source.name.startswith(".") and source.name.endswith(".tmp")
    assert content == image.data and was_synced and not existed
    assert final.read_bytes() == image.data and not list(final.parent.glob(".*"))


def test_folder_fsyncs_are_batched_with_the_metadata_and_on_close(tmp_path: Path, monkeypatch) -> None:
    """Issue 14: a folder's fsync (making a rename durable) runs once per batch, not once per image; each
    file's own bytes are still fsynced (as its temp file, before the rename), and every folder written
    is synced by the periodic metadata rewrite or at the end of the run."""
    images = [_valid(seed) for seed in (40, 41, 42)]
    folder = [tmp_path / "images" / image.sha256[:2] for image in images]
    synced: list[Path] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    store = Store(tmp_path)
    monkeypatch.setattr(os, "fsync", fsync)
    for image in images[:2]:
        store.add(image, "u")
    assert [(path.parent, path.name.startswith(f".{image.sha256}.jpg."), path.suffix)
            for path, image in zip(synced, images, strict=False)] == [
        (folder[0], True, ".tmp"), (folder[1], True, ".tmp")]  # fmt: skip
    assert len(synced) == 2  # the two files' bytes; no folder yet
    synced.clear()
    store.write_metadata()  # the periodic rewrite syncs the folders written so far
    assert set(folder[:2]) <= set(synced)
    synced.clear()
    store.add(images[2], "u")
    store.close()  # ... and so does the end of the run
    monkeypatch.undo()
    assert folder[2] in synced
    assert folder[0] not in synced or folder[0] == folder[2]  # a folder already synced is not synced again


def test_a_manifest_row_only_ever_names_a_complete_file(tmp_path: Path, monkeypatch) -> None:
    """Bug caught: the manifest row is inserted before the file is on disk."""
    image, other = _valid(5), _valid(6)
    store = Store(tmp_path)
    seen_at_insert: list[bool] = []

    def trace(statement: str) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO IMAGES"):
            final = tmp_path / "images" / image.sha256[:2] / f"{image.sha256}.jpg"
            seen_at_insert.append(final.is_file() and final.read_bytes() == image.data)

    store.manifest.db.set_trace_callback(trace)
    store.add(image, "u")
    store.manifest.db.set_trace_callback(None)
    assert seen_at_insert == [True]

    def no_space(src: str, dst: str) -> None:  # the file cannot be published: the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(DiffkitError, match="is full"):
        store.add(other, "u")
    monkeypatch.undo()
    assert [row["sha256"] for row in store.rows()] == [image.sha256]  # no row for the file that failed
    assert not (tmp_path / "images" / other.sha256[:2] / f"{other.sha256}.jpg").exists()
    assert not list((tmp_path / "images").rglob("*.tmp"))

    def full_manifest(*args: object) -> None:  # the file is published, then its row cannot be committed
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store.manifest, "insert_image", full_manifest)
    with pytest.raises(DiffkitError, match="is full"):
        store.add(other, "u")
    monkeypatch.undo()
    assert [row["sha256"] for row in store.rows()] == [image.sha256]
    assert not (tmp_path / "images" / other.sha256[:2] / f"{other.sha256}.jpg").exists()  # taken back
    store.close()


def _crafted_pair() -> tuple[bytes, bytes, int]:
    """Two JPEGs whose pHash distance is small and known exactly (a dark square on the same face)."""
    face = draw_face(np.random.default_rng(5), 64)
    first = encode_image(face, "JPEG", 90)
    for side in range(1, 30):
        changed = face.copy()
        ImageDraw.Draw(changed).rectangle((40, 40, 40 + side, 40 + side), fill=(0, 0, 0))
        second = encode_image(changed, "JPEG", 90)
        distance = bin(phash_of(first) ^ phash_of(second)).count("1")
        if distance >= 4:
            return first, second, distance
    raise AssertionError("no crafted pair")


def test_near_duplicate_at_exactly_the_threshold_is_a_duplicate(tmp_path: Path) -> None:
    """Bug caught: the scraper's inline near-duplicate check uses ``<`` instead of ``<=``."""
    first, second, distance = _crafted_pair()
    third = encode_image(draw_face(np.random.default_rng(6), 64), "JPEG", 90)
    far = min(bin(phash_of(third) ^ phash_of(other)).count("1") for other in (first, second))
    assert far > distance + 4
    digests = [hashlib.sha256(data).hexdigest() for data in (first, second, third)]
    # at the threshold the second image is a near duplicate; one bit below it is a new image
    cases = ((distance, {digests[0], digests[2]}, 1), (distance - 1, set(digests[:2]), 0))
    for threshold, kept, near in cases:
        out = tmp_path / f"t{threshold}"
        with FaceSite(SiteConfig(payloads=(first, second, third))) as site:
            result = run_scrape(site, out, 2, concurrency=1, threshold=threshold)
        assert result.duplicates_near == near
        assert set(assert_consistent_folder(out, 2)) == kept


# -- decoding and numpy compatibility ---------------------------------------------------------------
def test_16_bit_png_hashes_like_its_8_bit_picture_and_8_bit_hashes_are_unchanged() -> None:
    grey = np.asarray(draw_face(np.random.default_rng(7), 64).convert("L"))
    eight, sixteen = io.BytesIO(), io.BytesIO()
    Image.fromarray(grey, mode="L").save(eight, "PNG")
    Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen, "PNG")  # I;16, same picture
    with Image.open(io.BytesIO(sixteen.getvalue())) as opened:
        assert opened.mode.startswith("I")
    png = {"content-type": "image/png"}
    results = [validate(200, png, raw.getvalue(), 10**7) for raw in (eight, sixteen)]
    assert all(isinstance(result, ValidImage) for result in results)
    assert results[0].phash == results[1].phash  # type: ignore[union-attr]
    import imagehash

    with Image.open(io.BytesIO(eight.getvalue())) as image:  # the 8-bit hash of every earlier version
        assert results[0].phash == int(str(imagehash.phash(image)), 16)  # type: ignore[union-attr]


def test_kept_index_works_without_numpy_2_bitwise_count(monkeypatch) -> None:
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # numpy 1.x has none
    rng = random.Random(0)
    hashes = [rng.getrandbits(64) for _ in range(2000)]
    index = KeptIndex()
    for number, value in enumerate(hashes):
        index.add(f"{number:064x}", value)
    for probe in (0, 2**64 - 1, hashes[7], 0xEA52AD85FA907AA1):
        assert index.nearest_distance(probe) == min(bin(probe ^ value).count("1") for value in hashes)
    started = time.perf_counter()
    big = KeptIndex()
    for number in range(30000):
        big.add(str(number), number * 0x9E3779B97F4A7C15 % 2**64)
    for _ in range(100):
        big.nearest_distance(12345)
    assert time.perf_counter() - started < 5.0  # a guard against a per-hash Python loop, not a benchmark


# -- issue 28.3: the cheaper keep path keeps every guarantee ------------------------------------------
def test_store_refuses_a_symlink_at_any_component_of_a_kept_file_even_mid_run(tmp_path: Path) -> None:
    """Bug caught: the per-image symlink check (one lstat per component) skips a component, so a folder
    or file swapped for a symlink while the run holds the folder is written through."""
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "faces"
    store = Store(out)
    first, second, third = _valid(60), _valid(61), _valid(62)
    store.add(first, "u")
    # the image's own file is a symlink to somewhere else
    target = out / "images" / second.sha256[:2] / f"{second.sha256}.jpg"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(outside / "victim.jpg")
    with pytest.raises(DiffkitError, match=f"symlink images/{second.sha256[:2]}/{second.sha256}.jpg"):
        store.add(second, "u")
    # its folder is a symlink
    folder = out / "images" / third.sha256[:2]
    shutil.rmtree(folder, ignore_errors=True)
    folder.symlink_to(outside, target_is_directory=True)
    with pytest.raises(DiffkitError, match=f"symlink images/{third.sha256[:2]}"):
        store.add(third, "u")
    # images/ itself was swapped for a symlink after the store opened
    (out / "images").rename(tmp_path / "moved")
    (out / "images").symlink_to(outside, target_is_directory=True)
    with pytest.raises(DiffkitError, match="symlink images"):
        store.add(_valid(63), "u")
    assert [row["sha256"] for row in store.rows()] == [first.sha256]
    store.close()
    assert sorted(path.name for path in outside.iterdir()) == []  # nothing written there


def test_write_durably_replaces_a_stale_temp_and_leaves_none_after_a_failure(
    tmp_path: Path, monkeypatch
) -> None:
    """Bug caught: a temp file left by an earlier failed write blocks every later write of that image
    (O_EXCL), or a write that fails half-way leaves its temp file behind."""
    from diffkit.atomic import NEW_FILE_MODE
    from diffkit.scrape.storage import write_durably

    path = tmp_path / "ab" / "abc.jpg"
    stale = tmp_path / "ab" / f".abc.jpg.{os.getpid()}.tmp"
    path.parent.mkdir()
    stale.write_bytes(b"half")
    write_durably(str(path), b"x" * 100_000)
    assert path.read_bytes() == b"x" * 100_000 and not stale.exists()
    assert path.stat().st_mode & 0o777 == NEW_FILE_MODE  # what any new file gets, as atomic.py's
    write_durably(str(tmp_path / "new" / "deep.jpg"), b"y")  # a missing folder is made
    assert (tmp_path / "new" / "deep.jpg").read_bytes() == b"y"

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError):
        write_durably(str(tmp_path / "ab" / "other.jpg"), b"z")
    monkeypatch.undo()
    assert sorted(entry.name for entry in (tmp_path / "ab").iterdir()) == ["abc.jpg"]


def test_near_duplicate_verifies_all_candidates_as_the_pairwise_check_did() -> None:
    """The candidates' thumbnails are compared in one vectorised pass: the answer is the pairwise one
    (any candidate at or above min_similarity; a thumbnail-less kept image judged by its hash alone)."""
    from diffkit.dataset.verify import similarity

    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (40, 768), dtype=np.uint8)
    index = KeptIndex()
    for k in range(39):  # every kept hash within 12 bits of the probe's (1 << 20): all are candidates
        index.add(f"{k:064x}", (1 << (k % 12)) - 1, None, base[k].tobytes())
    index.add("f" * 64, (1 << 11) - 1)  # no thumbnail (its file is gone): 12 bits away, never a duplicate
    for trial in range(60):
        probe = base[trial % 39].astype(np.int16) + rng.integers(-40, 41, 768)
        thumb = np.clip(probe, 0, 255).astype(np.uint8).tobytes()
        for min_similarity in (0.5, 0.9, 0.97, 0.999):
            pairwise = any(similarity(thumb, base[k].tobytes()) >= min_similarity for k in range(39))
            got = index.near_duplicate(1 << 20, b"", 12, min_similarity, thumb=thumb)
            assert got == pairwise, (trial, min_similarity)
    # the thumbnail-less kept image decides by its hash alone, within HASH_ONLY_BITS (4) bits
    unreachable = 2.0  # no thumbnail pair reaches it: only the hash-only rule can answer yes
    near, far = ((1 << 11) - 1) ^ 0b111 ^ (1 << 40), ((1 << 11) - 1) ^ 0b1111 ^ (1 << 40)
    assert index.near_duplicate(near, b"", 12, unreachable, thumb=bytes(768))
    assert not index.near_duplicate(far, b"", 12, unreachable, thumb=bytes(768))


def test_a_run_freezes_the_heap_only_while_it_runs_and_leaves_a_callers_freeze_alone(tmp_path: Path) -> None:
    """The garbage collector's full passes skip what existed before the run (issue 28.3); the heap is
    unfrozen after the run, even a failed one, and a caller that froze it keeps its freeze."""
    import gc

    import diffkit.scrape.run as run_module

    seen: list[int] = []

    class Watching(run_module._Scrape):
        async def main(self) -> None:
            seen.append(gc.get_freeze_count())
            await super().main()

    assert gc.get_freeze_count() == 0
    with FaceSite(SiteConfig(size=32)) as site:
        config = run_module.ScrapeConfig(n=2, out=tmp_path / "a", url=site.url, progress=False, report=False)
        run_module.scrape(config, Watching)
        assert seen[0] > 0 and gc.get_freeze_count() == 0
        with pytest.raises(DiffkitError):  # nothing answers: the run fails, the heap is unfrozen all the same
            run_module.scrape(
                run_module.ScrapeConfig(
                    n=1,
                    out=tmp_path / "b",
                    url=site.url + "-missing",
                    progress=False,
                    report=False,
                    max_retries=0,
                ),
                Watching,
            )
        assert len(seen) == 2 and seen[1] > 0 and gc.get_freeze_count() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        try:
            run_module.scrape(config.__class__(**{**config.__dict__, "n": 3}), Watching)
            assert 0 < gc.get_freeze_count() <= frozen  # the caller's freeze: not undone, nothing added
        finally:
            gc.unfreeze()
