"""The second stage of near-duplicate detection: a colour thumbnail and the similarity of two of them.

Aligned faces hash alike, so a 64-bit hash alone cannot tell a near copy from a similar-looking distinct
face once a folder holds tens of thousands of them (false pairs grow as N²), and a 3 % crop can move a
pHash by up to 18 bits. Dedupe and scrape therefore take *candidates* from the hash at a loose threshold
and keep a pair only when the pictures' 16 x 16 YCbCr thumbnails correlate: the mean over the channels
of the Pearson correlation of that channel's 256 pixels.

Why this verifier (measured on procedural eye-aligned faces, ``benchmarks/bench_dedupe_quality.py``):
greyscale thumbnails do not separate the two (distinct faces up to 0.97-0.98, crops down to 0.90 at
32 px), because aligned faces share their layout; colour does (skin, hair and background colours
differ between distinct faces), and 16 px is coarse enough that a 3 % crop moves the picture by half a
pixel. Correlation ignores brightness and contrast changes (each channel is centred and scaled).
A channel that is flat in either thumbnail (a greyscale picture's chroma) carries no evidence and is
left out; two pictures flat in every channel compare by their mean difference.

JPEGs on a draft path decode once, as YCbCr: the Y plane is exactly the greyscale picture libjpeg
gives for mode ``L`` (the pHash input, so hash values are unchanged) and the chroma planes feed the
thumbnail. At the default 1/8 DCT scale the chroma costs entropy decoding that a greyscale decode does
too, plus an upsampling of 64 x 64 chroma pixels (``benchmarks/bench_dedupe.py`` measures both decodes).
A thumbnail, like a hash, belongs to the decode path it came from.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from diffkit.dataset.decode import to_8bit
from diffkit.dataset.phash import DRAFT_DECODE, draft_size

__all__ = [
    "BOUND_MARGIN",
    "CANDIDATE_BITS",
    "DEFAULT_MIN_SIMILARITY",
    "HASH_ONLY_BITS",
    "THUMB_BYTES",
    "THUMB_SIDE",
    "BoundFeatures",
    "bound_features",
    "open_for_hash_and_thumbnail",
    "pair_similarities",
    "similarity",
    "similarities",
    "thumbnail",
    "upper_bounds",
]

THUMB_SIDE = 16
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3  # uint8 YCbCr, pixel-interleaved
# Calibrated on eye-aligned procedural faces (reports/bench_dedupe_quality.json): near copies (re-encode,
# resize, brightness, crop <= 3 %) score >= 0.96, distinct faces <= 0.92; 0.94 sits in the gap.
DEFAULT_MIN_SIMILARITY = 0.94
# Stage 1 for the 64-bit pHash: candidates within this many bits (crops <= 3 % reach ~16 bits, recall
# >= 0.97 at 12) are verified; dedupe's default --threshold and scrape's inline check both use it.
CANDIDATE_BITS = 12
# When a kept image's thumbnail cannot be had (its file is gone), the hash alone decides, at the strict
# hash-only threshold of earlier versions.
HASH_ONLY_BITS = 4
_FLAT_STD = 1.5  # grey levels: below this a channel is flat (no structure to correlate)
_CHUNK = 1024  # pairs per vectorised step: two 1024 x 768 float32 gathers (6 MB) stay in cache, 3x faster
# than 8192 (measured)
_BOUND_CHUNK = 16384  # pairs per step of the bound: 36 floats per channel, 7x less to gather than 256


def thumbnail(image: Image.Image) -> bytes:
    """16 x 16 YCbCr thumbnail (768 bytes) of a decoded 8-bit image, by box filter (area average)."""
    colour = image if image.mode == "YCbCr" else image.convert("RGB").convert("YCbCr")
    small = colour.resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return small.tobytes()


def open_for_hash_and_thumbnail(
    source: bytes | Path | str, decode: str = DRAFT_DECODE
) -> tuple[Image.Image, bytes, int, int]:
    """Decode once; return the image to hash (as :func:`diffkit.dataset.phash.open_for_hash` would give
    it, so every hash value is unchanged), its thumbnail, and the full-resolution width and height."""
    size = draft_size(decode)
    image = Image.open(io.BytesIO(source)) if isinstance(source, bytes) else Image.open(source)
    width, height = image.size
    if size is not None and image.format == "JPEG" and image.mode in ("RGB", "YCbCr"):
        image.draft("YCbCr", size)  # same DCT scale as draft("L"); Y is libjpeg's greyscale
        image.load()
        if image.mode == "YCbCr":
            return image.getchannel("Y"), thumbnail(image), width, height
        return to_8bit(image), thumbnail(image), width, height
    if size is not None and image.format == "JPEG":
        image.draft("L", size)  # greyscale or CMYK JPEGs: as open_for_hash decodes them
    image.load()
    image = to_8bit(image)
    return image, thumbnail(image), width, height


def _standardised(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, 768) uint8 -> per-channel centred unit vectors (k, 3, 256), flat mask (k, 3), means (k, 3)."""
    pixels = thumbs.reshape(-1, THUMB_SIDE * THUMB_SIDE, 3).transpose(0, 2, 1).astype(np.float32)
    means = pixels.mean(axis=2)
    centred = pixels - means[:, :, None]
    norms = np.sqrt((centred * centred).sum(axis=2))
    flat = norms < _FLAT_STD * np.sqrt(THUMB_SIDE * THUMB_SIDE)
    return centred / np.maximum(norms, 1e-6)[:, :, None], flat, means


