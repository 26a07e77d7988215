"""The local fake-face site, exercised over real sockets with httpx (and raw sockets for broken bodies)."""

from __future__ import annotations

import email.utils
import hashlib
import io
import math
import socket
import subprocess
import sys
import threading
import time
import warnings
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

from diffkit.fakesite.site import FAULT_KINDS, FaceSite, SiteConfig


def _thumb(data: bytes) -> np.ndarray:
    """Unit-norm, mean-free 32x32 RGB thumbnail: near-duplicates correlate > 0.99, distinct faces < 0.93."""
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BOX), np.float64).ravel()
    pixels -= pixels.mean()
    return pixels / np.linalg.norm(pixels)


def _raw_get(site: FaceSite, read_timeout: float = 5.0) -> tuple[dict[str, str], int, bytes, bool]:
    """GET the image over a bare socket: (headers, status, body bytes received, closed by server).

    Reading stops when the server closes or, once some body bytes are in, after ``read_timeout`` of
    silence (a stalled response); before that a slow (loaded) server gets up to a minute to answer.
    """
    with socket.create_connection(("127.0.0.1", site.port), timeout=read_timeout) as sock:
        sock.sendall(f"GET {site.config.image_path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data, closed, waited = b"", False, 0.0
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                waited += read_timeout
                if b"\r\n\r\n" in data and not data.endswith(b"\r\n\r\n") or waited >= 60:
                    break
                continue
            if not chunk:
                closed = True
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return headers, int(lines[0].split()[1]), body, closed


def test_n_requests_give_n_valid_jpegs_of_the_configured_size() -> None:
    with FaceSite(SiteConfig(size=96, seed=1)) as site, httpx.Client() as client:
        responses = [client.get(site.url, headers={"Referer": "https://example.test/"}) for _ in range(20)]
        served = site.served()
    digests = set()
    for response in responses:
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.content[:3] == b"\xff\xd8\xff" and b"JFIF" in response.content[:20]
        with Image.open(io.BytesIO(response.content)) as image:
            image.load()
            assert (image.format, image.size, image.mode) == ("JPEG", (96, 96), "RGB")
        digests.add(hashlib.sha256(response.content).hexdigest())
    assert len(digests) == 20
    assert served == {"image": 20}
    records = site.requests
    assert [r.index for r in records] == list(range(20))
    assert records[0].headers["Referer"] == "https://example.test/" and records[0].method == "GET"
    assert records[0].time_monotonic <= records[-1].time_monotonic


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    def fetch(seed: int) -> list[str]:
        config = SiteConfig(seed=seed, size=32, repeat_rate=0.3, near_dup_rate=0.3)
        with FaceSite(config) as site, httpx.Client() as client:
            return [hashlib.sha256(client.get(site.url).content).hexdigest() for _ in range(12)]

    assert fetch(7) == fetch(7)
    assert fetch(7) != fetch(8)


def test_repeat_near_dup_and_fault_rates_match_the_knobs_and_the_bytes() -> None:
    n = 300
    rates = {"repeat": 0.15, "near_dup": 0.15, "http_503": 0.1, "html_block": 0.1}
    config = SiteConfig(size=64, seed=3, repeat_rate=rates["repeat"], near_dup_rate=rates["near_dup"],
                        faults={"http_503": rates["http_503"], "html_block": rates["html_block"]})
    with FaceSite(config) as site, httpx.Client() as client:
        responses = [client.get(site.url) for _ in range(n)]
    records = site.requests

    # Classify from the bytes alone: exact repeat (sha256 seen), near-dup (thumbnail nearly equal to an
    # earlier distinct image, yet different bytes), fresh face, or not an image at all.
    seen: dict[str, int] = {}
    thumbs: list[np.ndarray] = []
    thumb_owner: list[int] = []
    measured: list[str] = []
    for index, response in enumerate(responses):
        if response.status_code == 503:
            assert response.headers["retry-after"] == "1"
            measured.append("http_503")
            continue
        if response.headers["content-type"].startswith("text/html"):
            assert b"blocked" in response.content and response.status_code == 200
            measured.append("html_block")
            continue
        digest = hashlib.sha256(response.content).hexdigest()
        if digest in seen:
            measured.append("repeat")
            assert records[index].source == seen[digest]
            continue
        thumb = _thumb(response.content)
        best = max((float(thumb @ t) for t in thumbs), default=0.0)
        if best > 0.97:
            measured.append("near_dup")
            owner = thumb_owner[int(np.argmax([thumb @ t for t in thumbs]))]
            assert records[index].source == owner
        else:
            measured.append("image")
            thumbs.append(thumb)
            thumb_owner.append(index)
        seen[digest] = index

    assert measured == [record.kind for record in records]  # the site's record matches the bytes
    counts = {kind: measured.count(kind) for kind in (*rates, "image")}
    assert site.served() == {kind: count for kind, count in counts.items() if count}
    for kind, rate in rates.items():
        sigma = math.sqrt(n * rate * (1 - rate))
        assert abs(counts[kind] - n * rate) <= 4 * sigma, (kind, counts[kind])
    near_dups = [record for record in records if record.kind == "near_dup"]
    assert {record.detail.split("=")[0] for record in near_dups} == {"quality", "resize", "brightness"}


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_each_fault_kind_occurs_is_recorded_and_is_really_faulty(kind: str) -> None:
    config = SiteConfig(size=64, faults={kind: 1.0}, stall_s=30.0)
    site = FaceSite(config).start()
    try:
        if kind in ("stall", "truncated", "bad_length"):
            headers, status, body, closed = _raw_get(site, read_timeout=0.5 if kind == "stall" else 5.0)
            declared = int(headers["content-length"])
            record = site.requests[0]
            assert status == 200 and headers["content-type"] == "image/jpeg"
            assert record.content_length == declared and record.body_bytes == len(body)
            if kind == "bad_length":  # the header understates the body; the full JPEG follows
                assert closed and len(body) > declared
                assert hashlib.sha256(body).hexdigest() == record.sha256
            else:  # fewer body bytes than promised: closed at once (truncated) or hanging (stall)
                assert 0 < len(body) < declared
                assert closed == (kind == "truncated")
        else:
            with httpx.Client() as client:
                response = client.get(site.url)
            body, ctype = response.content, response.headers["content-type"]
            if kind == "http_503":
                assert response.status_code == 503 and response.headers["retry-after"] == "1"
            elif kind == "html_block":
                assert response.status_code == 200 and ctype.startswith("text/html") and b"blocked" in body
            elif kind == "not_image":
                assert response.status_code == 200 and ctype == "image/jpeg" and body[:2] != b"\xff\xd8"
                with pytest.raises(Image.UnidentifiedImageError):
                    Image.open(io.BytesIO(body))
            elif kind == "bomb":
                assert response.status_code == 200 and ctype == "image/jpeg" and len(body) < 2000
                with pytest.raises(Image.DecompressionBombError):
                    Image.open(io.BytesIO(body))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                    previous, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
                    try:
                        assert Image.open(io.BytesIO(body)).size == (30000, 30000)
                    finally:
                        Image.MAX_IMAGE_PIXELS = previous
            elif kind == "redirect_offhost":
                assert response.status_code == 302  # httpx does not follow by default
                location = urlsplit(response.headers["location"])
                assert location.hostname == "127.0.0.2" and location.path == config.image_path
        assert site.served() == {kind: 1}
    finally:
        site.stop()  # must release a stalled response instead of waiting stall_s


def test_stop_closes_a_stalled_connection_promptly() -> None:
    site = FaceSite(SiteConfig(size=64, faults={"stall": 1.0}, stall_s=300.0)).start()
    sock = socket.create_connection(("127.0.0.1", site.port), timeout=60)
    sock.sendall(b"GET /random-person.jpeg HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536)  # headers and part of the body arrive, then the stall
    threading.Timer(0.2, site.stop).start()
    while sock.recv(65536):  # returns b"" once stop() closes the stalled response (not after 300 s)
        pass
    sock.close()


def test_429_with_retry_after_above_max_rps_and_none_below() -> None:
    config = SiteConfig(size=16, max_rps=5.0, retry_after_s=1.0)
    with FaceSite(config) as site, httpx.Client() as client:
        start = time.monotonic()
        burst = [client.get(site.url) for _ in range(40)]
        elapsed = time.monotonic() - start
        limited = [r for r in burst if r.status_code == 429]
        admitted = len(burst) - len(limited)
        assert limited and all(r.headers["retry-after"] == "1" for r in limited)
        assert admitted <= 5 + 5 * elapsed + 1  # burst capacity + refill during the burst
        time.sleep(float(limited[-1].headers["retry-after"]))
        paced = []
        for _ in range(4):  # 2.5 req/s, half the limit: never refused
            paced.append(client.get(site.url).status_code)
            time.sleep(0.4)
        assert paced == [200] * 4
        assert site.served()["429"] == len(limited)

    with FaceSite(SiteConfig(size=16, max_rps=1.0, retry_after_s=3.0, retry_after_http_date=True)) as site:
        with httpx.Client() as client:
            before = time.time()
            responses = [client.get(site.url) for _ in range(3)]
            after = time.time()
        refused = [r for r in responses if r.status_code == 429]
        assert refused
        when = email.utils.parsedate_to_datetime(refused[0].headers["retry-after"]).timestamp()
        assert before + 2.0 <= when <= after + 3.0  # now + 3 s, in whole seconds


def test_landing_block_and_missing_pages() -> None:
    with FaceSite(SiteConfig(size=32)) as site, httpx.Client() as client:
        landing = client.get(site.base_url + "/")
        block = client.get(site.base_url + "/image")
        missing = client.get(site.base_url + "/nope")
        busted = client.get(site.url + "?r=1700000000")  # cache busters are ignored
    assert landing.status_code == 200 and landing.headers["content-type"].startswith("text/html")
    assert b'<img src="/random-person.jpeg"' in landing.content
    assert block.status_code == 200 and b"blocked" in block.content
    assert missing.status_code == 404
    assert busted.status_code == 200 and busted.content[:2] == b"\xff\xd8"
    assert site.served() == {"landing": 1, "block_page": 1, "not_found": 1, "image": 1}

    for image_path, html_path in (("/", "/image"), ("/image", "/")):
        with FaceSite(SiteConfig(size=32, image_path=image_path)) as site:
            assert site.url == site.base_url + image_path
            assert httpx.get(site.url).content[:2] == b"\xff\xd8"
            assert httpx.get(site.base_url + html_path).headers["content-type"].startswith("text/html")


def test_latency_is_added_before_each_response() -> None:
    with FaceSite(SiteConfig(size=16, latency_s=0.3)) as site, httpx.Client() as client:
        start = time.monotonic()
        assert client.get(site.url).status_code == 200
        assert client.get(site.base_url + "/").status_code == 200
        assert time.monotonic() - start >= 0.6
    assert site.url.startswith("http://127.0.0.1:")  # still names the (stopped) site


def test_concurrent_requests_are_all_recorded() -> None:
    with FaceSite(SiteConfig(size=16, repeat_rate=0.5)) as site:
        def worker() -> None:
            with httpx.Client() as client:
                for _ in range(10):
                    assert client.get(site.url).status_code == 200

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        records = site.requests
    assert sorted(r.index for r in records) == list(range(40))
    assert sum(site.served().values()) == 40


def test_hostile_retry_after_text_and_crafted_payloads() -> None:
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(png, "PNG")
    payloads = (b"\xff\xd8\xff first", png.getvalue())
    config = SiteConfig(size=16, max_rps=1, retry_after_text="²", payloads=payloads)
    with FaceSite(config) as site, httpx.Client() as client:
        answers = [client.get(site.url) for _ in range(2)]
        site.config = SiteConfig(size=16, payloads=payloads)
        served = [client.get(site.url) for _ in range(3)]
    assert answers[1].status_code == 429 and answers[1].headers["retry-after"] == "²"  # sent as UTF-8
    assert [answer.content for answer in served] == [payloads[1], payloads[0], payloads[1]]
    assert [answer.headers["content-type"] for answer in served] == ["image/png", "image/jpeg", "image/png"]
    with pytest.raises(ValueError, match="non-empty"):
        SiteConfig(payloads=(b"",))


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        SiteConfig(faults={"gremlins": 0.1})
    with pytest.raises(ValueError, match="sum to at most 1"):
        SiteConfig(repeat_rate=0.6, near_dup_rate=0.6)
    with pytest.raises(RuntimeError, match="not running"):
        _ = FaceSite().url


def test_module_entry_point_serves_until_terminated() -> None:
    command = [sys.executable, "-m", "diffkit.fakesite", "--port", "0", "--size", "32", "--seed", "4",
               "--fault", "http_503=0.0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        url = line.split()[4]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/random-person.jpeg")
        response = httpx.get(url)
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == (32, 32)
        process.terminate()
        remaining, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert "Stopped. Served: {'image': 1}" in remaining
