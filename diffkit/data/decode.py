"""Decoding one image file to a square uint8 array at the training resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diffkit.console import printable
from diffkit.dataset.decode import square_pixels

__all__ = ["DECODER_VERSION", "decode_image", "decode_or_reason"]

# Bump when the pixels produced for the same file change (invalidates every cache). Decoding through
# open_rgb left every 8-bit image byte-identical; only 16-bit images (formerly clamped to white) and
# float/32-bit ones (now skipped) changed.
DECODER_VERSION = 2  # 2: 16-bit images scaled (version 1 clamped them to white)


def decode_image(path: Path, resolution: int) -> np.ndarray:
    """Center-crop to a square and resize with Lanczos (antialiased) to ``resolution``; HWC uint8 RGB.

    Decoding is :func:`diffkit.dataset.open_rgb`, the decoder dedupe and eval use too: EXIF orientation
    applied, transparency composited on white, 16-bit greyscale scaled (not clamped) to 8 bits. JPEGs
    are first decoded at a reduced DCT scale (``draft``) that still keeps at least twice the target
    size, which makes 1024 px -> 64 px about 10x cheaper; Lanczos then does the last >= 2x. Pixel
    modes with no known white level (float, 32-bit integer) raise ``UndecodableImage``.
    """
    return square_pixels(path, resolution)


def decode_or_reason(job: tuple[int, str, int]) -> tuple[int, np.ndarray | None, str]:
    """Pool worker: ``(index, pixels, "")`` or ``(index, None, reason)`` for a file that cannot be used."""
    index, path, resolution = job
    try:
        return index, decode_image(Path(path), resolution), ""
    except Exception as error:  # any decoder failure means "skip and list", never a crash
        reason = printable(f"{type(error).__name__}: {error}").strip().splitlines()[0][:200]
        return index, None, reason
