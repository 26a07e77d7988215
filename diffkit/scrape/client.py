"""Polite HTTP: one long-lived httpx Client (used from worker threads) behind a global, adaptive rate limiter.

- The limiter spaces *every* request (all workers, retries and probes included) at least ``1/rate``
  apart, and a ``Retry-After`` pauses all of them, not only the worker that received it.
- The rate halves after a 429 and climbs back by a small step per success (AIMD, as TCP does).
- Backoff is exponential with full jitter (``uniform(0, min(cap, base * 2**attempt))``).
- Redirects are followed by hand and only to the same host; the body is read to a size cap and
  under one deadline for the whole request (httpx's own timeout applies per socket read, so every read
  gets only what is left of the deadline).
"""

from __future__ import annotations

import asyncio
import queue
import random
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import httpx

from diffkit.scrape.validate import (
    CONNECTION_ERROR,
    REDIRECT_OFFHOST,
    TIMEOUT,
    TOO_LARGE,
    TOO_MANY_REDIRECTS,
    TRUNCATED,
)

MAX_REDIRECTS = 5
_DELTA_SECONDS = re.compile(r"[0-9]+")  # not str.isdigit: it accepts "²" and "١", which float() refuses
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if unusable.

    A server controls this text: anything that is not ASCII digits or a date (``²``, which
    ``str.isdigit`` accepts, a year 99999 date...) is unusable and the caller's own backoff applies.
    """
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    try:
        return max(0.0, (when - now).total_seconds())
    except OverflowError:
        return None


def full_jitter_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """AWS "full jitter": a uniform draw below the capped exponential, so retries do not synchronise."""
    return rng.uniform(0.0, min(cap_s, base_s * 2.0 ** min(attempt, 62)))


def same_host(url_a: str, url_b: str) -> bool:
    """Same host name and same port (an http -> https upgrade on default ports counts as the same)."""
    a, b = urlsplit(url_a), urlsplit(url_b)
    if b.scheme.lower() not in _DEFAULT_PORTS or not a.hostname or a.hostname != b.hostname:
        return False
    port_a = a.port or _DEFAULT_PORTS.get(a.scheme.lower())
    port_b = b.port or _DEFAULT_PORTS.get(b.scheme.lower())
    return port_a == port_b or (a.port is None and b.port is None)


class RateLimiter:
    """Global token spacing with an adaptive rate and a shared pause for ``Retry-After``."""

    def __init__(
        self,
        max_rate: float,
        min_rate: float | None = None,
        increase_step: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_rate = max_rate
        self.min_rate = min_rate if min_rate is not None else max_rate / 64
        # back to full speed after ~50 successes from zero: "up slowly" compared with halving
        self.increase_step = increase_step if increase_step is not None else max_rate / 50
        self.rate = max_rate
        self._clock = clock
        self._next_slot = 0.0
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self.history: list[tuple[float, float]] = [(clock(), max_rate)]  # (time, rate) at each change

    async def acquire(self) -> None:
        """Wait for this caller's slot. Holding the lock while sleeping keeps callers in FIFO order."""
        async with self._lock:
            while not self.claim():
                # re-checked: a pause may have arrived meanwhile
                await asyncio.sleep(self.ready_at() - self._clock())

    def ready_at(self) -> float:
        """When the next request may go (clock time): the next slot, or the end of a pause."""
        return max(self._next_slot, self._paused_until)

    def claim(self) -> bool:
        """Take the next slot if it is due now (no waiting): a scheduler of many hosts polls with it."""
        now, ready_at = self._clock(), self.ready_at()
        if ready_at > now:
            return False
        interval = 1.0 / self.rate
        # Count from the slot, not from a late wake-up, so sleep overshoot does not pile up and
        # the long-run rate is the configured one; an idle gap longer than a slot is not banked.
        self._next_slot = (ready_at if now - ready_at < interval else now) + interval
        return True

    def pause(self, seconds: float) -> None:
        """Nobody sends anything for ``seconds`` from now (Retry-After)."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)

    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    def on_throttled(self) -> None:
        self._set_rate(max(self.min_rate, self.rate / 2))

    def on_success(self) -> None:
        if self.rate < self.max_rate:
            self._set_rate(min(self.max_rate, self.rate + self.increase_step))

    def _set_rate(self, rate: float) -> None:
        self.rate = rate
        self.history.append((self._clock(), rate))


class WorkerPool(Executor):
    """A fixed pool of daemon threads for the blocking fetch-and-validate of each request.

    Daemon threads, unlike ``ThreadPoolExecutor``'s: after a stop (Ctrl-C), a request still in flight on
    a stalled server is abandoned rather than waited for up to ``--timeout`` before the process may exit.
    That is safe because the jobs touch no run state and write nothing; their answers are dropped.
    """

    def __init__(self, workers: int, name: str = "diffkit-fetch") -> None:
        self._workers = workers
        self._name = name
        self._jobs: queue.SimpleQueue[tuple[Future[object], Callable[..., object], tuple[object, ...]] | None]
        self._jobs = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    def submit(self, fn: Callable[..., object], /, *args: object, **kwargs: object) -> Future[object]:
        if kwargs:
            raise TypeError("WorkerPool.submit takes positional arguments only")
        if not self._threads:  # started on first use: a run with nothing to fetch starts no thread
            self._threads = [
                threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
                for i in range(self._workers)
            ]
            for thread in self._threads:
                thread.start()
        future: Future[object] = Future()
        self._jobs.put((future, fn, args))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue  # cancelled while queued
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting caller, as ThreadPoolExecutor does
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Let every thread finish its current job and end; ``wait`` joins them."""
        if cancel_futures:
            while True:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is not None:
                    job[0].cancel()
        for _ in self._threads:
            self._jobs.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str  # after same-host redirects
    redirects: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransportFailure:
    reason: str
    detail: str


