"""``diffkit scrape --urls FILE``: fetch each URL of a list once, politely per host, resumably.

The same validation, storage and de-duplication as a "random image" scrape (:mod:`diffkit.scrape.run`);
what differs is the source and the politeness:

- **Per host.** Each ``host[:port]`` has its own rate limiter (``--rps`` each) and its own
  ``Retry-After`` pause: a 429 from host A holds back A's URLs only. The workers take the next URL of
  whichever host may be asked soonest, so a paused host never holds a worker while another host waits.
  A transient fault (5xx, 429, timeout...) backs that host off and puts the URL back at the head of its
  queue, up to ``--max-retries`` times; a ``Retry-After`` beyond the cap leaves that host's URLs for a
  rerun, and the other hosts go on.
- **Each URL once.** Its outcome is a row of the manifest's ``url_status`` table: ``kept``,
  ``duplicate`` and ``rejected`` are done for good and a rerun skips them; ``failed`` (transient
  faults after every retry) is fetched again by a rerun.
- **No stop for failures.** Lists have dead links; a failed URL is counted under its reason, and the
  run goes on to the end of the list (or ``--n`` kept, or Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from diffkit.console import shown
from diffkit.dataset.manifest import URL_DONE_STATUSES
from diffkit.errors import DiffkitError
from diffkit.scrape.client import RateLimiter, TransportFailure, full_jitter_delay, parse_retry_after
from diffkit.scrape.config import ALL_LISTED, ScrapeConfig
from diffkit.scrape.result import ScrapeResult
from diffkit.scrape.run import _Scrape, say
from diffkit.scrape.run import scrape as run_scrape
from diffkit.scrape.storage import ReconcileReport, Store
from diffkit.scrape.urllist import BAD_LINES_SHOWN, ListedUrl, UrlList, read_url_list
from diffkit.scrape.validate import Rejection, ValidImage, is_transient

__all__ = ["scrape_urls"]


@dataclass
class _Host:
    """One host's queue, limiter and counts."""

    name: str
    limiter: RateLimiter
    pending: deque[tuple[ListedUrl, int]] = field(default_factory=deque)  # (URL, retries so far)
    urls: int = 0  # listed URLs of this host not done before this run
    requests: int = 0
    fetched: int = 0  # URLs settled by this run
    kept: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    retry_after_pauses: int = 0
    given_up: str = ""  # why this host's remaining URLs wait for a rerun

    def summary(self) -> dict[str, Any]:
        return {
            "urls": self.urls,
            "requests": self.requests,
            "fetched": self.fetched,
            "kept": self.kept,
            "duplicates": self.duplicates,
            "rejected": dict(sorted(self.rejected.items())),
            "rejected_total": sum(self.rejected.values()),
            "failed": dict(sorted(self.failed.items())),
            "failed_total": sum(self.failed.values()),
            "retry_after_pauses": self.retry_after_pauses,
            "not_fetched": len(self.pending),
            "given_up": self.given_up,
        }


