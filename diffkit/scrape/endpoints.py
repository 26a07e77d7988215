"""Find the URL that answers with an image before scraping starts.

thispersondoesnotexist.com served its image at ``/image`` (2019-2023), then at ``/`` and now at
``/random-person.jpeg``; the other paths answer with HTML. Without ``--url`` diffkit tries the
known endpoints newest first and says which one answered. A user's ``--url`` is used as is: if it
does not answer with an image, that is an error, not a reason to guess.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from diffkit.dataset.redact import redact
from diffkit.errors import DiffkitError
from diffkit.scrape.validate import BLOCK_PAGE, CONNECTION_ERROR, TIMEOUT, Rejection, ValidImage

# One request (with its retries) to a URL: the image and the URL that served it, or why not.
Attempt = Callable[[str], Awaitable["tuple[ValidImage, str] | Rejection"]]


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


async def probe_endpoints(candidates: tuple[str, ...], user_url: str | None, attempt: Attempt) -> ProbeResult:
    """Return the first URL that serves a valid image; raise :class:`DiffkitError` if none does."""
    urls = (user_url,) if user_url is not None else candidates
    steps: list[ProbeStep] = []
    for url in urls:
        outcome = await attempt(url)
        if isinstance(outcome, Rejection):
            steps.append(ProbeStep(url, outcome.reason, outcome.detail))
            continue
        image, served_by = outcome
        steps.append(ProbeStep(url, "image", f"{image.width}x{image.height} {image.extension}"))
        return ProbeResult(url, image, served_by, tuple(steps))
    if user_url is not None:
        step = steps[0]
        advice = _advice(step.outcome)
        raise DiffkitError(redact(f"{user_url} gave no image ({step.outcome}: {step.detail}); {advice}"))
    tried = redact("; ".join(f"{step.url} -> {step.outcome}" for step in steps))
    if all(step.outcome in (CONNECTION_ERROR, TIMEOUT) for step in steps):
        raise DiffkitError(f"cannot reach any known image endpoint ({tried}); check your network or proxy")
    raise DiffkitError(
        f"none of the known image endpoints answered with an image ({tried}); "
        "the site may have moved again: find the image address in a browser and pass it with --url"
    )
