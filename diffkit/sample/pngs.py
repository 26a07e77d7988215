"""Samples as PNG files: written batch by batch, after a check that they can fit on the disk.

``diffkit sample`` and ``diffkit eval --run`` hold one batch of images at a time, so their memory does
not grow with N; what does grow, the files, is compared with the free space before any work.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.atomic import atomic_open
from diffkit.errors import DiffkitError

# signature 8, IHDR 25, the framing of one IDAT chunk 12, IEND 12, zlib header and checksum 6
PNG_FIXED_BYTES = 63
# Deliberately low, so that a refusal means the files cannot fit: a sample's PNG is taken to be a quarter
# of its raw pixels, where procedural faces measured about half at 64 px and noisier samples compress less.
PNG_COMPRESSION = 4


def png_bytes(resolution: int, channels: int = 3) -> int:
    """A low estimate of the size of one ``resolution`` px sample written as PNG."""
    return PNG_FIXED_BYTES + resolution * resolution * channels // PNG_COMPRESSION


def _existing(folder: Path) -> Path:
    """``folder``, or its nearest ancestor that exists (the output folder is made after the check)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _size(count: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if count < 1000:
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:,.0f} PB"


def check_disk_space(folder: Path, n: int, resolution: int, hint: str) -> None:
    """Refuse, before any work, ``n`` sample PNGs that cannot fit in the free space of ``folder``'s disk.

    ``hint`` ends the message: what the user can change (``lower --n or ...``).
    """
    needed = n * png_bytes(resolution)
    try:
        free = shutil.disk_usage(_existing(folder)).free
    except OSError:  # unknown free space: the writes themselves report a full disk
        return
    if needed > free:
        raise DiffkitError(
            f"{n:,} PNGs of {resolution} px need at least {_size(needed)}, more than the {_size(free)} "
            f"free on the disk of {folder}; {hint}"
        )


def write_png(path: Path, image: np.ndarray) -> None:
    """One HWC uint8 image, atomically (a file is either complete or absent)."""
    with atomic_open(path, "wb", durable=False) as handle:
        Image.fromarray(image).save(handle, format="PNG")