class _ListScrape(_Scrape):
    """A run over a URL list: the base class's validation, storage and dedupe, a per-host scheduler."""

    listing = True

    def __init__(
        self, config: ScrapeConfig, store: Store | None, reconcile: ReconcileReport, url_list: UrlList
    ) -> None:
        super().__init__(config, store, reconcile)
        self.url_list = url_list
        self.url = str(url_list.path)  # what the summary says the images came from
        self.hosts: dict[str, _Host] = {}
        self.already_done = 0
        self.checked_urls = False  # after_reconcile() ran
        self.changed = asyncio.Event()  # a URL was put back, or a request ended: the scheduler looks again

    # -- the list ----------------------------------------------------------------------------------
    def after_reconcile(self) -> None:
        """Make the URL statuses agree with the kept images, before anything is fetched or written.

        Killed between an image's row and its URL's status, the image is there: its URL is marked kept
        (with the list's columns, for ``metadata.jsonl``). A URL marked kept whose image reconcile
        dropped (its file was lost) is marked failed, so that it is fetched again.
        """
        self.checked_urls = True
        store = self.open_store()
        statuses = store.manifest.url_statuses()
        kept_urls = store.manifest.image_urls()
        for listed in self.url_list.urls:
            status, sha256 = statuses.get(listed.key, ("", None))
            if not status and listed.key in kept_urls:
                store.record_url(listed.key, "kept", "kept", kept_urls[listed.key], listed.extra)
            elif status == "kept" and sha256 not in store.index.sha256:  # kept, or removed by dedupe
                store.record_url(listed.key, "failed", "file_missing", None, listed.extra)

    def prepare(self) -> None:
        """Queue every listed URL not done yet, host by host (a resume skips the rest)."""
        store = self.open_store()
        if not self.checked_urls:  # a folder this run created
            self.after_reconcile()
        statuses = store.manifest.url_statuses()
        for listed in self.url_list.urls:
            status, _ = statuses.get(listed.key, ("", None))
            if status in URL_DONE_STATUSES:
                self.already_done += 1
                continue
            host = self.hosts.get(listed.host)
            if host is None:
                host = self.hosts[listed.host] = _Host(listed.host, RateLimiter(self.config.rps))
            host.pending.append((listed, 0))
            host.urls += 1

    def list_summary(self) -> dict[str, Any]:
        hosts = {name: host.summary() for name, host in self.hosts.items()}
        rejected: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        for host in self.hosts.values():
            rejected.update(host.rejected)
            failed.update(host.failed)
        url_list = self.url_list
        return {
            "file": str(url_list.path),
            "columns": url_list.columns,
            "listed": url_list.listed,
            "unique": len(url_list.urls),
            "repeats": url_list.repeats,
            "bad_lines": len(url_list.bad),
            "bad": [bad.to_dict() for bad in url_list.bad[:BAD_LINES_SHOWN]],
            "already_done": self.already_done,
            "fetched": sum(host.fetched for host in self.hosts.values()),
            "kept": sum(host.kept for host in self.hosts.values()),
            "duplicates": sum(host.duplicates for host in self.hosts.values()),
            "rejected": dict(sorted(rejected.items())),
            "rejected_total": sum(rejected.values()),
            "failed": dict(sorted(failed.items())),
            "failed_total": sum(failed.values()),
            "not_fetched": sum(len(host.pending) for host in self.hosts.values()),
            "hosts": hosts,
        }

    # -- scheduling --------------------------------------------------------------------------------
    async def next_url(self) -> tuple[_Host, ListedUrl, int] | None:
        """The next URL of the host that may be asked soonest, once its slot is due; None when done."""
        while not self.stop_event.is_set():
            ready = [host for host in self.hosts.values() if host.pending and not host.given_up]
            if not ready and self.in_flight == 0:
                return None  # nothing left, and nothing in flight that could be put back
            wait = 1.0  # nothing queued now: a request in flight may put its URL back
            if ready:
                host = min(ready, key=lambda h: h.limiter.ready_at())
                if host.limiter.claim():
                    listed, retries = host.pending.popleft()
                    return host, listed, retries
                wait = host.limiter.ready_at() - time.monotonic()
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), max(wait, 0.0))
        return None

    async def list_worker(self) -> None:
        try:
            while self.kept + self.in_flight < self.config.n:
                picked = await self.next_url()
                if picked is None:
                    return
                self.in_flight += 1
                try:
                    outcome = await self.fetch_listed(*picked)
                finally:
                    self.in_flight -= 1
                    self.changed.set()
                if outcome is not None and not self.stop_event.is_set():
                    self.keep_listed(picked[0], picked[1], *outcome)
        except DiffkitError:  # the folder cannot be written (disk full...): every worker stops now
            self.stop_event.set()
            raise

    # -- one URL -----------------------------------------------------------------------------------
    async def fetch_listed(
        self, host: _Host, listed: ListedUrl, retries: int
    ) -> tuple[ValidImage, str] | None:
        """One request for ``listed`` (its slot already claimed): the image, or None when it failed,
        was put back for a retry, or waits for a rerun."""
        self.requests += 1
        host.requests += 1
        loop = asyncio.get_running_loop()
        response, checked = await loop.run_in_executor(self.executor, self.fetch_and_validate, listed.url)
        if isinstance(response, TransportFailure):
            checked = Rejection(response.reason, response.detail)
        else:
            if response.status == 429:
                host.limiter.on_throttled()
            if response.status in (429, 503) and self.host_retry_after(host, response.headers):
                host.pending.appendleft((listed, retries))  # not its fault: the host asked us to wait
                return None
        if isinstance(checked, Rejection):
            self.list_reject(host, listed, retries, checked)
            return None
        assert checked is not None  # a response is always validated
        host.limiter.on_success()
        return checked, response.url

    def host_retry_after(self, host: _Host, headers: dict[str, str]) -> bool:
        """Apply a ``Retry-After`` to this host only; True when it is beyond the cap (host given up)."""
        wait = parse_retry_after(headers.get("retry-after"))
        if wait is None:
            return False
        if wait > self.config.retry_after_cap_s:
            cap = self.config.retry_after_cap_s
            host.given_up = (
                f"asked to wait {wait:.0f} s (Retry-After), more than the {cap:.0f} s cap: "
                "its URLs left for a rerun"
            )
            say(f"[yellow]{shown(host.name)}[/]: {shown(host.given_up)}")
            return True
        host.limiter.pause(wait)
        host.retry_after_pauses += 1
        return False

    def list_reject(self, host: _Host, listed: ListedUrl, retries: int, rejection: Rejection) -> None:
        """Count a failed request; put a transient one back (the host backs off), settle the others."""
        store = self.open_store()
        store.count(rejection.reason)
        self.rejections[rejection.reason] += 1
        self.events.append((time.monotonic() - self.started, "rejected"))
        transient = is_transient(rejection.reason)
        if transient and retries < self.config.max_retries:
            if host.limiter.paused_for() <= 0:  # no Retry-After: back off this host, exponentially
                cfg = self.config
                host.limiter.pause(
                    full_jitter_delay(retries, cfg.backoff_base_s, cfg.backoff_cap_s, self.rng)
                )
            host.pending.appendleft((listed, retries + 1))
        else:
            status = "failed" if transient else "rejected"  # failed: fetched again by a rerun
            store.record_url(listed.key, status, rejection.reason, None, listed.extra)
            (host.failed if transient else host.rejected)[rejection.reason] += 1
            host.fetched += 1
        self.show_progress()

    def keep_listed(self, host: _Host, listed: ListedUrl, image: ValidImage, served_by: str) -> None:
        """De-duplicate, then write the image and its URL's status. No ``await`` in here."""
        del served_by  # the listed URL is what a list user looks an image up by (as img2dataset keeps)
        now = time.monotonic()
        store = self.open_store()
        duplicate = self.count_if_duplicate(store, image, now)
        if duplicate is not None:
            store.record_url(listed.key, "duplicate", duplicate, image.sha256, listed.extra)
            host.duplicates += 1
        elif self.kept >= self.config.n:
            self.surplus += 1
            host.pending.appendleft((listed, 0))  # not settled: a larger --n fetches it again
            return
        else:
            self.kept_new.append(store.add(image, listed.url))
            store.record_url(listed.key, "kept", "kept", image.sha256, listed.extra)
            self.kept += 1
            host.kept += 1
            self.events.append((now - self.started, "kept"))
        host.fetched += 1
        if now - self.last_metadata >= self.config.metadata_every_s:
            store.write_metadata()
            self.last_metadata = now
        self.show_progress()

    # -- the run -----------------------------------------------------------------------------------
    async def probe_and_fetch(self) -> None:
        """No probe: each URL is its own endpoint, judged by its own answer."""
        self.prepare()
        pending = sum(len(host.pending) for host in self.hosts.values())
        say(
            f"list {shown(self.url_list.path)}: {len(self.url_list.urls)} URLs on {len(self.hosts)} "
            f"host(s) to fetch ({self.already_done} done before, {len(self.url_list.bad)} bad lines)"
            if pending
            else f"list {shown(self.url_list.path)}: every URL was done before"
        )
        with self.bar:
            self.show_progress(force=True)
            await self.until_stopped(*(self.list_worker() for _ in range(self.config.concurrency)))
            self.show_progress(force=True)


def scrape_urls(config: ScrapeConfig) -> ScrapeResult:
    """Fetch the URLs of ``config.urls`` into ``config.out`` (``--n`` kept at most; by default all)."""
    assert config.urls is not None
    url_list = read_url_list(config.urls)
    if not url_list.urls:
        shown_bad = "; ".join(f"line {bad.line}: {bad.reason}" for bad in url_list.bad[:3])
        raise DiffkitError(
            f"--urls {config.urls} lists no http(s) URL"
            + (f" ({len(url_list.bad)} bad lines: {shown_bad})" if url_list.bad else "")
        )
    listed = len(url_list.urls)
    n = listed if config.n == ALL_LISTED else config.n
    config = dataclasses.replace(config, n=n)

    def make_run(cfg: ScrapeConfig, store: Store | None, reconcile: ReconcileReport) -> _Scrape:
        return _ListScrape(cfg, store, reconcile, url_list)

    return run_scrape(config, make_run)
