"""Find the URL that answers with an image before scraping starts.

thispersondoesnotexist.com served its image at ``/image`` (2019-2023), then at ``/`` and now at
``/random-person.jpeg``; the other paths answer with HTML. Without ``--url`` diffkit tries the
known endpoints newest first and says which one answered. A user's ``--url`` is used as is: if it
does not answer with an image, that is an error, not a reason to guess.

One answer is not enough to decide: a site that serves an HTML page, an off-host redirect or a broken
body once (a CDN hiccup, the first request after a restart) answers with an image a moment later, and a
multi-hour scrape must not refuse to start (or resume) over it. So each URL gets ``PROBE_ATTEMPTS``
tries with backoff; only "nothing here" (404, 410) moves on at once, and transient faults (5xx, 429,
timeouts, refused connections) were already retried with backoff inside one attempt.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from diffkit.dataset.redact import redact
from diffkit.errors import DiffkitError
from diffkit.scrape.validate import BLOCK_PAGE, CONNECTION_ERROR, TIMEOUT, Rejection, ValidImage, is_transient

# One request (with its retries) to a URL: the image and the URL that served it, or why not.
Attempt = Callable[[str], Awaitable["tuple[ValidImage, str] | Rejection"]]
# The wait before the probe's next try of one URL, given how many tries failed so far (0 for the first).
Pause = Callable[[int], Awaitable[None]]

PROBE_ATTEMPTS = 3
_NOT_HERE = frozenset({"http_404", "http_410"})  # the path does not exist: another try cannot help


async def _no_pause(_: int) -> None:
    return None


@dataclass(frozen=True)
class ProbeStep:
    url: str
    outcome: str  # "image" or a rejection reason
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        """For reports: credentials in URLs are never written (see :mod:`diffkit.dataset.redact`)."""
        return {"url": redact(self.url), "outcome": self.outcome, "detail": redact(self.detail)}


@dataclass(frozen=True)
class ProbeResult:
    url: str
    image: ValidImage
    served_by: str  # the URL after same-host redirects
    steps: tuple[ProbeStep, ...]


def _advice(reason: str) -> str:
    if reason == BLOCK_PAGE:
        return "it answered with an HTML page, not an image: pass the address of the image itself"
    if reason == CONNECTION_ERROR:
        return "cannot connect: check the host name, the port and your network"
    if reason == TIMEOUT:
        return "no answer in time: check the URL or raise --timeout"
    return "check the URL in a browser"


async def probe_endpoints(
    candidates: tuple[str, ...],
    user_url: str | None,
    attempt: Attempt,
    pause: Pause = _no_pause,
    attempts: int = PROBE_ATTEMPTS,
) -> ProbeResult:
    """Return the first URL that serves a valid image; raise :class:`DiffkitError` if none does.

    Each URL is tried up to ``attempts`` times (``pause`` between tries) unless its answer says there is
    nothing there or was already retried as a transient fault; every try is one step of the result.
    """
    urls = (user_url,) if user_url is not None else candidates
    steps: list[ProbeStep] = []
    for url in urls:
        for tried in range(attempts):
            if tried:
                await pause(tried - 1)
            outcome = await attempt(url)
            if not isinstance(outcome, Rejection):
                image, served_by = outcome
                steps.append(ProbeStep(url, "image", f"{image.width}x{image.height} {image.extension}"))
                return ProbeResult(url, image, served_by, tuple(steps))
            steps.append(ProbeStep(url, outcome.reason, outcome.detail))
            if outcome.reason in _NOT_HERE or is_transient(outcome.reason):
                break
    if user_url is not None:
        step = steps[-1]
        advice = _advice(step.outcome)
        tries = f" in {len(steps)} tries" if len(steps) > 1 else ""
        raise DiffkitError(
            redact(f"{user_url} gave no image{tries} ({step.outcome}: {step.detail}); {advice}")
        )
    last = {step.url: step for step in steps}  # the last answer of each URL names it in the message
    tried = redact("; ".join(f"{step.url} -> {step.outcome}" for step in last.values()))
    if all(step.outcome in (CONNECTION_ERROR, TIMEOUT) for step in last.values()):
        raise DiffkitError(f"cannot reach any known image endpoint ({tried}); check your network or proxy")
    raise DiffkitError(
        f"none of the known image endpoints answered with an image ({tried}); "
        "the site may have moved again: find the image address in a browser and pass it with --url"
    )
