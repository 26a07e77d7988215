"""Credentials in URLs (``http://user:pass@host/``) are used for requests and never written or shown.

The password would otherwise land in ``manifest.sqlite``, ``metadata.jsonl``, the HTML and JSON
reports, error messages and the terminal. :func:`redact` replaces the user-info part of every URL in a
piece of text with ``***``; everything that leaves the process goes through it. It lives with the
dataset folder because the manifest and ``metadata.jsonl`` store URLs: their writers apply it, whichever
command writes (scrape adds rows, dedupe rewrites ``metadata.jsonl`` after removing some).
"""

from __future__ import annotations

import re

__all__ = ["redact"]

# The user-info is what the HTTP client (httpx, RFC 3986) sends as credentials: after "//", everything
# up to the last "@" before the first "/", "?" or "#". Any other character belongs to it, whitespace
# included: httpx percent-encodes a space, a no-break space or U+2028 in a password and still sends it,
# so a rule that stops at whitespace would leave such a password in plain text. The scheme is not
# required: text quoting a URL with a mistyped scheme ("htp://u:p@h", "1http://...") hides it too.
# Each match starts at a "://" and stops at the next "/" (every following URL begins with one), so the
# scan is linear in the text's length.
_USERINFO = re.compile(r"://[^/?#]*@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _USERINFO.sub("://***@", text)
