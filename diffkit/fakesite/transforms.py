"""Near-duplicate copies of an image, as a scraper meets them: re-encoded, resized, brightened, cropped.

Shared by the dedupe tests and ``benchmarks/bench_dedupe.py`` so that the figures in the README come
from one definition of "a planted duplicate". The random draws per kind are fixed (same generator state,
same bytes), so measured recall and precision are reproducible.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageEnhance

__all__ = ["TRANSFORMS", "encode_image", "transformed_copy"]

TRANSFORMS = ("jpeg", "resize", "brightness", "crop")
_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}


def encode_image(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> bytes:
    """``image`` as file bytes (JPEG needs RGB; ``quality`` is ignored by PNG)."""
    out = io.BytesIO()
    if fmt == "JPEG":
        image = image.convert("RGB")
    image.save(out, fmt, quality=quality)
    return out.getvalue()


def transformed_copy(image: Image.Image, kind: str, rng: np.random.Generator, fmt: str = "JPEG"
                     ) -> tuple[bytes, str]:
    """A near-duplicate of ``image`` and its file extension.

    ``jpeg``: re-encoded as JPEG at quality 50..95 (``fmt`` is ignored); ``resize``: scaled by 0.5x..2x;
    ``brightness``: brightened or darkened by up to 10 %; ``crop``: up to 3 % of the width and of the
    height removed, split randomly between the sides. All but ``jpeg`` are saved as ``fmt`` (quality 90).
    """
    if kind == "jpeg":
        return encode_image(image, "JPEG", int(rng.integers(50, 96))), "jpg"
    if kind == "resize":
        factor = float(rng.uniform(0.5, 2.0))
        image = image.resize((round(image.width * factor), round(image.height * factor)),
                             Image.Resampling.BICUBIC)
    elif kind == "brightness":
        image = ImageEnhance.Brightness(image).enhance(float(rng.uniform(0.9, 1.1)))
    elif kind == "crop":
        dx, dy = (round(s * float(rng.uniform(0.0, 0.03))) for s in image.size)
        left, top = int(rng.integers(0, dx + 1)), int(rng.integers(0, dy + 1))
        image = image.crop((left, top, image.width - (dx - left), image.height - (dy - top)))
    else:
        raise ValueError(f"unknown transform {kind!r}; known: {', '.join(TRANSFORMS)}")
    return encode_image(image, fmt), _EXTENSIONS[fmt]
