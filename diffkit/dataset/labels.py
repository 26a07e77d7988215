"""Class labels of a training folder: subfolder names or a ``label`` column in ``metadata.jsonl``.

The conventions are Hugging Face ``imagefolder``'s:

- ``metadata.jsonl`` beside the images (one JSON object per line, ``file_name`` relative to the folder
  that holds it) with a ``label`` field: that column is the label. A ``diffkit scrape`` output has a
  ``metadata.jsonl`` without labels; one with a ``label`` column added is a labelled data set.
- Otherwise, when every image sits at the same depth below the data folder, in a subfolder
  (``data/cats/1.png``, ``data/dogs/7.png``), and there are at least two folder names, the name of the
  folder that holds the image is its label: ``data/animals/cats/1.png`` is a ``cats``, as in HF's
  ``FolderBasedBuilder`` (``os.path.basename(os.path.dirname(file))``, labels only when every file has
  the same path depth). Images at different depths are not a labelling. A scrape output's
  ``images/<sha[:2]>/`` folders are storage, never labels.

Names map to integers in sorted order (numbers numerically when every label is a number), so the same
data set always gives the same classes. The names are saved in the run config; snapshots carry them.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from diffkit.console import err_console, printable, shown
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


# A label is a number when it is ASCII digits with at most one leading minus: str.isdigit() also accepts
# superscripts and other digits that int() refuses ('²'), and lstrip("-") accepted '--5'.
_NUMBER = re.compile(r"-?[0-9]+")
# Characters that would change how a label's line looks or is read back: line breaks and other controls,
# lone surrogates (not text: no UTF-8 for them) and the bidirectional overrides and isolates.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset({0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)})


def _number_key(value: str) -> tuple[int, int, str]:
    """Sorts decimal strings by value without int() (which refuses more than 4300 digits): by sign, then
    by digit count and digits (reversed for negatives)."""
    digits = value.removeprefix("-").lstrip("0") or "0"
    if value.startswith("-") and digits != "0":
        return (0, -len(digits), "".join(chr(ord("9") - ord(c) + ord("0")) for c in digits))
    return (1, len(digits), digits)


def _sorted_names(values: set[str]) -> tuple[str, ...]:
    # The name itself breaks ties ("05" and "5"), so the order never depends on the set's order.
    if all(_NUMBER.fullmatch(value) for value in values):
        return tuple(sorted(values, key=lambda value: (_number_key(value), value)))
    return tuple(sorted(values))


def _unsafe(character: str) -> bool:
    return unicodedata.category(character) in _UNSAFE_CATEGORIES or ord(character) in _BIDI_CONTROLS


def _escaped(text: str) -> str:
    """``text`` with every unsafe character written as its Python escape: one printable line."""
    return "".join(ascii(c)[1:-1] if _unsafe(c) else c for c in text)


def _check_name(name: str, where: str) -> None:
    """Refuse a label that cannot be printed on one terminal line or saved as UTF-8 text."""
    bad = next((c for c in name if _unsafe(c)), None)
    if bad is not None:
        what = (
            "text that is not UTF-8 (a lone surrogate)"
            if unicodedata.category(bad) == "Cs"
            else f"the control character {ascii(bad)}"
        )
        raise DiffkitError(
            f"{where}: the label '{_escaped(name)}' holds {what}; labels are shown and saved as one line "
            "of text: rename it or pass --labels none"
        )


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
        except ValueError:  # not JSON, or an integer of more digits than Python converts
            raise DiffkitError(f"{path} line {number} is not JSON; fix it or pass --labels none") from None
        if not isinstance(row, dict) or LABEL_COLUMN not in row or row[LABEL_COLUMN] is None:
            continue
        value = row[LABEL_COLUMN]
        if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
            raise DiffkitError(
                f"{path} line {number}: label must be a non-empty string or an integer (got {value!r})"
            )
        if isinstance(row.get("file_name"), str):
            name = str(value)
            _check_name(name, f"{path} line {number}")
            labels[Path(row["file_name"]).as_posix()] = name
    return labels or None


def _folder_labels(data_dir: Path, files: list[str]) -> list[str] | None:
    """Each image's own folder name (HF imagefolder's rule), when every image is at one depth >= 1."""
    depths = {file.count("/") for file in files}
    names = [file.rsplit("/", 2)[-2] if "/" in file else "" for file in files]
    distinct = set(names)
    if len(depths) > 1:
        if len(distinct - {""}) >= 2:  # folders that look like classes, at different depths: say so
            err_console.print(
                f"[yellow]{shown(data_dir)} has images at {len(depths)} different folder depths: its folders "
                "are not read as classes (as in Hugging Face imagefolder); put every image one folder "
                f"deep per class, or add a {LABEL_COLUMN} column to {METADATA_NAME}[/]",
                highlight=False,
            )
        return None
    if 0 in depths or len(distinct) < 2:
        return None  # every image at the top level, or all in one folder: not a labelling
    if len(distinct) > MAX_FOLDER_CLASSES:
        err_console.print(
            f"[yellow]{shown(data_dir)} has {len(distinct)} image folders, more than {MAX_FOLDER_CLASSES}: "
            f"not read as classes (unconditional training); a {LABEL_COLUMN} column in {METADATA_NAME} "
            "makes them classes[/]",
            highlight=False,
        )
        return None
    for name in distinct:
        _check_name(name, f"the class folder in {printable(data_dir)}")
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
        found = _folder_labels(data_dir, files)
        if found is None:
            return None
        names, source = found, "folders"
    classes = _sorted_names(set(names))
    index = {name: number for number, name in enumerate(classes)}
    return DatasetLabels(classes, np.array([index[name] for name in names], dtype=np.int64), source)
