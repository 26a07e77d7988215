"""Decide whether one HTTP response is a usable image, and name the reason when it is not.

Every check is cheap before it is expensive: status, content type, magic bytes, length, then the
header-only image size (a decompression bomb is refused before any pixel is decoded), then one
decode that also feeds the pHash. Only bytes that pass everything are ever written to disk.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass

from PIL import Image

from diffkit.dataset.decode import UndecodableImage
from diffkit.dataset.phash import DRAFT_DECODE, phash, phash_image
from diffkit.dataset.verify import open_for_hash_and_thumbnail

# Rejection reasons. ``http_<status>`` covers every other status code.
BLOCK_PAGE = "block_page"  # an HTML page where an image was expected (landing page, CAPTCHA, ban)
CONTENT_TYPE = "content_type"
MAGIC_BYTES = "magic_bytes"
LENGTH_MISMATCH = "length_mismatch"
TRUNCATED = "truncated"  # the connection closed before the announced body arrived
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
REDIRECT_OFFHOST = "redirect_offhost"
TOO_MANY_REDIRECTS = "too_many_redirects"
TOO_LARGE = "too_large"
DECOMPRESSION_BOMB = "decompression_bomb"
DECODE_ERROR = "decode_error"
WRONG_SIZE = "wrong_size"
TRUNCATED_IMAGE = "truncated_image"  # complete per Content-Length, yet the JPEG stops before its end
DUPLICATE_EXACT = "duplicate_exact"
DUPLICATE_NEAR = "duplicate_near"

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
TRANSIENT_REASONS = frozenset({TIMEOUT, CONNECTION_ERROR, TRUNCATED} | {f"http_{s}" for s in RETRY_STATUSES})

# The decode path of the pHashes scrape stores (manifest meta ``hash_decode``): the one pHash's default,
# libjpeg's smallest DCT scale that keeps >= 64 px, the same as ``diffkit dedupe``'s default. A folder
# scraped on an earlier default is migrated when opened (diffkit.dataset.manifest), never refused.
HASH_DECODE = DRAFT_DECODE

_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def is_transient(reason: str) -> bool:
    """Worth retrying with backoff: the server or network may answer differently in a moment."""
    return reason in TRANSIENT_REASONS


def is_block(reason: str) -> bool:
    return reason in {BLOCK_PAGE, "http_403"}


@dataclass(frozen=True)
class ValidImage:
    data: bytes
    sha256: str
    phash: int  # unsigned 64-bit
    width: int
    height: int
    extension: str  # "jpg", "png" or "webp", from the decoded format
    # 16 x 16 colour thumbnail (diffkit.dataset.verify), from the same decode: the near-duplicate check's
    # second stage needs no second decode. None only where a caller built the image by hand.
    thumb: bytes | None = None


@dataclass(frozen=True)
class Rejection:
    reason: str
    detail: str = ""


def sniff_format(head: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def looks_like_html(content_type: str, body: bytes) -> bool:
    if "html" in content_type:
        return True
    start = body[:256].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html", b"<head", b"<body"))


def check_response(status: int, headers: Mapping[str, str], body: bytes) -> Rejection | None:
    """Checks that need no decoding: status, content type, magic bytes and Content-Length."""
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if status == 200 and looks_like_html(content_type, body):
        return Rejection(BLOCK_PAGE, f"HTML page ({content_type or 'no content type'})")
    if status != 200:
        return Rejection(f"http_{status}", f"HTTP {status}")
    if not content_type.startswith("image/"):
        return Rejection(CONTENT_TYPE, f"content type {content_type or 'missing'!r}")
    if sniff_format(body[:16]) is None:
        return Rejection(MAGIC_BYTES, f"first bytes {body[:8].hex()} are not JPEG, PNG or WebP")
    announced = headers.get("content-length")
    encoded = headers.get("content-encoding", "identity").lower() not in {"", "identity"}
    if announced is not None and not encoded:
        try:
            expected = int(announced)
        except ValueError:
            return Rejection(LENGTH_MISMATCH, f"unreadable Content-Length {announced!r}")
        if expected != len(body):
            return Rejection(LENGTH_MISMATCH, f"Content-Length {expected} but {len(body)} bytes received")
    return None


def phash_of(data: bytes) -> int:
    """64-bit pHash (unsigned) on the fixed ``HASH_DECODE`` path: :func:`diffkit.dataset.phash.phash`.

    Raises :class:`UndecodableImage` for pixels without a known white level (float, 32-bit).
    """
    return phash(data, HASH_DECODE)


def decode_image(data: bytes, max_pixels: int, expect_size: tuple[int, int] | None) -> ValidImage | Rejection:
    """One decode under a pixel limit, serving validation, the pHash and the thumbnail.

    The decode is dedupe's own (``open_for_hash_and_thumbnail`` on ``HASH_DECODE``), so the pHash and
    thumbnail are exactly the values ``diffkit dedupe`` computes for the same bytes: a JPEG at a reduced
    DCT scale, other formats in full. A reduced-scale JPEG decode still entropy-decodes every coefficient
    of every block, so a truncated or corrupt stream fails here exactly as a full decode would; only the
    inverse DCT and colour conversion run at the smaller size (bench_scrape.py measures the saving).
    """
    if sniff_format(data[:16]) == "JPEG" and not data.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9"):
        # A Content-Length shorter than the image also lands here: the header lied, the body ran on.
        return Rejection(TRUNCATED_IMAGE, "JPEG without its end-of-image marker")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size  # from the header only: nothing decoded yet
            if width * height > max_pixels:
                return Rejection(DECOMPRESSION_BOMB, f"{width}x{height} exceeds {max_pixels:,} pixels")
            extension = _FORMATS.get(header.format or "")
            if extension is None:
                return Rejection(DECODE_ERROR, f"unsupported format {header.format}")
        pixels, thumb, _, _ = open_for_hash_and_thumbnail(data, HASH_DECODE)  # the one pixel decode
        value = phash_image(pixels)
    except Image.DecompressionBombError as exc:
        return Rejection(DECOMPRESSION_BOMB, str(exc)[:120])
    except UndecodableImage as exc:  # float or 32-bit pixels: no known white level to hash
        return Rejection(DECODE_ERROR, str(exc)[:120])
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying "broken"
        return Rejection(DECODE_ERROR, str(exc)[:120] or type(exc).__name__)
    if expect_size is not None and (width, height) != tuple(expect_size):  # after the decode, as ever:
        # a broken image of the wrong size is still reported as broken
        return Rejection(WRONG_SIZE, f"{width}x{height}, expected {expect_size[0]}x{expect_size[1]}")
    return ValidImage(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=value,
        width=width,
        height=height,
        extension=extension,
        thumb=thumb,
    )


def validate(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    max_pixels: int,
    expect_size: tuple[int, int] | None = None,
) -> ValidImage | Rejection:
    """The whole validation of one response (CPU-bound: run it in a worker thread)."""
    rejection = check_response(status, headers, body)
    if rejection is not None:
        return rejection
    return decode_image(body, max_pixels, expect_size)
