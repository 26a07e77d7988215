"""``scrape(config) -> ScrapeResult``: fetch until the output folder holds N unique, valid images.

Shape of a run: reconcile the folder, probe the endpoint (each URL a few times: one odd answer does not
decide; a resume goes straight to the endpoint recorded in the manifest), then ``concurrency`` workers
share one rate limiter. Each request is fetched and validated in one worker-thread hop; kept images are
de-duplicated and written by plain synchronous code in the event loop, so a cancellation (Ctrl-C, a
stop condition) can never land between a file and its manifest row. Stop conditions end the run with
a report and a one-line error.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from diffkit.atomic import check_writable_dir
from diffkit.console import Bar, err_console, shown
from diffkit.dataset.manifest import IMAGES_DIR, MANIFEST_NAME, check_manifest_header
from diffkit.dataset.redact import redact
from diffkit.errors import DiffkitError
from diffkit.lock import LOCK_NAME, folder_lock
from diffkit.report.render import DEFAULT_REPORTS_DIR
from diffkit.scrape.client import (
    Fetcher,
    RateLimiter,
    Response,
    TransportFailure,
    WorkerPool,
    full_jitter_delay,
    parse_retry_after,
)
from diffkit.scrape.config import ScrapeConfig
from diffkit.scrape.endpoints import PROBE_ATTEMPTS, ProbeResult, ProbeStep, probe_endpoints
from diffkit.scrape.report import write_scrape_report
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.storage import ReconcileReport, Store
from diffkit.scrape.validate import (
    CONNECTION_ERROR,
    DUPLICATE_EXACT,
    DUPLICATE_NEAR,
    Rejection,
    ValidImage,
    is_block,
    is_transient,
    validate,
)

# The bar is refreshed at most this often: a fast local source answers thousands of times a second.
PROGRESS_INTERVAL_S = 0.1


def say(message: str) -> None:
    err_console.print(message, highlight=False, soft_wrap=True)


def bar_info(requests: int, elapsed_s: float, duplicates: int, rejected: int) -> str:
    """The bar's short text, e.g. ``1.9 req/s dup 3 rej 2`` (the rejection reasons are in the report)."""
    return f"{requests / max(elapsed_s, 1e-9):.1f} req/s dup {duplicates} rej {rejected}"


