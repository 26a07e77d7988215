"""The typed, frozen configuration of one ``diffkit scrape`` run, with the defaults and their reasons."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from diffkit import __version__
from diffkit.dataset.redact import redact
from diffkit.dataset.verify import CANDIDATE_BITS
from diffkit.errors import DiffkitError

DEFAULT_USER_AGENT = f"diffkit/{__version__} (+https://github.com/diffkit/diffkit)"

ALL_LISTED = 0  # ScrapeConfig.n with a URL list: as many images as the list has URLs

# thispersondoesnotexist.com moved its image endpoint over the years; the newest first.
TPDNE_ENDPOINTS: tuple[str, ...] = (
    "https://thispersondoesnotexist.com/random-person.jpeg",
    "https://thispersondoesnotexist.com/",
    "https://thispersondoesnotexist.com/image",
)


@dataclass(frozen=True)
class ScrapeConfig:
    """Everything one scrape needs. ``url=None`` probes ``candidate_urls`` in order; a URL is used as is.

    The defaults are written only here (the CLI shows them from this class). Options that cannot work
    raise :class:`DiffkitError` when the config is made, before any file or socket is touched.
    """

    n: int  # with ``urls``, ALL_LISTED (0) means every URL of the list
    out: Path = Path("data/faces")
    url: str | None = None
    urls: Path | None = None  # a URL list (text, CSV or Parquet): each URL fetched once (urllist.py)
    concurrency: int = 2
    rps: float = 1.0  # polite: the site publishes no limit and serves everyone from one generator
    timeout_s: float = 30.0  # whole request, not per socket read (httpx's own timeout is per read)
    max_retries: int = 5  # transient failures (429, 5xx, timeouts, connection errors) of one request
    user_agent: str = DEFAULT_USER_AGENT
    expect_size: tuple[int, int] | None = None
    threshold: int = CANDIDATE_BITS  # stage-1 pHash bits, as dedupe's; stage 2 verifies (docs/scrape.md)
    candidate_urls: tuple[str, ...] = TPDNE_ENDPOINTS
    max_consecutive_failures: int = 10  # any failed response in a row (all workers) stops the run
    max_block_pages: int = 5  # HTML/403 answers in a row: the site is blocking us
    exhaustion_window: int = 200  # images (kept + duplicates) looked at for the exhaustion check
    exhaustion_dup_rate: float = 0.5  # duplicates above this fraction of the window: the source is spent
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    retry_after_cap_s: float = 600.0  # a longer Retry-After stops the run instead of sleeping for hours
    max_pixels: int = 40_000_000  # decoded pixels allowed; larger images are decompression bombs
    max_bytes: int = 50_000_000  # response bodies larger than this are not downloaded to the end
    metadata_every_s: float = 60.0  # metadata.jsonl is rewritten this often (and always at the end)
    seed: int | None = None  # jitter seed, for reproducible tests
    progress: bool = True
    report: bool = True
    report_path: Path | None = None  # default reports/scrape-<timestamp>.html

    def __post_init__(self) -> None:
        if self.url is not None and self.urls is not None:
            raise DiffkitError("--url and --urls exclude each other: pass one image URL or one list")
        if self.n < 1 and not (self.urls is not None and self.n == ALL_LISTED):
            raise DiffkitError(f"--n must be at least 1, got {self.n}")
        if self.concurrency < 1:
            raise DiffkitError(f"--concurrency must be at least 1, got {self.concurrency}")
        if not self.rps > 0:
            raise DiffkitError(f"--rps must be positive, got {self.rps}")
        if not self.timeout_s > 0:
            raise DiffkitError(f"--timeout must be positive, got {self.timeout_s}")
        if self.max_retries < 0:
            raise DiffkitError(f"--max-retries must be 0 or more, got {self.max_retries}")
        if not 0 <= self.threshold <= 64:
            raise DiffkitError(f"--threshold must be 0..64 bits, got {self.threshold}")
        if self.expect_size is not None and min(self.expect_size) < 1:
            raise DiffkitError(f"--expect-size must be positive, got {self.expect_size}")
        for url in (self.url,) if self.url is not None else self.candidate_urls:
            check_url(url)
        check_user_agent(self.user_agent)
        if self.out.exists() and not self.out.is_dir():
            raise DiffkitError(f"--out {self.out} is a file, not a folder; pass the folder to fill")


def check_url(url: str) -> None:
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as exc:  # "http://[::1" and friends
        raise DiffkitError(f"the URL {redact(url)!r} cannot be parsed ({exc})") from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise DiffkitError(f"only http:// and https:// URLs can be scraped, got {redact(url)!r}")
    if not hostname:
        raise DiffkitError(f"the URL {redact(url)!r} has no host name")


def check_user_agent(user_agent: str) -> None:
    """HTTP header values are bytes: printable ASCII only (no accents, no line breaks)."""
    if not user_agent.strip():
        raise DiffkitError("--user-agent must not be empty")
    bad = sorted({char for char in user_agent if not " " <= char <= "~"})
    if bad:
        raise DiffkitError(
            f"--user-agent must be printable ASCII text (an HTTP header cannot carry "
            f"{', '.join(repr(char) for char in bad)}); got {user_agent!r}"
        )


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x1024"`` -> ``(1024, 1024)`` (width, height)."""
    try:
        width, height = (int(part) for part in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise DiffkitError(f"--expect-size must look like 1024x1024 (width x height), got {text!r}") from None
    if width < 1 or height < 1:
        raise DiffkitError(f"--expect-size must be positive, got {text!r}")
    return width, height
