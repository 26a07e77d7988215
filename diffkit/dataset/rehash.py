"""Hashing files again on another decode path: what migrating a manifest's stored pHashes costs.

A manifest row names its content (sha256) and where that content lies; its pHash and thumbnail were
computed on the decode path the manifest recorded. When the current path differs
(:mod:`diffkit.dataset.phash`), :func:`rehash_files` decodes each file once more, but only after its
bytes are read and found to still have the row's sha256: a file replaced since is never hashed in the
name of content it no longer holds (its row keeps the old value, still marked as old).

Threads, not processes: libjpeg decodes with the GIL released and SHA-256 of a large buffer too, so two
threads use two cores without a process pool's start-up, and a migration runs once per manifest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from diffkit.dataset.phash import phash_image
from diffkit.dataset.verify import open_for_hash_and_thumbnail
from diffkit.safepath import is_real_file

__all__ = ["Rehashed", "rehash_files"]

BATCH = 64  # files per commit: a kill loses at most this much work; each commit is one small transaction


@dataclass(frozen=True)
class Rehashed:
    """One file hashed again: the row's sha256, the new values, and the file's stat as read."""

    sha256: str
    phash: int  # unsigned
    thumb: bytes
    size: int
    mtime_ns: int


def _rehash(task: tuple[str, Path, str]) -> Rehashed | None:
    """Never raises: a missing, replaced or undecodable file gives None (the row keeps its old value)."""
    sha256, path, decode = task
    try:
        if not is_real_file(path):  # gone, or a symlink planted where the file was: not the content
            return None
        stat = path.stat()  # before reading: a write after it changes the mtime dedupe checks
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            return None
        image, thumb, _, _ = open_for_hash_and_thumbnail(data, decode)
        return Rehashed(sha256, phash_image(image), thumb, stat.st_size, stat.st_mtime_ns)
    except Exception:  # unreadable or undecodable now: the old value stays, marked as old
        return None


def rehash_files(
    files: list[tuple[str, Path]],
    decode: str,
    advance: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> Iterator[tuple[list[str], list[Rehashed]]]:
    """For each batch of ``(sha256, path)``: the batch's sha256s and the files hashed again on ``decode``
    (fewer when some could not be). The caller commits each batch before asking for the next."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(files), BATCH):
            batch = files[start : start + BATCH]
            results = list(pool.map(_rehash, [(sha, path, decode) for sha, path in batch]))
            if advance is not None:
                advance(len(batch))
            yield [sha for sha, _ in batch], [r for r in results if r is not None]