class Fetcher:
    """GET with the deadline, redirect and size policies above. One instance per run, shared by threads.

    Synchronous on purpose: a worker thread fetches and validates in one hop, and httpx's thread-safe
    ``Client`` costs less CPU per request than its ``AsyncClient`` (bench_scrape.py measures both; the
    async stack also retried a failing ``import sniffio`` on every request).
    The deadline covers the whole request: each redirect hop and each socket read may take at most what is
    left of it, and the body is checked against it between chunks (a server dripping bytes is cut off).
    """

    def __init__(
        self,
        user_agent: str,
        timeout_s: float,
        max_bytes: int,
        connections: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._clock = clock
        self.client = httpx.Client(
            headers={
                "User-Agent": user_agent,
                "Accept": "image/jpeg,image/png,image/webp,image/*;q=0.8",
                "Accept-Encoding": "identity",  # so Content-Length counts the bytes we receive
            },
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    def close(self) -> None:
        self.client.close()

    def get(self, url: str) -> Response | TransportFailure:
        """Blocking: call it from a worker thread."""
        deadline = self._clock() + self.timeout_s
        timed_out = TransportFailure(TIMEOUT, f"no complete answer within {self.timeout_s:g} s")
        try:
            return self._get_following(url, deadline) or timed_out
        except httpx.TimeoutException:
            return timed_out
        except httpx.RemoteProtocolError as exc:
            return TransportFailure(TRUNCATED, str(exc)[:160] or "connection closed mid-response")
        except (httpx.TransportError, OSError) as exc:
            return TransportFailure(CONNECTION_ERROR, str(exc)[:160] or type(exc).__name__)

    def _get_following(self, url: str, deadline: float) -> Response | TransportFailure | None:
        """The answer after same-host redirects; None when the deadline passed."""
        redirects: list[str] = []
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            left = deadline - self._clock()
            if left <= 0:
                return None
            with self.client.stream("GET", current, timeout=httpx.Timeout(left)) as response:
                location = response.headers.get("location")
                if response.is_redirect and location:
                    target = urljoin(current, location)
                    if not same_host(url, target):
                        return TransportFailure(REDIRECT_OFFHOST, f"redirect to {target}")
                    redirects.append(target)
                    current = target
                    continue
                body = bytearray()
                for chunk in response.iter_raw():
                    body.extend(chunk)
                    if len(body) > self.max_bytes:
                        return TransportFailure(TOO_LARGE, f"body larger than {self.max_bytes:,} bytes")
                    if self._clock() > deadline:
                        return None
                headers = {name.lower(): value for name, value in response.headers.items()}
                return Response(response.status_code, headers, bytes(body), current, tuple(redirects))
        return TransportFailure(TOO_MANY_REDIRECTS, f"more than {MAX_REDIRECTS} redirects")
