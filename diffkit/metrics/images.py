"""Image sets for evaluation: listing, content hashing and one shared preprocessing step.

Generated and reference images go through :func:`diffkit.dataset.decode.square_pixels`, the function
that prepares training data too: faithful 8-bit RGB (16-bit PNGs scaled, not clamped to white;
transparent pixels on white; EXIF orientation applied), a centre square crop, a Lanczos resize to the
generated images' resolution on uint8. So "reference = the training data" compares images prepared
exactly as the model saw them. The arrays go to the engine as uint8 HxWx3. The engines then resize to
299 px themselves (torch-fidelity: TF1 bilinear; clean-fid: PIL bicubic), identically for both sets.

An image that cannot be decoded faithfully (float or 32-bit pixels, a broken file) stops the evaluation
with its path and the reason: leaving it out silently would change N and the numbers.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from diffkit.console import printable
from diffkit.dataset.decode import UndecodableImage, square_pixels
from diffkit.dataset.listing import scan_images
from diffkit.errors import DiffkitError

LOSSY_EXTENSIONS = (".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class ImageSet:
    """The images of one side of the comparison, fixed by content."""

    root: Path
    files: tuple[Path, ...]
    resolution: int
    content_sha256: str
    n_lossy: int
    native_sizes: dict[str, int] = field(default_factory=dict)  # "WxH" -> count

    def __len__(self) -> int:
        return len(self.files)

    @property
    def resized(self) -> bool:
        return any(size != f"{self.resolution}x{self.resolution}" for size in self.native_sizes)


def list_images(folder: Path) -> list[Path]:
    """The images of ``folder`` by the one lister's rules (:mod:`diffkit.dataset.listing`), sorted."""
    if not folder.is_dir():
        raise DiffkitError(f"{printable(folder)} is not a folder")
    return scan_images(folder).paths


def select_images(folder: Path, n: int | None, role: str, hint: str = "") -> list[Path]:
    """The first ``n`` images of ``folder`` (all when ``n`` is None); fewer than asked is an error."""
    files = list_images(folder)
    if n is None:
        if len(files) < 2:
            raise DiffkitError(
                f"{role} folder {printable(folder)} holds {len(files)} image(s); need at least 2"
            )
        return files
    if len(files) < n:
        raise DiffkitError(
            f"{role} folder {printable(folder)} holds {len(files)} image(s) but {n} were asked for"
            + (f"; {hint}" if hint else "")
        )
    return files[:n]


def _unreadable(path: Path, exc: BaseException, size: int | None = None) -> DiffkitError:
    """One line naming the file and why, without PIL's repr of a path or a BytesIO object.

    Every image that cannot be read stops the evaluation (see the module docstring), an empty file too.
    """
    if size is None:
        try:
            size = path.stat().st_size
        except OSError:
            size = None
    if size == 0:
        reason = "the file is empty (0 bytes)"
    elif isinstance(exc, UnidentifiedImageError):
        reason = "not an image PIL can identify" + (f" ({size:,} bytes)" if size else "")
    else:
        reason = str(exc).replace(repr(str(path)), "the file")
    return DiffkitError(f"cannot read image {printable(path)}: {reason}; fix or remove it")


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.DecompressionBombError) as exc:
        raise _unreadable(path, exc) from None


def describe_set(root: Path, files: list[Path], resolution: int) -> ImageSet:
    """Hash names and bytes (the cache key of the set) and record native sizes and lossy formats."""
    digest = hashlib.sha256()
    sizes: Counter[str] = Counter()
    for path in files:
        data = path.read_bytes()
        # fsencode: a name that is not UTF-8 (surrogate-escaped by Python) hashes as its raw bytes
        digest.update(os.fsencode(path.relative_to(root).as_posix()) + b"\0")
        digest.update(hashlib.sha256(data).digest())
        try:
            with Image.open(io.BytesIO(data)) as image:  # header only: no second read, no full decode
                width, height = image.size
        except (OSError, Image.DecompressionBombError) as exc:
            raise _unreadable(path, exc, len(data)) from None
        sizes[f"{width}x{height}"] += 1
    n_lossy = sum(path.suffix.lower() in LOSSY_EXTENSIONS for path in files)
    return ImageSet(root, tuple(files), resolution, digest.hexdigest(), n_lossy, dict(sizes))


def load_images(files: list[Path] | tuple[Path, ...], resolution: int) -> np.ndarray:
    """Load and preprocess ``files`` into one uint8 array (N, resolution, resolution, 3)."""
    out = np.empty((len(files), resolution, resolution, 3), dtype=np.uint8)
    for index, path in enumerate(files):
        try:
            out[index] = square_pixels(path, resolution)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UndecodableImage: ValueError
            if not isinstance(exc, UndecodableImage):
                raise _unreadable(path, exc) from None
            raise DiffkitError(f"cannot evaluate image {printable(path)}: {exc}") from None
    return out


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 255] -> uint8 by rounding (a plain cast floors and darkens by 0.5 on average)."""
    if images.dtype == np.uint8:
        return images
    return np.clip(np.rint(images), 0, 255).astype(np.uint8)