class _Scrape:
    """The state of one run: counters, stop conditions and the worker loop."""

    listing = False  # a --urls run (diffkit.scrape.listrun): no probe, each listed URL fetched once

    def __init__(self, config: ScrapeConfig, store: Store | None, reconcile: ReconcileReport) -> None:
        self.config = config
        self.store = store  # None until the probe succeeds when the output folder is new
        self.reconcile = reconcile
        self.bar = Bar("kept", config.n, enabled=config.progress)
        self.bar_shown_at = 0.0
        self.kept = store.kept_count() if store is not None else 0
        self.kept_new: list[str] = []  # file names kept by this run, in order
        self.requests = 0
        self.rejections: Counter[str] = Counter()
        self.duplicates: Counter[str] = Counter()
        self.surplus = 0  # valid new images that arrived after the target was reached
        self.events: list[tuple[float, str]] = []  # (seconds since start, "kept"/"duplicate"/"rejected")
        self.recent_duplicates: deque[bool] = deque(maxlen=config.exhaustion_window)
        self.consecutive_failures = 0
        self.consecutive_blocks = 0
        self.in_flight = 0
        self.url = config.url or ""
        self.probe: ProbeResult | None = None
        self.probing = False  # the probe decides on its own answers: no stop condition counts them
        self.trusted: str | None = None  # a resume's endpoint, taken from the manifest without a probe
        self.stop_message: str | None = None
        self.interrupted = False
        self.started = time.monotonic()
        self.last_metadata = self.started
        self.stop_event = asyncio.Event()
        self.rng = random.Random(config.seed)
        self.limiter = RateLimiter(config.rps)
        self.fetcher = Fetcher(config.user_agent, config.timeout_s, config.max_bytes, config.concurrency + 1)
        # One thread per worker (and the probe) does the blocking fetch and the validation in one hop.
        self.executor = WorkerPool(config.concurrency + 1)

    def open_store(self) -> Store:
        """Create the output folder once there is something to put in it."""
        if self.store is None:
            self.store = Store(self.config.out)
            self.reconcile = reconcile_and_report(self.store, self.config)
            self.kept = self.store.kept_count()
            for reason, count in self.rejections.items():  # counted while probing
                self.store.count(reason, count)
        return self.store

    # -- stop conditions ---------------------------------------------------------------------------
    def stop(self, message: str) -> None:
        if self.stop_message is None and not self.interrupted:
            self.stop_message = message
        self.stop_event.set()

    def on_interrupt(self) -> None:
        if not self.interrupted:
            say("[yellow]interrupted: finishing writes, then the summary[/]")
        self.interrupted = True
        self.stop_event.set()

    # -- one request -------------------------------------------------------------------------------
    def fetch_and_validate(
        self, url: str
    ) -> tuple[Response | TransportFailure, ValidImage | Rejection | None]:
        """The blocking part of one request, run in a worker thread: it touches no run state (only the
        shared, thread-safe client and the frozen config), so its answer can be dropped after a stop."""
        response = self.fetcher.get(url)
        if isinstance(response, TransportFailure):
            return response, None
        config = self.config
        checked = validate(
            response.status, response.headers, response.body, config.max_pixels, config.expect_size
        )
        return response, checked

    async def attempt(self, url: str) -> tuple[ValidImage, str] | Rejection:
        """One rate-limited request and its validation; failures are counted here."""
        await self.limiter.acquire()
        self.requests += 1
        loop = asyncio.get_running_loop()
        response, checked = await loop.run_in_executor(self.executor, self.fetch_and_validate, url)
        if isinstance(response, TransportFailure):
            return self.reject(Rejection(response.reason, response.detail))
        if response.status == 429:
            self.limiter.on_throttled()
        if response.status in (429, 503):
            wait = parse_retry_after(response.headers.get("retry-after"))
            if wait is not None and wait > self.config.retry_after_cap_s:
                self.stop(
                    f"the server asked to wait {wait:.0f} s (Retry-After), more than the "
                    f"{self.config.retry_after_cap_s:.0f} s cap: rerun the command later"
                )
            elif wait is not None:
                self.limiter.pause(wait)  # every worker waits, not only this one
        assert checked is not None  # a response is always validated
        if isinstance(checked, Rejection):
            return self.reject(checked)
        self.limiter.on_success()
        self.consecutive_failures = self.consecutive_blocks = 0
        return checked, response.url

    async def attempt_with_retries(
        self, url: str, probing: bool = False
    ) -> tuple[ValidImage, str] | Rejection:
        """Retry transient failures with backoff (or the announced Retry-After pause)."""
        # The probe tries a transient fault at least PROBE_ATTEMPTS times, even under --max-retries 0.
        retries = max(self.config.max_retries, PROBE_ATTEMPTS - 1) if probing else self.config.max_retries
        for retry in range(retries + 1):
            outcome = await self.attempt(url)
            if not isinstance(outcome, Rejection) or not is_transient(outcome.reason):
                return outcome
            if probing and outcome.reason == CONNECTION_ERROR:
                return outcome  # a URL that refuses connections at start is a typo, not a blip
            if retry == retries:
                if not probing:
                    self.stop(
                        f"a request failed {retry + 1} times in a row ({outcome.reason}: {outcome.detail}); "
                        "the source looks down: rerun later (it resumes)"
                    )
                return outcome
            if self.limiter.paused_for() > 0:
                continue  # the announced Retry-After pause already holds every worker back
            await asyncio.sleep(
                full_jitter_delay(retry, self.config.backoff_base_s, self.config.backoff_cap_s, self.rng)
            )
        raise AssertionError("unreachable")

    def reject(self, rejection: Rejection) -> Rejection:
        if self.store is not None:
            self.store.count(rejection.reason)
        self.rejections[rejection.reason] += 1
        self.events.append((time.monotonic() - self.started, "rejected"))
        if self.probing:
            return rejection  # counted, but a failed probe is the probe's own error, with its advice
        self.consecutive_failures += 1
        self.consecutive_blocks = self.consecutive_blocks + 1 if is_block(rejection.reason) else 0
        if self.consecutive_blocks >= self.config.max_block_pages:
            self.stop(
                f"{self.consecutive_blocks} block pages in a row (HTML or HTTP 403 instead of an image): the "
                "site is refusing diffkit; wait before rerunning, lower --rps, or check the URL in a browser"
            )
        elif self.consecutive_failures >= self.config.max_consecutive_failures:
            self.stop(
                f"{self.consecutive_failures} requests in a row failed (last: {rejection.reason}: "
                f"{rejection.detail}); check the URL, then rerun to resume"
            )
        self.show_progress()
        return rejection

    def show_progress(self, force: bool = False) -> None:
        """Refresh the bar from the counters, at most every PROGRESS_INTERVAL_S unless forced."""
        if not self.bar.enabled:
            return
        now = time.monotonic()
        if not force and now - self.bar_shown_at < PROGRESS_INTERVAL_S:
            return
        self.bar_shown_at = now
        info = bar_info(
            self.requests, now - self.started, sum(self.duplicates.values()), sum(self.rejections.values())
        )
        self.bar.update(completed=self.kept, info=info)

    # -- keeping -----------------------------------------------------------------------------------
    def count_if_duplicate(self, store: Store, image: ValidImage, now: float) -> str | None:
        """DUPLICATE_EXACT, DUPLICATE_NEAR (counted in the store and the run) or None for a new image.

        The same two-stage test as diffkit dedupe: hash candidates, then the thumbnail check.
        """
        if image.sha256 in store.index.sha256:
            duplicate: str | None = DUPLICATE_EXACT
        else:
            near = store.index.near_duplicate(
                image.phash, image.data, self.config.threshold, thumb=image.thumb
            )
            duplicate = DUPLICATE_NEAR if near else None
        if duplicate is not None:
            store.count(duplicate)
            self.duplicates[duplicate] += 1
            self.events.append((now - self.started, "duplicate"))
        return duplicate

    def keep_or_count(self, image: ValidImage, url: str) -> None:
        """Exact and perceptual de-duplication, then the atomic write. No ``await`` in here."""
        now = time.monotonic()
        store = self.open_store()
        duplicate = self.count_if_duplicate(store, image, now)
        if duplicate is None:
            if self.kept >= self.config.n:
                self.surplus += 1
                return
            self.kept_new.append(store.add(image, url))
            self.kept += 1
            self.events.append((now - self.started, "kept"))
        self.recent_duplicates.append(duplicate is not None)
        window = self.recent_duplicates
        if len(window) == window.maxlen and sum(window) / len(window) > self.config.exhaustion_dup_rate:
            self.stop(
                f"the source looks exhausted: {sum(window)} of the last {len(window)} images were "
                "duplicates; it repeats itself (lower --concurrency/--rps, or use another source)"
            )
        if now - self.last_metadata >= self.config.metadata_every_s:
            store.write_metadata()
            self.last_metadata = now
        self.show_progress()

    async def worker(self) -> None:
        try:
            while not self.stop_event.is_set() and self.kept + self.in_flight < self.config.n:
                self.in_flight += 1
                try:
                    outcome = await self.attempt_with_retries(self.url)
                finally:
                    self.in_flight -= 1
                if not isinstance(outcome, Rejection) and not self.stop_event.is_set():
                    self.keep_or_count(*outcome)
        except DiffkitError:  # the folder cannot be written (disk full...): every worker stops now
            self.stop_event.set()
            raise

    # -- the run -----------------------------------------------------------------------------------
    async def until_stopped(self, *coroutines: Any) -> None:
        """Run the coroutines until they finish or a stop is requested; then cancel what is left."""
        tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
        stopper = asyncio.ensure_future(self.stop_event.wait())
        try:
            everything = asyncio.gather(*tasks, return_exceptions=True)  # errors are raised below
            await asyncio.wait([stopper, everything], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                raise result

    def recorded_endpoint(self) -> str | None:
        """On a resume, the URL this folder was scraped from (one of the URLs this run may use, so the
        credentials come from the command line): trusted without a probe. None on a new folder."""
        recorded = self.store.endpoint() if self.store is not None and self.kept else None
        urls = (self.config.url,) if self.config.url is not None else self.config.candidate_urls
        return next((url for url in urls if recorded is not None and redact(url) == recorded), None)

    def after_reconcile(self) -> None:
        """Bring the folder's other records in line with the reconciled manifest (a --urls run: URLs)."""

    def list_summary(self) -> dict[str, Any] | None:
        """What a --urls run did with its list (None here: one URL, no list)."""
        return None

    def probe_steps(self) -> list[dict[str, str]]:
        if self.trusted is not None:
            note = "recorded in the manifest by an earlier run: not probed again"
            return [ProbeStep(self.trusted, "recorded", note).to_dict()]
        return [step.to_dict() for step in self.probe.steps] if self.probe else []

    async def run_probe(self) -> None:
        async def pause(failed: int) -> None:
            if self.limiter.paused_for() <= 0:  # a Retry-After pause already holds the next try back
                base, cap = self.config.backoff_base_s, self.config.backoff_cap_s
                await asyncio.sleep(full_jitter_delay(failed, base, cap, self.rng))

        attempt = lambda url: self.attempt_with_retries(url, probing=True)  # noqa: E731
        self.probing = True
        try:
            self.probe = await probe_endpoints(self.config.candidate_urls, self.config.url, attempt, pause)
        finally:
            self.probing = False

    async def probe_and_fetch(self) -> None:
        self.trusted = self.recorded_endpoint()
        if self.trusted is not None:  # a resume: the workers' own fault accounting judges the endpoint
            self.url = self.trusted
            say(f"endpoint: {shown(redact(self.trusted))} (recorded by the run that filled this folder)")
        else:
            try:
                await self.until_stopped(self.run_probe())
            except DiffkitError as exc:
                self.stop(str(exc))
                return
            if self.probe is None:
                return
            self.url = self.probe.url
            say(
                f"endpoint: {shown(redact(self.probe.url))} answered with an image "
                f"({shown(self.probe.steps[-1].detail)})"
            )
        with self.bar:
            if self.probe is not None:
                self.keep_or_count(self.probe.image, self.probe.served_by)
                self.open_store().record_endpoint(self.probe.url)
            self.show_progress(force=True)
            await self.until_stopped(*(self.worker() for _ in range(self.config.concurrency)))
            self.show_progress(force=True)

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, self.on_interrupt)
                handled.append(signum)
        try:
            await self.probe_and_fetch()
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
            # Requests still in flight after a stop finish in their (daemon) threads and are dropped
            # unread: they touch no run state, and the process does not wait for them to exit.
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.fetcher.close()


