"""Bytes the fake-face site serves: fresh JPEG faces, near-duplicates, a decompression bomb, HTML pages."""

from __future__ import annotations

import functools
import html

import numpy as np
from PIL import Image, ImageEnhance

from diffkit.fakesite.faces import draw_face
from diffkit.fakesite.transforms import encode_image

NEAR_DUP_VARIANTS = ("quality", "resize", "brightness")


def encode_jpeg(face_seed: int, size: int, quality: int) -> bytes:
    """The fresh face for ``face_seed`` as a JFIF JPEG (Pillow writes the JFIF APP0 header)."""
    return encode_image(draw_face(np.random.default_rng(face_seed), size), "JPEG", quality)


def near_duplicate(face_seed: int, size: int, quality: int, params: dict[str, float]) -> tuple[bytes, str]:
    """The face for ``face_seed`` re-encoded at another quality, resized and back, or brightened.

    ``params`` holds ``variant`` (index into NEAR_DUP_VARIANTS), ``quality``, ``scale`` and
    ``brightness`` (a signed fraction); returns the JPEG and a short description of the change.
    """
    face = draw_face(np.random.default_rng(face_seed), size)
    variant = NEAR_DUP_VARIANTS[int(params["variant"])]
    if variant == "quality":
        other = int(params["quality"])
        if other == quality:
            other = max(1, quality - 7)
        return encode_image(face, "JPEG", other), f"quality={other}"
    if variant == "resize":
        scaled = max(8, round(size * params["scale"]))
        face = face.resize((scaled, scaled), Image.Resampling.BICUBIC).resize(
            (size, size), Image.Resampling.BICUBIC)
        return encode_image(face, "JPEG", quality), f"resize={scaled}/{size}"
    factor = 1.0 + params["brightness"]
    brightened = ImageEnhance.Brightness(face).enhance(factor)
    return encode_image(brightened, "JPEG", quality), f"brightness={factor:.3f}"


@functools.lru_cache(maxsize=4)
def bomb_jpeg(side: int = 30000) -> bytes:
    """A tiny (~300 byte) JPEG whose frame header declares ``side`` x ``side`` pixels.

    The header parses (``Image.open`` reports the huge size, or raises ``DecompressionBombError``
    above Pillow's limit) but a decoder that trusts it would allocate side*side*3 bytes.
    """
    if not 1 <= side <= 65535:
        raise ValueError(f"JPEG dimensions are 16-bit: 1..65535, got {side}")
    data = bytearray(encode_image(Image.new("RGB", (16, 16), (128, 128, 128)), "JPEG", 75))
    sof = data.find(b"\xff\xc0")  # baseline frame header: marker, length(2), precision(1), height, width
    if sof < 0:
        raise RuntimeError("Pillow wrote no baseline SOF0 marker")
    data[sof + 5:sof + 7] = side.to_bytes(2, "big")
    data[sof + 7:sof + 9] = side.to_bytes(2, "big")
    return bytes(data)


def landing_page(image_path: str) -> bytes:
    """The HTML page at ``/``: like the real site, it embeds the image rather than being one."""
    src = html.escape(image_path, quote=True)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<title>This Person Does Not Exist (diffkit local fake)</title></head>\n"
        "<body><h1>This person does not exist</h1>"
        f"<img src=\"{src}\" alt=\"a procedurally drawn face\" width=\"512\" height=\"512\">"
        "<p>Procedural faces served by diffkit.fakesite.site for offline testing.</p></body></html>\n"
    ).encode()


def block_page() -> bytes:
    """An HTTP-200 HTML 'blocked' page, the classic silent failure for scrapers."""
    return (
        b"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        b"<title>Attention Required! | Access denied</title></head>\n"
        b"<body><h1>Sorry, you have been blocked</h1>"
        b"<p>This website is using a security service to protect itself from online attacks.</p>"
        b"</body></html>\n"
    )
