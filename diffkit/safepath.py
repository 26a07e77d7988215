"""Where a write, move or delete may land: inside the folder the user gave, never through a symlink.

Every command that deletes or moves files names its targets relative to a root folder (a manifest
row, a cluster member, a cache entry). A hostile or damaged source can name ``/etc/x``, ``../x`` or a
path through a symlinked sub-folder; :func:`unsafe_reason` says why such a target must be left alone,
and :func:`contained` returns the target only when it is safe.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

__all__ = ["contained", "is_real_file", "unsafe_reason"]


def unsafe_reason(root: Path, relative: str | os.PathLike[str]) -> str | None:
    """Why ``root / relative`` is not a safe target for a write, move or delete (None when it is).

    Safe means: ``relative`` is relative, has no ``..`` or empty parts, and no existing component
    below ``root`` (the target included) is a symlink. ``root`` itself may be a symlink: the user
    chose it. Components that do not exist yet are fine (a write will create them).
    """
    text = os.fspath(relative)
    if not text or "\x00" in text:
        return "empty path or NUL byte"
    pure = PurePosixPath(text.replace("\\", "/"))
    if pure.is_absolute() or (len(text) > 1 and text[1] == ":"):
        return "absolute path"
    if any(part in ("..", "") for part in pure.parts) or not pure.parts:
        return "climbs out of the folder (..)"
    current = Path(root)
    for part in pure.parts:
        if part == ".":
            continue
        current = current / part
        try:
            mode = os.lstat(current).st_mode
        except FileNotFoundError:
            return None
        except OSError as error:
            return f"cannot inspect ({error.strerror})"
        if stat.S_ISLNK(mode):
            return f"goes through the symlink {current.relative_to(root)}"
    return None


def contained(root: Path, relative: str | os.PathLike[str]) -> Path | None:
    """``root / relative`` when it is a safe target (see :func:`unsafe_reason`), else None."""
    if unsafe_reason(root, relative) is not None:
        return None
    return Path(root) / os.fspath(relative)


def is_real_file(path: Path) -> bool:
    """A regular file that is not a symlink (a symlink to a file is not an image of the folder)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
