"""Decode an image folder once into a uint8 cache (numpy memmap) that every later epoch and run reuses.

Layout: ``<cache dir>/images-<res>px-<key16>.u8`` holds the raw (N, H, W, 3) uint8 pixels and
``.json`` beside it the shape, file list, each file's source size, skipped files and full content key.
The ``.u8`` file is written to a temp file and renamed; the JSON is written (also atomically) only
after it, so a JSON that matches is proof of a complete cache and a kill at any moment leaves either
no cache or a good one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.atomic import TMP_SUFFIX, atomic_open, atomic_write_text
from diffkit.console import Bar, printable
from diffkit.dataset.decode import square_pixels
from diffkit.errors import DiffkitError
from diffkit.train.cache_key import CACHE_DIR_NAME, DECODER_VERSION, content_key, find_images

__all__ = ["CACHE_FORMAT", "ImageCache", "default_cache_dirs", "load_image_dataset", "upscaling"]

CACHE_FORMAT = 2  # 2: each file's source size (width, height) in "sizes" (how much training enlarges it)
# Below this many files a thread pool is not worth its (small) overhead.
POOL_THRESHOLD = 64
# Leftover temp files of killed writes older than this are removed (younger ones may be a live writer's).
STALE_TMP_SECONDS = 3600


@dataclass
class ImageCache:
    """Decoded images: ``images[i]`` (H, W, 3 uint8) comes from ``files[i]`` (relative to the data folder)."""

    images: np.ndarray
    files: list[str]
    skipped: list[tuple[str, str]]  # (relative path, reason)
    cache_path: Path
    content_key: str
    resolution: int = 0
    reused: bool = False  # True when loaded from an existing cache (nothing was decoded)
    decode_seconds: float = 0.0
    data_dir: Path = field(default_factory=Path)
    # (width, height) of files[i] as stored (before EXIF rotation, crop and resize)
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def default_cache_dirs(data_dir: Path) -> list[Path]:
    """Where caches are looked for, in order: beside the data, then the user's cache folder.

    A ``.diffkit-cache`` that is a symlink is passed over: it came with the data (a downloaded or
    copied folder), and writing and pruning caches through it would touch files outside the folder.
    """
    beside = data_dir / CACHE_DIR_NAME
    user = Path.home() / ".cache" / "diffkit"
    return [user] if beside.is_symlink() else [beside, user]


def load_image_dataset(
    data_dir: Path,
    resolution: int,
    cache_dir: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> ImageCache:
    """The folder's images at ``resolution`` (center crop, Lanczos), decoded at most once per content.

    Raises ``DiffkitError`` for a missing or empty folder, or when no image in it can be decoded.
    """
    if resolution < 1:
        raise DiffkitError(f"Resolution must be a positive number of pixels (got {resolution}).")
    data_dir = Path(data_dir).expanduser().resolve()
    files = find_images(data_dir)
    key = content_key(files, resolution, DECODER_VERSION)
    candidates = [Path(cache_dir)] if cache_dir is not None else default_cache_dirs(data_dir)

    for directory in candidates:
        cached = _open_existing(directory, key, resolution, data_dir)
        if cached is not None:
            return cached

    directory = next((d for d in candidates if _writable(d)), None)
    if directory is None:
        places = " or ".join(map(str, candidates))
        raise DiffkitError(f"Cannot write an image cache to {places}; pass a writable cache folder.")
    return _build(data_dir, [f.relative_path for f in files], resolution, key, directory, progress, workers)


def _paths(directory: Path, key: str, resolution: int) -> tuple[Path, Path]:
    stem = f"images-{resolution}px-{key[:16]}"
    return directory / f"{stem}.u8", directory / f"{stem}.json"


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _open_existing(directory: Path, key: str, resolution: int, data_dir: Path) -> ImageCache | None:
    data_path, header_path = _paths(directory, key, resolution)
    try:
        header = json.loads(header_path.read_text(encoding="utf-8"))
        shape = tuple(int(n) for n in header["shape"])
        if header["format"] != CACHE_FORMAT or header["content_key"] != key or header["dtype"] != "uint8":
            return None
        if data_path.stat().st_size != int(np.prod(shape)) or len(header["files"]) != shape[0]:
            return None
        sizes = [(int(width), int(height)) for width, height in header["sizes"]]
        if len(sizes) != shape[0]:
            return None
        images = np.memmap(data_path, dtype=np.uint8, mode="r", shape=shape)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: rebuild
    return ImageCache(
        images=images,
        files=list(header["files"]),
        skipped=[(path, reason) for path, reason in header["skipped"]],
        cache_path=data_path,
        content_key=key,
        resolution=resolution,
        reused=True,
        decode_seconds=float(header.get("decode_seconds", 0.0)),
        data_dir=data_dir,
        sizes=sizes,
    )


Decoded = tuple[int, np.ndarray | None, str, tuple[int, int]]


def _decoded(jobs: list[tuple[int, str, int]], workers: int) -> Iterator[Decoded]:
    """Decode in order with a thread pool.

    Threads, not processes: Pillow releases the GIL while it decodes and resizes, so threads scale
    like processes here without their costs (interpreter start-up, pickling pixels back, and the
    ``if __name__ == "__main__"`` trap that spawn-based pools set for scripts and notebooks; fork is
    unsafe once torch/CUDA/OpenMP threads exist). A bounded window of futures keeps memory flat.
    """
    if workers <= 1 or len(jobs) < POOL_THRESHOLD:
        yield from map(decode_or_reason, jobs)
        return
    window = 4 * workers
    with ThreadPoolExecutor(workers, thread_name_prefix="diffkit-decode") as pool:
        pending: deque[Future[Decoded]] = deque()
        try:
            for job in jobs:
                pending.append(pool.submit(decode_or_reason, job))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:  # Ctrl-C or an error: drop queued work instead of decoding it
            for future in pending:
                future.cancel()


def _build(
    data_dir: Path,
    relative_paths: list[str],
    resolution: int,
    key: str,
    directory: Path,
    progress: bool,
    workers: int | None,
) -> ImageCache:
    data_path, header_path = _paths(directory, key, resolution)
    _remove_stale_tmp(directory, data_path.name)
    workers = workers if workers is not None else min(8, len(os.sched_getaffinity(0)))
    jobs = [(i, str(data_dir / rel), resolution) for i, rel in enumerate(relative_paths)]
    kept: list[str] = []
    sizes: list[tuple[int, int]] = []
    skipped: list[tuple[str, str]] = []
    start = time.perf_counter()
    bar = Bar(f"Decoding images {resolution}px", total=len(jobs), enabled=progress)
    with bar, atomic_open(data_path, "wb") as handle:
        for index, pixels, reason, size in _decoded(jobs, workers):
            if pixels is None:
                skipped.append((relative_paths[index], reason))
            else:
                handle.write(pixels.tobytes())
                kept.append(relative_paths[index])
                sizes.append(size)
            bar.update(advance=1, info=f"{len(skipped)} skipped")
        if not kept:
            first = f" (first: {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
            raise DiffkitError(f"None of the {len(jobs)} images under {data_dir} could be decoded{first}.")
    seconds = time.perf_counter() - start
    shape = [len(kept), resolution, resolution, 3]
    header = {
        "format": CACHE_FORMAT,
        "content_key": key,
        "resolution": resolution,
        "dtype": "uint8",
        "shape": shape,
        "data_dir": str(data_dir),
        "decoder_version": DECODER_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "decode_seconds": round(seconds, 3),
        "files": kept,
        "sizes": [list(size) for size in sizes],
        "skipped": [list(item) for item in skipped],
    }
    atomic_write_text(header_path, json.dumps(header))
    _remove_superseded(directory, resolution, data_dir, keep=data_path)
    cache = _open_existing(directory, key, resolution, data_dir)
    if cache is None:  # only if someone deleted it in between
        raise DiffkitError(f"The image cache {data_path} vanished right after it was written; run again.")
    cache.reused = False
    cache.decode_seconds = seconds
    return cache


def _remove_superseded(directory: Path, resolution: int, data_dir: Path, keep: Path) -> None:
    """Delete older caches of the same folder and resolution (each can be hundreds of MB)."""
    for header_path in directory.glob(f"images-{resolution}px-*.json"):
        data_path = header_path.with_suffix(".u8")
        if data_path == keep:
            continue
        try:
            owner = json.loads(header_path.read_text(encoding="utf-8")).get("data_dir")
            # Inside the folder's own cache dir every cache is this folder's (even if it was moved).
            if owner != str(data_dir) and directory != data_dir / CACHE_DIR_NAME:
                continue
        except (OSError, ValueError, AttributeError):
            continue
        header_path.unlink(missing_ok=True)  # header first: a cache without header is never used
        data_path.unlink(missing_ok=True)


def _remove_stale_tmp(directory: Path, name: str) -> None:
    now = time.time()
    for tmp in directory.glob(f".{name}.*{TMP_SUFFIX}"):
        try:
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass


def decode_or_reason(job: tuple[int, str, int]) -> Decoded:
    """Pool worker: ``(index, pixels, "", size)`` or ``(index, None, reason, (0, 0))`` for a file that
    cannot be used; ``size`` is the file's (width, height) as stored (its header, read apart because the
    decode may be a reduced-scale JPEG draft).

    The pixels are :func:`diffkit.dataset.decode.square_pixels` (the decoder dedupe and eval use too):
    centre-cropped, Lanczos-resized to the training resolution, HWC uint8 RGB.
    """
    index, path, resolution = job
    try:
        with Image.open(path) as image:
            size = (int(image.width), int(image.height))
        return index, square_pixels(Path(path), resolution), "", size
    except Exception as error:  # any decoder failure means "skip and list", never a crash
        reason = printable(f"{type(error).__name__}: {error}").strip().splitlines()[0][:200]
        return index, None, reason, (0, 0)


def upscaling(sizes: list[tuple[int, int]], resolution: int) -> dict[str, float | int] | None:
    """How many images training enlarges (shorter side below ``resolution``: the centre square is
    resized up) and by how much (``resolution / shorter side``); None when none is."""
    factors = sorted(resolution / min(size) for size in sizes if min(size) < resolution)
    if not factors:
        return None
    return {
        "count": len(factors),
        "images": len(sizes),
        "min_factor": factors[0],
        "median_factor": float(np.median(factors)),
        "max_factor": factors[-1],
        "smallest_side": min(min(size) for size in sizes),
    }