def reconcile_and_report(store: Store, config: ScrapeConfig) -> ReconcileReport:
    reconcile = store.reconcile(config.max_pixels, config.threshold)
    if reconcile.changed or reconcile.unknown_files or reconcile.unsafe:
        say(f"reconcile {shown(config.out)}: {shown(reconcile.describe())}")
    return reconcile


RunFactory = Callable[[ScrapeConfig, "Store | None", ReconcileReport], _Scrape]


def scrape(config: ScrapeConfig, make_run: RunFactory = _Scrape) -> ScrapeResult:
    """Fill ``config.out`` up to ``config.n`` unique, valid images (resuming what is there).

    One run per folder: the folder's lock is held from start to end; a second run into the same
    ``--out`` fails at once naming the process that holds it. A new folder that ends up empty (the
    probe failed) is removed again. Credentials in the URL are used, never written or shown.
    """
    check_manifest_header(config.out)  # a damaged manifest: one line, and nothing in the folder touched
    if config.report:  # an unwritable --report fails now, not after hours of scraping
        check_writable_dir(
            config.report_path.parent if config.report_path else DEFAULT_REPORTS_DIR, "the report (--report)"
        )
    created = _make_folder(config.out)
    try:
        with folder_lock(config.out, "scrape"), _heap_frozen():
            return _scrape_locked(config, make_run)
    except DiffkitError as exc:
        message = redact(str(exc))  # stop messages quote server answers, which may echo the URL
        if message != str(exc):
            raise DiffkitError(message) from None
        raise
    finally:
        if created:
            _remove_if_empty(config.out)


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep the garbage collector's full passes off what existed before the run (imported modules,
    numpy, Pillow, httpx: ~100k objects, none of which a scrape frees): one such pass cost ~45 ms of the
    event loop's CPU, ~0.3 ms per kept image of a 150-image run (bench_scrape.py). The run's own objects
    are collected as ever; the heap is unfrozen after. A caller that froze it already is left alone."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _make_folder(out: Path) -> bool:
    """Create ``out`` for its lock; True when this run created it."""
    if out.is_dir():
        return False
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        return False
    except OSError as exc:
        raise DiffkitError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None
    return True


