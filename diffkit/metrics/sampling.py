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

from diffkit.atomic import atomic_write_bytes, atomic_write_text
from diffkit.errors import DiffkitError
from diffkit.metrics.config import EvalConfig
from diffkit.metrics.images import list_images

MARKER = "samples.json"


def samples_dir(run: Path, n: int, seed: int) -> Path:
    return run / f"eval-samples-{n}-seed{seed}"


def _snapshots(run: Path) -> list[str]:
    return sorted(path.name for path in run.glob("ema-*.safetensors"))


def _sample_api():
    try:
        from diffkit.sample import generate_images, load_run_config
    except ImportError as exc:
        raise DiffkitError(
            f"--run needs diffkit.sample ({exc}); sample images yourself and pass "
            "--generated DIR --reference DIR"
        ) from None
    return generate_images, load_run_config


def run_reference(run: Path) -> Path:
    """The training data folder recorded in the run's config (the default reference)."""
    _, load_run_config = _sample_api()
    data = getattr(load_run_config(run), "data", None)
    if data is None:
        raise DiffkitError(f"{run} records no training data folder; pass --reference DIR")
    return Path(data)


def ensure_samples(config: EvalConfig) -> tuple[Path, bool]:
    """(folder with ``config.samples`` PNGs, whether they were reused); samples them when needed."""
    run = config.run
    assert run is not None
    if not run.is_dir():
        raise DiffkitError(f"run folder {run} does not exist")
    folder = samples_dir(run, config.samples, config.seed)
    wanted = {
        "n": config.samples,
        "seed": config.seed,
        "sampler": config.sampler,
        "steps": config.steps,
        "eta": 0.0,
        "snapshots": _snapshots(run),
    }
    marker = folder / MARKER
    if marker.is_file():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError):
            recorded = None
        if recorded == wanted and len(list_images(folder)) >= config.samples:
            return folder, True

    generate_images, _ = _sample_api()
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
    images = np.asarray(images)
    if (
        images.dtype != np.uint8
        or images.ndim != 4
        or images.shape[0] != config.samples
        or images.shape[-1] not in (1, 3)
    ):
        raise DiffkitError(
            f"generate_images returned {images.dtype} {images.shape}, expected uint8 "
            f"({config.samples}, H, W, 3)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)  # invalid until every PNG of this batch is written
    for index, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
        atomic_write_bytes(folder / f"sample-{index:05d}.png", buffer.getvalue(), durable=False)
    atomic_write_text(marker, json.dumps(wanted, indent=2) + "\n")
    return folder, False
