"""TensorBoard event files for a run (``--tensorboard``, on when the ``tensorboard`` package is installed).

stats.jsonl stays the record: every scalar written here is a copy of a stats.jsonl line at the same
step (loss, grad norm, lr, img/s, FID/KID while training), and every image a sample grid as written to
``samples/``. Rank 0 alone writes, into ``<run>/tensorboard/`` (one event file per session).

Resume: the writer is opened with ``purge_step`` = the resume step + 1, which writes TensorBoard's
restart marker (a ``SessionLog.START`` event). A reader drops every point at or after that step from
the earlier files, so points that a killed session wrote past its last saved state (a kill -9 between
two state saves) are hidden, not shown twice, and the resumed session's points replace them: the
curves have no gap and no duplicate in steps; on TensorBoard's wall-time axis the kill shows as a gap.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from rich.markup import escape

from diffkit.console import err_console
from diffkit.runs.folder import TENSORBOARD_DIR

# stats.jsonl key -> TensorBoard tag
SCALARS = {
    "loss": "train/loss",
    "grad_norm": "train/grad_norm",
    "lr": "train/lr",
    "img_per_s": "train/img_per_s",
    "loss_scale": "train/loss_scale",
}
EVAL_SCALARS = {"fid": "eval/fid", "kid": "eval/kid"}
GRID_TAG = "samples/grid"
INSTALL_HINT = "pip install 'diffkit[tensorboard]'"


def available() -> bool:
    """Whether the ``tensorboard`` package is installed (found without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


def wanted(requested: bool | None) -> bool:
    """``--tensorboard`` (True), ``--no-tensorboard`` (False) or not given (None: on when installed)."""
    if requested is False:
        return False
    if available():
        return True
    if requested:  # asked for explicitly: say why there are no event files, and train on
        err_console.print(
            f"[yellow]--tensorboard: the tensorboard package is not installed ({escape(INSTALL_HINT)}); "
            "training without event files (stats.jsonl has every number)[/]",
            highlight=False,
            soft_wrap=True,
        )
    return False


class TensorBoardLog:
    """The run's SummaryWriter, fed the records rank 0 writes to stats.jsonl and the grids."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only when on

        self.path = run_dir / TENSORBOARD_DIR
        purge = resume_step + 1 if resume_step > 0 else None
        self.writer = SummaryWriter(str(self.path), purge_step=purge)

    def stats(self, record: dict[str, Any]) -> None:
        for key, tag in SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["step"])

    def evaluation(self, record: dict[str, Any]) -> None:
        for key, tag in EVAL_SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], record["step"])

    def grid(self, path: Path, step: int) -> None:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(GRID_TAG, pixels, step, dataformats="HWC")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
