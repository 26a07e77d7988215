"""The one image decoder: bytes or a file to faithful 8-bit pixels, or a reason why not.

Pillow opens 16-bit greyscale PNGs as mode ``I;16`` and ``Image.convert("RGB")`` *clamps* such values
at 255 instead of scaling them, so a 16-bit face became an all-white square (FID 30,132 instead of
135). :func:`to_8bit` scales high-bit-depth pixels to 8 bits and refuses modes whose white level is
unknown (float, 32-bit integer); 8-bit modes pass through untouched, so pHashes and caches of ordinary
images do not change. Data (training cache), dedupe (hashes) and eval (features) all decode here.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["UndecodableImage", "open_rgb", "square_pixels", "to_8bit"]

# 8-bit modes that Image.convert handles exactly (or by its documented standard formulas).
_EIGHT_BIT_MODES = frozenset(
    {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
)
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})


class UndecodableImage(ValueError):
    """A file whose pixels cannot be turned into 8-bit RGB faithfully; the message is the reason."""


def _scale_16_to_8(values: np.ndarray) -> Image.Image:
    # Round to nearest: 65535 -> 255, 0 -> 0, and v * 255 / 65535 in between (v / 257).
    scaled = (values.astype(np.uint32) * 255 + 32767) // 65535
    return Image.fromarray(scaled.astype(np.uint8), mode="L")


def to_8bit(image: Image.Image) -> Image.Image:
    """``image`` in an 8-bit mode with the same picture; raises :class:`UndecodableImage` otherwise.

    Already 8-bit images are returned as they are (same object). 16-bit greyscale (``I;16*``, and
    mode ``I`` from a 16-bit PNG) is scaled by 255/65535; 16-bit RGB(A) PNGs are already reduced to
    8 bits by Pillow's decoder (the high byte), which is faithful.
    """
    mode = image.mode
    if mode in _EIGHT_BIT_MODES:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _scale_16_to_8(np.asarray(image))
    if mode == "I":
        values = np.asarray(image)
        if image.format == "PNG" and values.size and values.min() >= 0 and values.max() <= 65535:
            return _scale_16_to_8(values)
        raise UndecodableImage("32-bit integer pixels (mode I) with no known white level")
    if mode == "F":
        raise UndecodableImage("floating-point pixels (mode F) with no known white level")
    raise UndecodableImage(f"pixel mode {mode} is not supported")


def _composite_on_white(image: Image.Image) -> Image.Image:
    rgba = image.convert("RGBA")
    canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(canvas, rgba)


def open_rgb(
    source: Path | str | bytes,
    *,
    draft_side: int | None = None,
    exif: bool = True,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode a file (path) or its bytes to a loaded 8-bit RGB image.

    ``draft_side``: for JPEGs, let libjpeg decode at the smallest DCT scale whose shorter side stays
    >= ``draft_side`` (every entropy-coded symbol is still decoded, so corrupt data is still caught).
    ``exif``: apply the EXIF orientation. Transparent pixels are composited on white.
    Raises :class:`UndecodableImage` for pixel modes that cannot be reduced faithfully, ``ValueError``
    for an image over ``max_pixels`` (default: Pillow's decompression-bomb limit), and Pillow's own
    errors (``OSError`` and friends) for broken files.
    """
    opened = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else Image.open(source)
    with opened as image:
        limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
        if limit and image.width * image.height > limit:
            raise ValueError(f"{image.width}x{image.height} exceeds the decompression-bomb limit")
        if draft_side and image.format == "JPEG":
            scale = max(1, min(image.size) // draft_side)
            image.draft("RGB", (image.width // scale, image.height // scale))
        if exif:
            image = ImageOps.exif_transpose(image)
        image.load()
        fmt = opened.format
    image.format = image.format or fmt  # exif_transpose returns a copy without the format
    image = to_8bit(image)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        image = _composite_on_white(image)
    return image.convert("RGB") if image.mode != "RGB" else image


def square_pixels(path: Path | str, resolution: int, *, exif: bool = True) -> np.ndarray:
    """The picture of ``path`` as training and evaluation both see it: (resolution, resolution, 3) uint8.

    :func:`open_rgb` (JPEGs drafted at the smallest DCT scale that keeps at least twice the target
    size, which makes 1024 px -> 64 px about 10x cheaper), a centre square crop, then a Lanczos
    (antialiased) resize. Training data and eval's reference set go through this one function, so
    "the reference is the training data" compares identically prepared images.
    """
    image = open_rgb(path, draft_side=2 * resolution, exif=exif)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    if (width, height) != (side, side):
        image = image.crop((left, top, left + side, top + side))
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)
