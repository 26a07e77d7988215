"""What ``diffkit dedupe`` is asked to do: one frozen, typed config (the CLI only builds this)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from diffkit.console import printable
from diffkit.dataset.listing import MOVE_LOG_NAME
from diffkit.dataset.phash import DECODE_PATHS
from diffkit.dataset.phash import DRAFT_DECODE as DECODE_DRAFT
from diffkit.dataset.phash import FULL_DECODE as DECODE_FULL
from diffkit.dataset.verify import CANDIDATE_BITS, DEFAULT_MIN_SIMILARITY
from diffkit.errors import DiffkitError

__all__ = [
    "ACTIONS",
    "CACHE_NAME",
    "DECODE_DRAFT",
    "DECODE_FULL",
    "DECODE_PATHS",
    "DEFAULT_MIN_SIMILARITY",
    "DEFAULT_THRESHOLDS",
    "HASH_KINDS",
    "MOVE_LOG_NAME",
    "Action",
    "DedupeConfig",
    "HashKind",
    "default_quarantine",
]


class HashKind(str, Enum):
    """The perceptual hashes ``--hash`` offers (the CLI's choices)."""

    phash = "phash"
    dhash = "dhash"
    whash = "whash"
    ahash = "ahash"


class Action(str, Enum):
    """What ``--action`` does with the duplicates (the CLI's choices)."""

    report = "report"
    move = "move"
    delete = "delete"


HASH_KINDS: tuple[str, ...] = tuple(kind.value for kind in HashKind)
ACTIONS: tuple[str, ...] = tuple(action.value for action in Action)

# Default candidate thresholds (Hamming bits of 64). Stage 1 only proposes pairs: every candidate must
# also pass the thumbnail verifier (diffkit.dataset.verify, --min-similarity) before it joins a cluster,
# so the hash threshold can be loose enough for 3 % crops (which move a pHash by up to ~16 bits) without
# the N² flood of similar distinct faces. phash 12: measured on 2k-30k eye-aligned faces with 10 %
# planted copies (reports/bench_dedupe_quality.json). The other kinds keep their hash-only defaults
# (hash-only, 2,000 faces: dhash 3: recall 0.943 / precision 0.976; whash and ahash weak on aligned faces).
# pHash distances are always even (the median splits 64 bits 32/32), so phash 12 and 13 are the same.
DEFAULT_THRESHOLDS: dict[str, int] = {"phash": CANDIDATE_BITS, "dhash": 3, "whash": 1, "ahash": 0}

# Decode paths (DECODE_DRAFT, the default, and DECODE_FULL) are the one pHash's (diffkit.dataset.phash):
# hashes from different paths differ by a few bits, so the path is part of the cache key and every output
# (a cache or manifest written on a retired default is hashed again, never refused).
# MOVE_LOG_NAME (diffkit.dataset.listing) is written into every quarantine folder; a folder holding it is
# never listed as images of a larger tree.
CACHE_NAME = ".diffkit-hashcache.sqlite"


def default_quarantine(directory: Path) -> Path:
    """Beside the folder, not inside it, so a training run over ``directory`` never sees the quarantine.

    Its last component is not resolved: a symlink planted there is refused (see ``DedupeConfig``), never
    followed."""
    directory = directory.resolve()
    return directory.parent / f"{directory.name}-duplicates"


@dataclass(frozen=True)
class DedupeConfig:
    """One dedupe run. The defaults are written only here (the CLI shows them from this class); options a
    user got wrong raise :class:`DiffkitError` naming the fix when the config is made.

    ``hash_kind`` and ``action`` accept a :class:`HashKind`/:class:`Action` or its plain string and are
    stored as the plain string (results, reports and the cache key show ``phash``, not ``HashKind.phash``).
    """

    directory: Path
    hash_kind: str = HashKind.phash.value
    threshold: int | None = None  # None: DEFAULT_THRESHOLDS[hash_kind]
    action: str = Action.report.value
    quarantine: Path | None = None  # None: default_quarantine(directory)
    yes: bool = False
    report_path: Path | None = None  # None: reports/dedupe-<timestamp>.html
    write_report: bool = True
    workers: int | None = None  # None: all cores
    decode: str = DECODE_DRAFT
    use_cache: bool = True
    progress: bool = True
    # Stage 2: a candidate pair joins a cluster only when its thumbnails' similarity reaches this
    # (byte-identical files always do); verify=False is the hash-only test of earlier versions.
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    verify: bool = True
    against: Path | None = None  # a reference folder: report DIR's images that duplicate one of REF's

    @property
    def effective_threshold(self) -> int:
        return DEFAULT_THRESHOLDS[self.hash_kind] if self.threshold is None else int(self.threshold)

    @property
    def effective_workers(self) -> int:
        return max(1, self.workers if self.workers is not None else (os.cpu_count() or 1))

    @property
    def effective_quarantine(self) -> Path:
        # --to is the user's choice (a symlink there is theirs to make); the default is not resolved.
        if self.quarantine is not None:
            return self.quarantine.resolve()
        return default_quarantine(self.directory)

    def __post_init__(self) -> None:
        for name in ("hash_kind", "action"):  # an Enum member becomes its plain value
            value = getattr(self, name)
            if isinstance(value, Enum):
                object.__setattr__(self, name, value.value)
        if not self.directory.exists():
            raise DiffkitError(
                f"folder {self.directory} does not exist; pass the folder that holds the images"
            )
        if not self.directory.is_dir():
            raise DiffkitError(f"{self.directory} is a file, not a folder; pass the folder that holds it")
        if self.hash_kind not in HASH_KINDS:
            raise DiffkitError(f"--hash must be one of {', '.join(HASH_KINDS)}, got {self.hash_kind!r}")
        if not 0 <= self.effective_threshold <= 64:
            raise DiffkitError(f"--threshold must be between 0 and 64 bits, got {self.effective_threshold}")
        if self.action not in ACTIONS:
            raise DiffkitError(f"--action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        if self.action == "delete" and not self.yes:
            raise DiffkitError("--action delete removes files for good; add --yes, or use --action move")
        if self.decode not in DECODE_PATHS:
            raise DiffkitError(f"decode must be one of {', '.join(DECODE_PATHS)}, got {self.decode!r}")
        if not -1.0 <= self.min_similarity <= 1.0:
            raise DiffkitError(f"--min-similarity must be between -1 and 1, got {self.min_similarity}")
        if self.against is not None:
            self._check_against(self.against)
        if self.workers is not None and self.workers < 1:
            raise DiffkitError(f"--workers must be at least 1, got {self.workers}")
        if self.action == "move":
            root = self.directory.resolve()
            quarantine = self.effective_quarantine
            if quarantine == root or quarantine in root.parents:
                raise DiffkitError(
                    f"quarantine folder {printable(quarantine)} contains {printable(root)}; pass --to a"
                    " folder outside it"
                )
            if self.quarantine is None and quarantine.is_symlink():
                raise DiffkitError(
                    f"the default quarantine folder {printable(quarantine)} is a symlink (never followed for"
                    " a move); remove it or pass --to a folder"
                )

    def _check_against(self, against: Path) -> None:
        if not against.is_dir():
            raise DiffkitError(
                f"--against {printable(against)} is not a folder; pass the reference image folder"
            )
        ref, root = against.resolve(), self.directory.resolve()
        if ref == root or ref in root.parents or root in ref.parents:
            raise DiffkitError(
                f"--against {printable(against)} overlaps {printable(self.directory)}; pass two separate"
                " folders"
            )
        if self.action != "report":
            raise DiffkitError(
                "--against only reports the leaks (images of DIR that duplicate REF); run it without --action"
            )
