"""The one perceptual hash: 64-bit pHash of an image's 8-bit greyscale picture, as an unsigned integer.

Scrape (inline de-duplication, the manifest's ``phash`` column) and dedupe (``--hash phash``, its cache)
hash here, so their values for the same bytes are the same number. Entropy decoding dominates hashing
time, and every other step shrinks with the picture, so by default a JPEG is decoded by libjpeg's DCT
scaling (``Image.draft``) at the smallest scale whose result keeps >= 64 px on both sides (1/8 for a
512 px or larger picture: the inverse DCT keeps only each block's DC term) before imagehash shrinks it
to 32 px (:data:`DRAFT_DECODE`); :data:`FULL_DECODE` decodes every pixel. A JPEG's hash differs by a few
bits between paths (other formats: identical), so the path's name is stored beside every hash (manifest
meta ``hash_decode``, dedupe's cache key) and hashes from different paths are never compared.

Decode paths are versions. :data:`RETIRED_DECODES` are the defaults of earlier versions, still decodable
(a test can write an old manifest, a benchmark can compare) but no longer offered: a manifest or cache
holding their values is migrated (the files hashed again on the current path, the old values kept until
then), never refused. 64 px rather than 32: imagehash's antialiased resize to 32 px then still averages
at least 2 x 2 decoded pixels per hash pixel, and the 16 px thumbnail (:mod:`diffkit.dataset.verify`)
at least 4 x 4.

Pixels go through :func:`diffkit.dataset.decode.to_8bit`: 8-bit images hash exactly as in every earlier
version; 16-bit greyscale is scaled to 8 bits first (imagehash's ``convert("L")`` would clamp it to
white); float or 32-bit pixels raise :class:`~diffkit.dataset.decode.UndecodableImage`.
"""

from __future__ import annotations

import io
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from diffkit.dataset.decode import to_8bit

__all__ = [
    "DECODE_PATHS",
    "DRAFT_DECODE",
    "DRAFT_SIZE",
    "FULL_DECODE",
    "KNOWN_DECODES",
    "RETIRED_DECODES",
    "bits_to_uint64",
    "check_decode",
    "draft_size",
    "open_for_hash",
    "phash",
    "phash_image",
    "to_signed64",
    "to_unsigned64",
]

DRAFT_DECODE = "draft-L-64"  # the default; its name is what the manifest records as ``hash_decode``
FULL_DECODE = "full"
DECODE_PATHS: tuple[str, ...] = (DRAFT_DECODE, FULL_DECODE)  # what dedupe's --decode offers
# Earlier defaults: name -> the size libjpeg's DCT scaling had to keep. Never compared with current values.
RETIRED_DECODES: dict[str, tuple[int, int]] = {"draft-L-256": (256, 256)}
KNOWN_DECODES: tuple[str, ...] = (*DECODE_PATHS, *RETIRED_DECODES)
DRAFT_SIZE = (64, 64)  # libjpeg picks the smallest DCT scale whose result stays >= this on both sides
_DRAFT_SIZES = {DRAFT_DECODE: DRAFT_SIZE, **RETIRED_DECODES}


def check_decode(decode: str) -> None:
    if decode not in KNOWN_DECODES:
        raise ValueError(f"decode must be one of {', '.join(DECODE_PATHS)}, got {decode!r}")


def draft_size(decode: str) -> tuple[int, int] | None:
    """The size a JPEG is DCT-scaled to keep on ``decode`` (None: every pixel is decoded)."""
    check_decode(decode)
    return _DRAFT_SIZES.get(decode)


def bits_to_uint64(bits: np.ndarray) -> int:
    """Pack a 64-entry boolean array (row-major, as imagehash stores it) into one unsigned integer.

    Bit 63 is the first bit of the array: the integer's 16-digit hex is imagehash's ``str(hash)``.
    """
    flat = np.asarray(bits, dtype=bool).ravel()
    if flat.size != 64:
        raise ValueError(f"expected 64 hash bits, got {flat.size}")
    return int.from_bytes(np.packbits(flat).tobytes(), "big")


def open_for_hash(source: bytes | Path | str, decode: str = DRAFT_DECODE) -> tuple[Image.Image, int, int]:
    """Decode bytes (or a file) on the given path for hashing; returns the loaded 8-bit image and the
    full-resolution width and height (from the header, before any DCT scaling)."""
    size = draft_size(decode)
    # Not closed here: closing would free the pixels the caller hashes. A file's handle is released by
    # load() (single-frame formats), bytes hold none.
    image = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else Image.open(source)
    width, height = image.size
    if size is not None and image.format == "JPEG":
        image.draft("L", size)
    image.load()
    # 8-bit images come back as the same object (hashes unchanged); 16-bit greyscale is scaled.
    return to_8bit(image), width, height


def phash_image(image: Image.Image) -> int:
    """64-bit pHash of an already decoded 8-bit image (unsigned)."""
    return bits_to_uint64(imagehash.phash(image).hash)


def phash(source: bytes | Path | str, decode: str = DRAFT_DECODE) -> int:
    """64-bit pHash (unsigned) of image bytes or a file, decoded on ``decode``."""
    image, _, _ = open_for_hash(source, decode)
    return phash_image(image)


def to_signed64(value: int) -> int:
    """SQLite integers are signed 64-bit: a hash is stored as its two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value & 0xFFFF_FFFF_FFFF_FFFF
