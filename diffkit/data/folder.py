"""Finding the images of a data folder and fingerprinting them for the cache key."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from diffkit.errors import DiffkitError

__all__ = ["IMAGE_EXTENSIONS", "ImageFile", "content_key", "find_images", "image_root"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CACHE_DIR_NAME = ".diffkit-cache"
# Marks of a `diffkit scrape` output folder: its images live under images/, nothing else is data.
SCRAPE_MARKERS = ("manifest.sqlite", "metadata.jsonl")


@dataclass(frozen=True)
class ImageFile:
    relative_path: str  # POSIX-style, relative to the data folder
    size: int
    mtime_ns: int
    ctime_ns: int


def image_root(data_dir: Path) -> Path:
    """The folder to scan: ``images/`` of a scrape output, else the folder itself."""
    images = data_dir / "images"
    if images.is_dir() and any((data_dir / marker).exists() for marker in SCRAPE_MARKERS):
        return images
    return data_dir


def find_images(data_dir: Path) -> list[ImageFile]:
    """All image files under ``data_dir`` (recursive, sorted), skipping hidden folders and files.

    Hidden entries are skipped so the cache folder, editor droppings and ``.tmp`` files of atomic
    writes in progress never count as data.
    """
    if not data_dir.exists():
        raise DiffkitError(f"Data folder {data_dir} does not exist; pass --data with a folder of images.")
    if not data_dir.is_dir():
        raise DiffkitError(f"{data_dir} is not a folder; pass --data with a folder of images.")
    root = image_root(data_dir)
    found: list[ImageFile] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in files:
            if name.startswith(".") or not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path = Path(directory, name)
            try:
                stat = path.stat()
            except OSError:  # vanished or dangling link: not part of the data set
                continue
            relative = path.relative_to(data_dir).as_posix()
            found.append(ImageFile(relative, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns))
    found.sort(key=lambda f: f.relative_path)
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
