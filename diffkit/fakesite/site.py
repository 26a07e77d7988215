"""A local stand-in for thispersondoesnotexist.com: a real HTTP server on 127.0.0.1 serving fake faces.

Tests (and people trying ``diffkit scrape`` offline) point a scraper at ``FaceSite(...).url``. Knobs
reproduce what the real site does to scrapers: exact repeats, near-duplicates, rate limiting with
``Retry-After``, landing/block pages, and broken responses (see ``FAULT_KINDS``). Outcomes come from
one lock-protected ``numpy`` generator, so the same seed and the same sequence of requests give the
same bytes. Run it by hand with ``python -m diffkit.fakesite --port 8000``.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import math
import socket
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np

from diffkit.fakesite.content import (
    block_page,
    bomb_jpeg,
    encode_jpeg,
    landing_page,
    near_duplicate,
)

__all__ = ["FAULT_KINDS", "FaceSite", "RequestRecord", "SiteConfig"]

FAULT_KINDS = ("http_503", "stall", "truncated", "bad_length", "html_block", "not_image", "bomb",
               "redirect_offhost")


@dataclass(frozen=True)
class SiteConfig:
    """What the site serves and how it misbehaves. Rates are shares of image-path responses."""

    seed: int = 0
    size: int = 1024
    jpeg_quality: int = 90
    # Images are served here; "/" is an HTML landing page and "/image" an HTML block page (HTTP 200,
    # like the real site since 2024) unless one of them is the image path.
    image_path: str = "/random-person.jpeg"
    # Every path under this prefix serves images too (e.g. "/img/": "/img/1.jpg", "/img/2.jpg"), as the
    # distinct addresses of a URL list (scrape --urls) do; None: only image_path.
    image_prefix: str | None = None
    repeat_rate: float = 0.0  # exact byte repeat of an earlier fresh image
    near_dup_rate: float = 0.0  # earlier face re-encoded at another quality, resized or brightened
    latency_s: float = 0.0  # added before every response
    max_rps: float | None = None  # token bucket (burst = max(1, max_rps)); excess requests get 429
    retry_after_s: float = 1.0  # sent with 429 and 503, rounded up to whole seconds
    retry_after_http_date: bool = False  # send Retry-After as an HTTP-date instead of seconds
    faults: Mapping[str, float] = field(default_factory=dict)  # kind in FAULT_KINDS -> rate
    stall_s: float = 30.0  # how long a "stall" response hangs after its first bytes (shutdown ends it)
    redirect_host: str = "127.0.0.2"  # "redirect_offhost" sends 302 to this host, same port and path
    history: int = 512  # fresh images kept as sources for repeats and near-duplicates
    bomb_side: int = 30000  # "bomb": the width and height its JPEG header declares
    # Hostile Retry-After: sent verbatim (UTF-8) with 429 and 503 instead of retry_after_s, e.g. "²",
    # which str.isdigit accepts and float() refuses.
    retry_after_text: str | None = None
    # Crafted images: fresh images are these payloads in order (cycling) instead of drawn faces, e.g. a
    # pair whose pHash distance is exactly a threshold. Near-duplicates still derive from drawn faces.
    payloads: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"unknown fault kinds {unknown}; known: {', '.join(FAULT_KINDS)}")
        rates = [self.repeat_rate, self.near_dup_rate, *self.faults.values()]
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"rates must be in [0, 1] and sum to at most 1, got {rates}")
        if not self.image_path.startswith("/"):
            raise ValueError(f"image_path must start with '/', got {self.image_path!r}")
        if self.size < 8 or not 1 <= self.jpeg_quality <= 100:
            raise ValueError("size must be >= 8 and jpeg_quality in 1..100")
        if self.max_rps is not None and self.max_rps <= 0:
            raise ValueError(f"max_rps must be positive or None, got {self.max_rps}")
        if any(not payload for payload in self.payloads):
            raise ValueError("payloads must be non-empty byte strings")


@dataclass(frozen=True)
class RequestRecord:
    """One request as the site saw and answered it (recorded before the body is sent)."""

    index: int
    time_monotonic: float
    time_wall: float
    method: str
    path: str  # with query string
    headers: dict[str, str]
    status: int
    kind: str  # image, repeat, near_dup, 429, a FAULT_KINDS entry, landing, block_page, not_found
    content_type: str = ""
    content_length: int | None = None  # as declared in the header
    body_bytes: int = 0  # as actually sent (fewer for stall/truncated)
    sha256: str = ""  # of the full payload (image kinds)
    source: int | None = None  # repeat/near_dup: request index of the fresh image it derives from
    detail: str = ""  # e.g. near_dup transform "quality=71"


@dataclass
class _Fresh:
    index: int  # request index that first served it
    face_seed: int
    jpeg: bytes


@dataclass
class _Plan:
    """Everything one response needs, decided under the lock; the slow work happens after."""

    kind: str
    face_seed: int = 0
    source: _Fresh | None = None
    params: dict[str, float] = field(default_factory=dict)
    payload: bytes | None = None  # a crafted payload (SiteConfig.payloads) instead of a drawn face


class FaceSite:
    """The running site. Use as a context manager, or ``start()``/``stop()``.

    ``site.config`` may be replaced while running (e.g. ``dataclasses.replace(cfg, faults=...)``): each
    request reads it once on arrival. The generator, history and rate-limit bucket carry on.
    """

    def __init__(self, config: SiteConfig | None = None, host: str = "127.0.0.1", port: int = 0,
                 verbose: bool = False) -> None:
        self.config = config or SiteConfig()
        self.verbose = verbose  # log each request to stderr
        self._host, self._requested_port = host, port
        self._lock = threading.Lock()
        self._rng = np.random.default_rng(self.config.seed)
        self._records: list[RequestRecord] = []
        self._history: deque[_Fresh] = deque(maxlen=max(1, self.config.history))
        self._digests: set[str] = set()  # sha256 of every image payload served
        self._crafted = 0  # crafted payloads served so far (SiteConfig.payloads)
        self._tokens = max(1.0, self.config.max_rps or 1.0)
        self._token_time = time.monotonic()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None  # kept after stop() so url/base_url still name the site
        bomb_jpeg(self.config.bomb_side)  # fail early on an impossible bomb_side (cached)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FaceSite:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self._host, self._requested_port), _Handler)
        self._server.site = self
        self._port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="FaceSite", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; releases stalled responses and closes kept-alive connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> FaceSite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FaceSite is not running; call start() or use it as a context manager")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The full image URL (base URL + ``config.image_path``)."""
        return self.base_url + self.config.image_path

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request answered so far, in arrival order of their decisions."""
        with self._lock:
            return list(self._records)

    def served(self) -> dict[str, int]:
        """Response counts by kind (``image``, ``repeat``, ``near_dup``, ``429``, fault kinds...)."""
        with self._lock:
            return dict(Counter(record.kind for record in self._records))

    # -- decisions (called by the handler) ---------------------------------------------------------
    def _admit(self) -> bool:
        """Token bucket; called with the lock held."""
        if self.config.max_rps is None:
            return True
        now = time.monotonic()
        burst = max(1.0, self.config.max_rps)
        self._tokens = min(burst, self._tokens + (now - self._token_time) * self.config.max_rps)
        self._token_time = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def _plan_image(self) -> _Plan:
        """Draw the outcome of one image request; called with the lock held."""
        rng, cfg = self._rng, self.config
        u = rng.random()
        kind = "image"
        cumulative = 0.0
        choices = [(name, cfg.faults.get(name, 0.0)) for name in FAULT_KINDS]
        choices += [("repeat", cfg.repeat_rate), ("near_dup", cfg.near_dup_rate)]
        for name, rate in choices:
            cumulative += rate
            if u < cumulative:
                kind = name
                break
        if kind in ("repeat", "near_dup") and not self._history:
            kind = "image"  # nothing earlier to repeat yet
        plan = _Plan(kind=kind, face_seed=int(rng.integers(2**63)))
        if kind == "image" and cfg.payloads:
            plan.payload = cfg.payloads[self._crafted % len(cfg.payloads)]
            self._crafted += 1
        if kind in ("repeat", "near_dup"):
            plan.source = self._history[int(rng.integers(len(self._history)))]
        if kind == "near_dup":
            plan.params = {"variant": float(rng.integers(3)), "quality": float(rng.integers(55, 86)),
                           "scale": float(rng.uniform(0.9, 1.1)),
                           "brightness": float(rng.choice([-1, 1]) * rng.uniform(0.05, 0.10))}
        elif kind in ("stall", "truncated"):
            plan.params = {"fraction": float(rng.uniform(0.2, 0.8))}
        elif kind == "not_image":
            plan.params = {"length": float(rng.integers(2000, 20000))}
        return plan

    def _record(self, **fields: object) -> RequestRecord:
        with self._lock:
            record = RequestRecord(index=len(self._records), **fields)  # type: ignore[arg-type]
            self._records.append(record)
            return record

    def _retry_after(self) -> str:
        if self.config.retry_after_text is not None:
            # http.server writes header values as latin-1: pass the UTF-8 bytes through unchanged
            return self.config.retry_after_text.encode("utf-8").decode("latin-1")
        seconds = self.config.retry_after_s
        if self.config.retry_after_http_date:
            return email.utils.formatdate(time.time() + seconds, usegmt=True)
        return str(max(0, math.ceil(seconds)))


def _content_type(payload: bytes) -> str:
    if payload.startswith(b"\x89PNG"):
        return "image/png"
    if payload[:4] == b"RIFF" and payload[8:12] == b"WEBP":
        return "image/webp"
    return "image/jpeg"  # drawn faces, and anything else (not_image's random bytes pose as JPEG)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # FaceSite.stop releases handler threads itself
    allow_reuse_address = True
    site: FaceSite


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real site behind a CDN
    server_version = "FaceSite/1.0"
    sys_version = ""
    timeout = 60  # idle keep-alive connections are dropped after this
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle's algorithm holds the body
        # until the client's delayed ACK (~40 ms on Linux) and every response pays that wait.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.site._lock:
            self.server.site._connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.site._lock:
            self.server.site._connections.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        if self.server.site.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._answer()

    def _answer(self) -> None:
        site, cfg = self.server.site, self.server.site.config
        arrived, arrived_wall = time.monotonic(), time.time()
        path = urlsplit(self.path).path
        base = {"time_monotonic": arrived, "time_wall": arrived_wall, "method": self.command,
                "path": self.path, "headers": dict(self.headers.items())}
        with site._lock:
            admitted = site._admit()
            is_image = path == cfg.image_path or bool(cfg.image_prefix and path.startswith(cfg.image_prefix))
            plan = site._plan_image() if admitted and is_image else None
        if cfg.latency_s > 0 and site._stopping.wait(cfg.latency_s):
            self.close_connection = True
            return
        if not admitted:
            body = b"Too Many Requests\n"
            site._record(**base, status=429, kind="429", content_type="text/plain",
                         content_length=len(body), body_bytes=len(body))
            self._send(429, "text/plain", body, {"Retry-After": site._retry_after()})
        elif plan is not None:
            self._answer_image(site, plan, base)
        elif path == "/":
            self._page(site, base, 200, "landing", landing_page(cfg.image_path))
        elif path == "/image":
            self._page(site, base, 200, "block_page", block_page())
        else:
            self._page(site, base, 404, "not_found", b"<html><body><h1>404 Not Found</h1></body></html>")

    def _page(self, site: FaceSite, base: dict, status: int, kind: str, body: bytes) -> None:
        content_type = "text/html; charset=utf-8"
        site._record(**base, status=status, kind=kind, content_type=content_type,
                     content_length=len(body), body_bytes=len(body))
        self._send(status, content_type, body)

    def _answer_image(self, site: FaceSite, plan: _Plan, base: dict) -> None:
        cfg = site.config
        kind, params = plan.kind, plan.params
        if kind in ("http_503", "html_block", "redirect_offhost"):
            if kind == "redirect_offhost":
                location = f"http://{cfg.redirect_host}:{site.port}{self.path}"
                body, status, ctype = b"", 302, "text/html; charset=utf-8"
                extra = {"Location": location}
            elif kind == "http_503":
                body, status, ctype = b"<html><body>503 Service Unavailable</body></html>", 503, "text/html"
                extra = {"Retry-After": site._retry_after()}
            else:
                body, status, ctype, extra = block_page(), 200, "text/html; charset=utf-8", {}
            site._record(**base, status=status, kind=kind, content_type=ctype, content_length=len(body),
                         body_bytes=len(body), detail=extra.get("Location", ""))
            self._send(status, ctype, body, extra)
            return

        source_index: int | None = None
        detail = ""
        if kind == "repeat":
            assert plan.source is not None
            payload, source_index = plan.source.jpeg, plan.source.index
        elif kind == "near_dup":
            assert plan.source is not None
            payload, detail = near_duplicate(plan.source.face_seed, cfg.size, cfg.jpeg_quality, params)
            if hashlib.sha256(payload).hexdigest() in site._digests:
                # Same source and quality drawn twice: brighten so a near-dup never repeats bytes exactly.
                payload, detail = near_duplicate(plan.source.face_seed, cfg.size, cfg.jpeg_quality,
                                                 {**params, "variant": 2.0})
            source_index = plan.source.index
        elif kind == "bomb":
            payload = bomb_jpeg(cfg.bomb_side)
        elif kind == "not_image":
            payload = np.random.default_rng(plan.face_seed).bytes(int(params["length"]))
        elif plan.payload is not None:
            payload = plan.payload
        else:  # image, stall, truncated, bad_length: a fresh face
            payload = encode_jpeg(plan.face_seed, cfg.size, cfg.jpeg_quality)

        declared, sent = len(payload), len(payload)
        if kind in ("stall", "truncated"):
            sent = max(1, int(len(payload) * params["fraction"]))
        elif kind == "bad_length":
            declared = len(payload) - max(1, len(payload) // 10)  # header says less; body runs on
        digest = hashlib.sha256(payload).hexdigest()
        with site._lock:
            record = RequestRecord(index=len(site._records), **base, status=200, kind=kind,
                                   content_type=_content_type(payload), content_length=declared,
                                   body_bytes=sent, sha256=digest, source=source_index, detail=detail)
            site._records.append(record)
            site._digests.add(digest)
            if kind == "image":
                site._history.append(_Fresh(record.index, plan.face_seed, payload))

        self.send_response(200)
        self.send_header("Content-Type", _content_type(payload))
        self.send_header("Content-Length", str(declared))
        self.send_header("Cache-Control", "no-store")
        if kind in ("stall", "truncated", "bad_length"):
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload[:sent])
        self.wfile.flush()
        if kind == "stall":
            site._stopping.wait(cfg.stall_s)

    def _send(self, status: int, content_type: str, body: bytes,
              extra: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)