def pair_similarities(
    thumbs: np.ndarray,
    pairs_i: np.ndarray,
    pairs_j: np.ndarray,
    at_least: float | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Similarity of the pairs (pairs_i[k], pairs_j[k]) of rows of one (n, 768) thumbnail array: each
    thumbnail is standardised once, then every pair costs one 768-long dot product.

    ``at_least``: only pairs that may reach it are computed; the others get ``-inf``. Which cannot is
    proven by an upper bound (:func:`upper_bounds`) that costs a seventh of the exact product: aligned
    faces give a scrape folder millions of candidates, most far below any threshold. Every value
    computed is the same float as without ``at_least``. Chunks of pairs run on ``workers`` threads
    (default: all cores; numpy's gathers and products release the GIL), each writing its own rows."""
    unit, flat, means = _standardised(np.asarray(thumbs, dtype=np.uint8).reshape(-1, THUMB_BYTES))
    pairs_i, pairs_j = np.asarray(pairs_i, dtype=np.int64), np.asarray(pairs_j, dtype=np.int64)
    out = np.full(len(pairs_i), -np.inf, dtype=np.float32)
    todo = np.arange(len(pairs_i))
    workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if at_least is not None and len(pairs_i):
        features = _bound_features(unit, flat, means)
        bounds = np.empty(len(pairs_i), dtype=np.float32)

        def bound(rows: slice) -> None:
            bounds[rows] = upper_bounds(features.take(pairs_i[rows]), features.take(pairs_j[rows]))

        _in_chunks(bound, len(pairs_i), _BOUND_CHUNK, workers)
        todo = np.flatnonzero(bounds >= at_least - BOUND_MARGIN)

    def compute(chunk: slice) -> None:
        rows = todo[chunk]
        a, b = pairs_i[rows], pairs_j[rows]
        out[rows] = _combine(
            np.matmul(unit[a][:, :, None, :], unit[b][:, :, :, None])[:, :, 0, 0],
            flat[a] | flat[b],
            means[a],
            means[b],
        )

    _in_chunks(compute, todo.size, _CHUNK, workers)
    return out


def _in_chunks(work: Callable[[slice], None], n: int, chunk: int, workers: int) -> None:
    """``work(slice)`` over 0..n in chunks, on ``workers`` threads when there is more than one chunk."""
    chunks = [slice(start, start + chunk) for start in range(0, n, chunk)]
    if workers == 1 or len(chunks) < 2:
        for piece in chunks:
            work(piece)
        return
    with ThreadPoolExecutor(min(workers, len(chunks))) as pool:
        list(pool.map(work, chunks))


def _dct_basis(side: int, keep: int) -> np.ndarray:
    """(side * side, keep * keep) orthonormal columns: the lowest ``keep`` x ``keep`` frequencies of the
    2-D DCT-II on a side x side grid (row-major pixels, as a thumbnail channel is laid out)."""
    n = np.arange(side)
    k = np.arange(keep)[:, None]
    one_d = np.cos(np.pi * (n[None, :] + 0.5) * k / side) * np.sqrt(2.0 / side)
    one_d[0] /= np.sqrt(2.0)
    return np.einsum("ux,vy->xyuv", one_d, one_d).reshape(side * side, keep * keep).astype(np.float32)


# Thumbnails are smooth (box-filtered faces), so the lowest 6 x 6 of 256 frequencies hold most of each
# channel's energy and the bound is tight; the margin covers float32 rounding (about 1e-6) many times
# over, so no pair that reaches a threshold is ever skipped.
_BOUND_BASIS = _dct_basis(THUMB_SIDE, 6)
BOUND_MARGIN = 1e-3


class BoundFeatures(NamedTuple):
    """What :func:`upper_bounds` needs of each thumbnail (a few floats, not its 768 pixels)."""

    low: np.ndarray  # (n, 3, 36) float32: each channel's unit vector on the lowest frequencies
    rest: np.ndarray  # (n, 3): the length of the remainder, sqrt(1 - |low|^2)
    flat: np.ndarray  # (n, 3) bool, as in the similarity
    means: np.ndarray  # (n, 3)

    def take(self, rows: np.ndarray) -> BoundFeatures:
        return BoundFeatures(self.low[rows], self.rest[rows], self.flat[rows], self.means[rows])


def _bound_features(unit: np.ndarray, flat: np.ndarray, means: np.ndarray) -> BoundFeatures:
    low = unit @ _BOUND_BASIS
    rest = np.sqrt(np.maximum(1.0 - (low * low).sum(axis=2), 0.0))
    return BoundFeatures(low, rest, flat, means)


def bound_features(thumbs: np.ndarray) -> BoundFeatures:
    """:class:`BoundFeatures` of (k, 768) uint8 thumbnails."""
    return _bound_features(*_standardised(np.asarray(thumbs, dtype=np.uint8).reshape(-1, THUMB_BYTES)))


def upper_bounds(a: BoundFeatures, b: BoundFeatures) -> np.ndarray:
    """An upper bound of the similarity of row k of ``a`` and row k of ``b`` (one row of ``a`` is set
    against every row of ``b``). Split each channel's unit vector into its projection p on the low
    frequencies and the rest, of length r; by Cauchy-Schwarz on the rest, u . v <= p_u . p_v + r_u r_v,
    and the mean of the channels' bounds bounds their mean. Pairs flat in every channel compare by
    colour, exactly as the similarity does."""
    bound = (a.low * b.low).sum(axis=2) + a.rest * b.rest
    return _combine(bound, a.flat | b.flat, a.means, b.means)


def _combine(correlation: np.ndarray, flat: np.ndarray, mean_a: np.ndarray, mean_b: np.ndarray) -> np.ndarray:
    usable = ~flat
    n_usable = usable.sum(axis=1)
    mean_corr = (correlation * usable).sum(axis=1) / np.maximum(n_usable, 1)
    # Flat in every channel (solid colour): equal when the colours are (nearly) equal.
    by_colour = 1.0 - np.abs(mean_a - mean_b).max(axis=1) / 32.0
    return np.where(n_usable > 0, mean_corr, np.clip(by_colour, -1.0, 1.0))


def similarities(thumbs_a: np.ndarray, thumbs_b: np.ndarray) -> np.ndarray:
    """Similarity of each row pair of two (k, 768) uint8 thumbnail arrays, as float32 in [-1, 1]."""
    thumbs_a = np.asarray(thumbs_a, dtype=np.uint8).reshape(-1, THUMB_BYTES)
    thumbs_b = np.asarray(thumbs_b, dtype=np.uint8).reshape(-1, THUMB_BYTES)
    out = np.empty(thumbs_a.shape[0], dtype=np.float32)
    for start in range(0, thumbs_a.shape[0], _CHUNK):
        stop = start + _CHUNK
        unit_a, flat_a, mean_a = _standardised(thumbs_a[start:stop])
        unit_b, flat_b, mean_b = _standardised(thumbs_b[start:stop])
        out[start:stop] = _combine((unit_a * unit_b).sum(axis=2), flat_a | flat_b, mean_a, mean_b)
    return out


def similarity(thumb_a: bytes, thumb_b: bytes) -> float:
    """Similarity of two thumbnails (see :func:`similarities`)."""
    a = np.frombuffer(thumb_a, dtype=np.uint8)[None, :]
    b = np.frombuffer(thumb_b, dtype=np.uint8)[None, :]
    return float(similarities(a, b)[0])
