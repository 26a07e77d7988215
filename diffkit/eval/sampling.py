"""``diffkit eval --run``: sample N images from a run once, as PNG files in the run folder.

The folder ``RUN/eval-samples-<n>-seed<s>/`` carries a ``samples.json`` written last; a later eval
with the same N, seed, sampler, steps and EMA snapshots reuses the PNGs instead of sampling again.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit.atomic import atomic_write_bytes, atomic_write_text, check_writable_dir
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig
from diffkit.metrics.images import list_images
from diffkit.runs.folder import eval_samples_dir, run_data_dir
from diffkit.runs.snapshots import list_snapshots
from diffkit.sample.generate import generate_images

MARKER = "samples.json"


def run_reference(run: Path) -> Path:
    """The training data folder recorded in the run's config (the default reference)."""
    data = run_data_dir(run)
    if data is None:
        raise DiffkitError(f"{run} records no training data folder; pass --reference DIR")
    return data


def _reusable(folder: Path, wanted: dict[str, object], n: int) -> bool:
    marker = folder / MARKER
    if not marker.is_file():
        return False
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return recorded == wanted and len(list_images(folder)) >= n


def ensure_samples(config: EvalConfig) -> tuple[Path, bool]:
    """(folder with ``config.samples`` PNGs, whether they were reused); samples them when needed."""
    run = config.run
    assert run is not None
    if not run.is_dir():
        raise DiffkitError(f"run folder {run} does not exist")
    folder = eval_samples_dir(run, config.samples, config.seed)
    wanted = {
        "n": config.samples,
        "seed": config.seed,
        "sampler": config.sampler,
        "steps": config.steps,
        "eta": 0.0,
        "snapshots": [path.name for path in list_snapshots(run)],
    }
    if _reusable(folder, wanted, config.samples):
        return folder, True
    # Before sampling: an unwritable run folder is one line now, not a traceback after minutes of work.
    check_writable_dir(folder, "the eval samples")
    images = generate_images(
        run,
        config.samples,
        sampler=config.sampler,
        steps=config.steps,
        eta=0.0,
        seed=config.seed,
        batch_size=config.batch_size,
        device=config.device,
        progress=config.progress,
    )
    _write_samples(folder, np.asarray(images), config.samples)
    atomic_write_text(folder / MARKER, json.dumps(wanted, indent=2) + "\n")
    return folder, False


def _write_samples(folder: Path, images: np.ndarray, n: int) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != n or images.shape[-1] not in (1, 3):
        raise DiffkitError(
            f"generate_images returned {images.dtype} {images.shape}, expected uint8 ({n}, H, W, 3)"
        )
    (folder / MARKER).unlink(missing_ok=True)  # invalid until every PNG of this batch is written
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
        atomic_write_bytes(folder / f"sample-{index:05d}.png", buffer.getvalue(), durable=False)
