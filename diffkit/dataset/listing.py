"""The one image lister: which files of a folder are its images, in one deterministic order.

Rules (the same for dedupe, training data and evaluation):

- Extensions ``.jpg .jpeg .png .webp .bmp``, any case. ``.bmp`` is in because the one decoder reads it
  losslessly and evaluation always listed it: leaving it out would make ``eval`` silently drop images
  it reads today, while letting it in only adds files that ``dedupe`` and ``train`` used to ignore.
  Scrape never writes BMP (it keeps JPEG, PNG and WebP), so its folders are unaffected.
- Hidden files and folders (name starting with ``.``) are skipped: caches, lock files, editor droppings
  and the ``.tmp`` files of atomic writes in progress are never data.
- Symlinks are not images of the folder: a linked file is skipped and reported, a linked folder is not
  entered and reported (ending in ``/``). A link kept as "the original" by dedupe would leave the real
  file deleted, and a linked folder can reach outside the dataset.
- A dedupe quarantine (a folder holding :data:`MOVE_LOG_NAME`) is never listed, wherever it sits: its
  files are the duplicates taken out of the set. The default quarantine ``<dir>-duplicates`` lies
  beside the folder anyway; ``--to`` may put one inside. A folder merely *named* ``quarantine`` is an
  ordinary folder.
- Order: by the path relative to the listed folder (POSIX, ``str`` order), so every command sees the
  same images in the same order. Names that are not UTF-8 are kept as Python holds them (surrogate
  escapes); use ``os.fsencode(rel)`` to get their bytes.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from diffkit.dataset.manifest import IMAGES_DIR, MANIFEST_NAME, METADATA_NAME

__all__ = ["IMAGE_EXTENSIONS", "MOVE_LOG_NAME", "ImageEntry", "ImageScan", "image_root", "scan_images"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# Written by ``diffkit dedupe --action move`` into every quarantine folder it fills (the move log).
MOVE_LOG_NAME = ".diffkit-moves.jsonl"


@dataclass(frozen=True)
class ImageEntry:
    rel: str  # POSIX path relative to the ``base`` folder: the identity used everywhere
    path: Path
    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass
class ImageScan:
    files: list[ImageEntry] = field(default_factory=list)  # real image files, by ``rel``
    symlinks: list[str] = field(default_factory=list)  # skipped links; linked folders end in "/"

    @property
    def paths(self) -> list[Path]:
        return [entry.path for entry in self.files]


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan_images(folder: Path, *, skip: Iterable[Path] = (), base: Path | None = None) -> ImageScan:
    """Every image under ``folder`` (recursive) by the rules above.

    ``skip``: folders not to enter (compared after resolving). ``base``: the folder ``rel`` is relative
    to (default ``folder``; it must contain ``folder``). Paths are ``folder / ...`` as given, not
    resolved. Files that vanish while listing are left out.
    """
    folder = Path(folder)
    base = folder if base is None else Path(base)
    skipped = {Path(p).resolve() for p in skip}
    scan = ImageScan()
    for current, dirnames, filenames in os.walk(folder):  # followlinks=False: linked folders stay closed
        here = Path(current)
        if here != folder and MOVE_LOG_NAME in filenames:  # a dedupe quarantine
            dirnames[:] = []
            continue
        dirnames[:] = _folders_to_enter(base, here, dirnames, skipped, scan.symlinks)
        for name in filenames:
            if not is_image_name(name):
                continue
            path = here / name
            try:
                info = os.lstat(path)
            except OSError:  # vanished since the listing
                continue
            rel = path.relative_to(base).as_posix()
            if stat.S_ISLNK(info.st_mode):
                scan.symlinks.append(rel)
            elif stat.S_ISREG(info.st_mode):
                scan.files.append(ImageEntry(rel, path, info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    scan.files.sort(key=lambda entry: entry.rel)
    scan.symlinks.sort()
    return scan


def _folders_to_enter(
    base: Path, here: Path, dirnames: list[str], skipped: set[Path], symlinks: list[str]
) -> list[str]:
    entered = []
    for name in sorted(dirnames):
        if name.startswith("."):
            continue
        path = here / name
        if path.is_symlink():
            symlinks.append(path.relative_to(base).as_posix() + "/")
        elif not skipped or path.resolve() not in skipped:
            entered.append(name)
    return entered


def image_root(folder: Path) -> Path:
    """The folder whose images are the data: ``images/`` of a ``diffkit scrape`` output (it has a
    manifest or ``metadata.jsonl`` beside it), else ``folder`` itself."""
    images = folder / IMAGES_DIR
    if images.is_dir() and any((folder / name).exists() for name in (MANIFEST_NAME, METADATA_NAME)):
        return images
    return folder
