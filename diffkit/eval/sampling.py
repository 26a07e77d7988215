"""``diffkit eval --run``: sample N images from a run once, as PNG files in the run folder.

It samples through :mod:`diffkit.sample` with the same :class:`SamplingOptions` as ``diffkit sample``
(unconditional, eta = 0), one batch in memory at a time.

The folder ``RUN/eval-samples-<n>-seed<s>/`` carries a ``samples.json`` written last; a later eval
with the same N, seed, sampler, steps and EMA snapshots reuses the PNGs instead of sampling again.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffkit.atomic import atomic_write_text, check_writable_dir
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig
from diffkit.metrics.images import list_images
from diffkit.runs.folder import eval_samples_dir, run_data_dir
from diffkit.runs.snapshots import list_snapshots
from diffkit.sample.generate import generate_batches
from diffkit.sample.options import SamplingOptions
from diffkit.sample.pngs import check_disk_space, write_png
from diffkit.sample.provenance import clear_provenance, write_provenance

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
    options = SamplingOptions.resolve(
        run, config.samples, sampler=config.sampler, steps=config.steps, eta=0.0, seed=config.seed,
        batch_size=config.batch_size, device=config.device,
    )  # fmt: skip
    # Before sampling: a full disk or an unwritable run folder is one line now, not after minutes of work.
    check_disk_space(folder, options.n, options.resolution, "lower --samples or free space in the run folder")
    check_writable_dir(folder, "the eval samples")
    (folder / MARKER).unlink(missing_ok=True)  # invalid until every PNG of this sampling is written
    clear_provenance(folder)  # no record may describe PNGs that are being replaced
    index = 0
    for batch in generate_batches(options, progress=config.progress):  # one batch in memory at a time
        for image in batch:
            write_png(folder / f"sample-{index:05d}.png", image)
            index += 1
    write_provenance(folder, options, "eval --run")  # which snapshot, sampler and seed made these images
    atomic_write_text(folder / MARKER, json.dumps(wanted, indent=2) + "\n")
    return folder, False