def _remove_if_empty(out: Path) -> None:
    """Undo :func:`_make_folder` when nothing but the lock file was put there (a failed start)."""
    with contextlib.suppress(OSError):
        if set(os.listdir(out)) <= {LOCK_NAME}:
            (out / LOCK_NAME).unlink(missing_ok=True)
            out.rmdir()


def _no_work(run: _Scrape, result: ScrapeResult) -> str | None:
    """Why this run deserves no report (it sent no request and the folder needed no repair), or None.

    A resume that already holds --n images, or a list whose every URL was fetched before, changes
    nothing: its report would repeat the last one (docs/reports.md). An explicit --report still writes."""
    if run.requests or run.reconcile.changed or run.interrupted or run.stop_message is not None:
        return None
    if result.urls is not None:
        return (
            f"nothing to do: every URL of {result.urls['file']} was fetched before "
            f"({result.kept_total} images kept)"
        )
    if result.kept_total == result.target:
        return f"nothing to do: {result.kept_total} of {result.target} images already kept"
    return f"nothing to do: {result.kept_total} images already kept (--n {result.target})"


def _scrape_locked(config: ScrapeConfig, make_run: RunFactory) -> ScrapeResult:
    store: Store | None = None
    reconcile = ReconcileReport()
    if (config.out / MANIFEST_NAME).exists() or (config.out / IMAGES_DIR).exists():
        store = Store(config.out)
    run = make_run(config, store, reconcile)
    try:
        if store is not None:
            run.reconcile = reconcile_and_report(store, config)
            run.kept = store.kept_count()
            run.after_reconcile()
        if run.kept < config.n:
            asyncio.run(run.main())
        else:
            say(f"{shown(config.out)} already holds {run.kept} images (--n {config.n}): nothing to fetch")
        started = run.probe is not None or run.trusted is not None or run.listing
        if run.store is None or (not started and run.kept < config.n and not run.interrupted):
            if run.interrupted:
                raise KeyboardInterrupt
            raise DiffkitError(run.stop_message or "no endpoint answered")  # nothing was fetched
        run.store.write_metadata()
        result = ScrapeResult.from_run(run, run.reconcile, run.store)
        if config.report and config.report_path is None:  # an explicit --report is always written
            result.report_skipped = _no_work(run, result)
        if config.report and result.report_skipped is None:
            try:
                paths = write_scrape_report(result, run.store, run.kept_new, config.report_path)
                result.report_html, result.report_json = str(paths.html), str(paths.json)
            except OSError as exc:  # checked writable at the start; the images are safe on disk: say so
                result.warnings.append(f"report not written ({exc}); pass --report a writable path")
    finally:
        if run.store is not None:
            run.store.close()
    if run.stop_message is not None:
        raise DiffkitError(
            f"{run.stop_message} (kept {result.kept_total}/{config.n}"
            + (f"; report: {result.report_html})" if result.report_html else ")")
        )
    return result
