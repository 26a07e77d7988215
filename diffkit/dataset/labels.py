"""Class labels of a training folder: subfolder names or a ``label`` column in ``metadata.jsonl``.

The conventions are Hugging Face ``imagefolder``'s:

- ``metadata.jsonl`` beside the images (one JSON object per line, ``file_name`` relative to the folder
  that holds it) with a ``label`` field: that column is the label. A ``diffkit scrape`` output has a
  ``metadata.jsonl`` without labels; one with a ``label`` column added is a labelled data set.
- Otherwise, when every image sits in a subfolder of the data folder (``data/cats/1.png``,
  ``data/dogs/7.png``) and there are at least two of them, the first folder name is the label. A
  scrape output's ``images/<sha[:2]>/`` folders are storage, never labels.

Names map to integers in sorted order (numbers numerically when every label is a number), so the same
data set always gives the same classes. The names are saved in the run config; snapshots carry them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from diffkit.console import printable
from diffkit.dataset.listing import image_root
from diffkit.dataset.manifest import METADATA_NAME
from diffkit.errors import DiffkitError

__all__ = ["LABEL_COLUMN", "DatasetLabels", "LabelsMode", "read_labels"]

LABEL_COLUMN = "label"
# More classes than this from folder names is almost surely not a labelling (e.g. one folder per person
# scraped); training would still work, but the user should say so with a metadata.jsonl.
MAX_FOLDER_CLASSES = 1000


class LabelsMode(str, Enum):
    """``--labels``: ``auto`` reads labels when the data set has them, ``none`` trains unconditionally."""

    auto = "auto"
    none = "none"


@dataclass(frozen=True)
class DatasetLabels:
    """``indices[i]`` is the class of image ``i``; ``names[c]`` the name of class ``c``."""

    names: tuple[str, ...]
    indices: np.ndarray  # int64, one per image
    source: str  # "folders" or "metadata.jsonl"

    def counts(self) -> dict[str, int]:
        counted = np.bincount(self.indices, minlength=len(self.names))
        return {name: int(count) for name, count in zip(self.names, counted, strict=True)}

    def to_dict(self) -> dict[str, object]:
        """What the run config stores (the per-image indices are re-read from the data, not saved)."""
        return {"classes": list(self.names), "source": self.source, "counts": self.counts()}


def _sorted_names(values: set[str]) -> tuple[str, ...]:
    if all(value.lstrip("-").isdigit() for value in values):
        return tuple(sorted(values, key=int))
    return tuple(sorted(values))


def _metadata_labels(data_dir: Path) -> dict[str, str] | None:
    """``file_name -> label`` from the folder's metadata.jsonl, or None when it has no label column."""
    path = data_dir / METADATA_NAME
    if not path.is_file():
        return None
    labels: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DiffkitError(f"cannot read {path} ({exc}); fix it or pass --labels none") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DiffkitError(f"{path} line {number} is not JSON; fix it or pass --labels none") from None
        if not isinstance(row, dict) or LABEL_COLUMN not in row or row[LABEL_COLUMN] is None:
            continue
        value = row[LABEL_COLUMN]
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
            raise DiffkitError(
                f"{path} line {number}: label must be a non-empty string or an integer (got {value!r})"
            )
        if isinstance(row.get("file_name"), str):
            labels[Path(row["file_name"]).as_posix()] = str(value)
    return labels or None


def _folder_labels(files: list[str]) -> list[str] | None:
    tops = [file.split("/", 1) for file in files]
    if any(len(parts) < 2 for parts in tops):
        return None  # an image at the top level: the folders are not a labelling
    names = [parts[0] for parts in tops]
    distinct = set(names)
    if len(distinct) < 2 or len(distinct) > MAX_FOLDER_CLASSES:
        return None
    return names


def read_labels(data_dir: Path, files: list[str], mode: str = "auto") -> DatasetLabels | None:
    """The labels of ``files`` (paths relative to ``data_dir``, as the image cache lists them).

    None for ``mode="none"`` and for an unlabelled folder. A ``label`` column that leaves some of the
    training images without a label is an error (train with ``--labels none``, or label them all).
    """
    if str(getattr(mode, "value", mode)) == LabelsMode.none.value:
        return None
    data_dir = Path(data_dir)
    by_file = _metadata_labels(data_dir)
    if by_file is not None:
        missing = [file for file in files if file not in by_file]
        if missing:
            raise DiffkitError(
                f"{data_dir / METADATA_NAME} has a {LABEL_COLUMN} column but no label for {len(missing)} of "
                f"the {len(files)} images (first: {printable(missing[0])}); label every image or pass "
                "--labels none"
            )
        names, source = [by_file[file] for file in files], METADATA_NAME
    else:
        if image_root(data_dir) != data_dir:
            return None  # a scrape output: images/<xx>/ are storage folders, not classes
        found = _folder_labels(files)
        if found is None:
            return None
        names, source = found, "folders"
    classes = _sorted_names(set(names))
    index = {name: number for number, name in enumerate(classes)}
    return DatasetLabels(classes, np.array([index[name] for name in names], dtype=np.int64), source)
