"""Showing user text in the terminal: never parsed as markup, never crashing on odd bytes.

A URL, path or file name may contain ``[bold]`` or ``[/]`` (rich markup) or bytes that are not UTF-8
(valid file names on Linux, decoded by Python with ``surrogateescape``). Every piece of user text that
goes into a rich string passes through :func:`shown`; text for files (HTML, JSON) through
:func:`printable`.
"""

from __future__ import annotations

import os

from rich.markup import escape

__all__ = ["printable", "shown"]


def printable(value: object) -> str:
    """``str(value)`` with undecodable bytes shown as ``\\xNN`` (safe to encode as UTF-8)."""
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    if isinstance(text, bytes):
        return text.decode("utf-8", "backslashreplace")
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def shown(value: object) -> str:
    """User text for a rich markup string: printable and with markup escaped."""
    return escape(printable(value))
