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

# scheme://<user-info>@ up to the last "@" before the path, as urlsplit reads it (so "p@ss" hides too).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s]*@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``."""
    return _USERINFO.sub(r"\1***@", text)
