"""What identifies a training cache: the data folder's images, their fingerprint and the decoder version."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from diffkit.dataset.listing import IMAGE_EXTENSIONS, image_root, scan_images
from diffkit.errors import DiffkitError

__all__ = ["CACHE_DIR_NAME", "DECODER_VERSION", "IMAGE_EXTENSIONS", "ImageFile", "content_key", "find_images"]

CACHE_DIR_NAME = ".diffkit-cache"

# Bump when the pixels produced for the same file change (invalidates every cache). Decoding through
# open_rgb left every 8-bit image byte-identical; only 16-bit images (formerly clamped to white) and
# float/32-bit ones (now skipped) changed.
DECODER_VERSION = 2  # 2: 16-bit images scaled (version 1 clamped them to white)


@dataclass(frozen=True)
class ImageFile:
    relative_path: str  # POSIX-style, relative to the data folder
    size: int
    mtime_ns: int
    ctime_ns: int


def find_images(data_dir: Path) -> list[ImageFile]:
    """All image files under ``data_dir`` by the one lister's rules (:mod:`diffkit.dataset.listing`).

    A `diffkit scrape` folder is listed from its ``images/``; paths stay relative to ``data_dir``.
    """
    if not data_dir.exists():
        raise DiffkitError(f"Data folder {data_dir} does not exist; pass --data with a folder of images.")
    if not data_dir.is_dir():
        raise DiffkitError(f"{data_dir} is not a folder; pass --data with a folder of images.")
    scan = scan_images(image_root(data_dir), base=data_dir)
    found = [ImageFile(entry.rel, entry.size, entry.mtime_ns, entry.ctime_ns) for entry in scan.files]
    if not found:
        raise DiffkitError(
            f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {data_dir}; "
            "point --data at a folder of images or a `diffkit scrape` output."
        )
    return found


def content_key(files: list[ImageFile], resolution: int, decoder_version: int) -> str:
    """sha256 over (path, size, mtime, ctime) of every file plus the resolution and decoder version.

    File metadata, not file bytes: hashing 30k JPEGs means reading the whole data set on every run,
    while stat() is instant. It is git's choice for its index: an edit changes mtime; ctime cannot be
    set back by tools that restore mtimes (``touch -d``, ``rsync -t``), so a same-size edit with a
    forged mtime still invalidates. The cost of the choice is an occasional needless rebuild (after
    ``chmod`` or copying the folder), never a stale cache.

    Paths are hashed as their file-system bytes (``os.fsencode``): a name that is not UTF-8 (valid on
    Linux, held by Python as surrogate escapes) hashes like any other, and UTF-8 names keep their key.
    """
    digest = hashlib.sha256(f"diffkit-image-cache v{decoder_version} {resolution}px\n".encode())
    for f in files:
        digest.update(os.fsencode(f.relative_path))
        digest.update(f"\0{f.size}\0{f.mtime_ns}\0{f.ctime_ns}\n".encode())
    return digest.hexdigest()
