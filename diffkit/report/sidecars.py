"""Reading the reports of a folder back: every ``.json`` sidecar with the ``diffkit.report/1`` schema.

The index and the run pages are built from these alone; a sidecar names the dataset and the run it
belongs to in its ``data`` (each command records its own folders), which links the stages of one run.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = "diffkit.report/1"

# Where each command's sidecar names its dataset folder and its run folder (first match wins).
DATASET_KEYS: dict[str, list[tuple[str, ...]]] = {
    "scrape": [("data", "out")],
    "dedupe": [("data", "directory")],
    "train": [("data", "config", "train", "data")],
    "eval": [("data", "reference")],
}
RUN_KEYS: dict[str, list[tuple[str, ...]]] = {
    "train": [("data", "config", "train", "out"), ("summary", "run")],
    "sample": [("data", "result", "run"), ("data", "run")],
    "eval": [("data", "config", "run")],
}
# A command not listed above (a future one) is linked by these, when its data has them.
GENERIC_DATASET_KEYS = [("data", "dataset"), ("data", "config", "data")]
GENERIC_RUN_KEYS = [("data", "run"), ("data", "config", "run"), ("summary", "run")]
# A snapshot or a samples folder lives inside its run folder.
RUN_CHILD_KEYS = [("data", "result", "snapshot"), ("summary", "snapshot")]


@dataclass(frozen=True)
class Sidecar:
    """One report found in the folder: its sidecar's content and the HTML page beside it."""

    json_path: Path
    html_path: Path
    content: dict[str, Any]

    @property
    def command(self) -> str:
        return str(self.content.get("command", ""))

    @property
    def created(self) -> str:
        return str(self.content.get("created", ""))

    @property
    def title(self) -> str:
        return str(self.content.get("title", self.json_path.stem))

    @property
    def summary(self) -> dict[str, Any]:
        summary = self.content.get("summary")
        return summary if isinstance(summary, dict) else {}

    @property
    def headline(self) -> str:
        return str(self.content.get("headline") or "")


def load_sidecars(reports_dir: Path) -> list[Sidecar]:
    """Every readable report sidecar whose HTML page lives in ``reports_dir`` (no symlinks), newest first."""
    found = []
    for json_path in sorted(reports_dir.glob("*.json")):
        html_path = json_path.with_suffix(".html")
        if json_path.is_symlink() or html_path.is_symlink() or not html_path.is_file():
            continue  # only pages that live in this folder are listed
        try:
            content = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(content, dict) and content.get("schema") == SCHEMA:
            found.append(Sidecar(json_path, html_path, content))
    found.sort(key=lambda sidecar: sidecar.created, reverse=True)
    return found


def _lookup(content: dict[str, Any], path: tuple[str, ...]) -> str | None:
    value: Any = content
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) and value else None


def _first(content: dict[str, Any], paths: list[tuple[str, ...]]) -> str | None:
    return next((found for path in paths if (found := _lookup(content, path)) is not None), None)


def folder_key(folder: str, base: Path) -> str:
    """A folder as one comparable string: relative paths are taken from ``base`` (where the command ran)."""
    path = Path(folder)
    return os.path.normpath(path if path.is_absolute() else base / path)


def dataset_of(sidecar: Sidecar) -> str | None:
    paths = DATASET_KEYS.get(sidecar.command, GENERIC_DATASET_KEYS)
    return _first(sidecar.content, paths)


def run_of(sidecar: Sidecar) -> str | None:
    found = _first(sidecar.content, RUN_KEYS.get(sidecar.command, GENERIC_RUN_KEYS))
    if found is None and sidecar.command not in ("scrape", "dedupe"):
        child = _first(sidecar.content, RUN_CHILD_KEYS)
        found = str(Path(child).parent) if child else None
    return found
