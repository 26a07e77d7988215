"""``diffkit phema``: ``posthoc_snapshot(PhemaConfig) -> PhemaResult``.

Lists the run's stored post-hoc EMA profiles (``phema/pema-<sigma_rel>-<nimg>.safetensors``), picks the
last stored time at or before ``--kimg``, combines the profiles taken up to then into the one of
``--sigma-rel`` (:func:`diffkit.train.phema.reconstruct`) and writes it as an EMA snapshot that sample,
eval and export take with ``--snapshot``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from diffkit.errors import DiffkitError
from diffkit.phema.config import PhemaConfig
from diffkit.phema.result import PhemaResult
from diffkit.runs.folder import PHEMA_DIR, list_phema
from diffkit.runs.snapshots import load_snapshot, save_ema_snapshot, snapshot_payload, snapshot_step
from diffkit.train.phema import StoredProfile, reconstruct


def stored_profiles(run: Path) -> list[StoredProfile]:
    """The run's stored profiles with the step each was taken after (from its metadata)."""
    if not run.is_dir():
        raise DiffkitError(f"run folder {run} not found; pass a training run folder such as runs/00000-small")
    stored = []
    for sigma_rel, nimg, path in list_phema(run):
        step = snapshot_step(path)
        if step is None:
            raise DiffkitError(f"{path} has no step in its metadata; it is damaged or not a diffkit snapshot")
        stored.append(StoredProfile(path, sigma_rel, step, nimg))
    if not stored:
        raise DiffkitError(
            f"{run} has no post-hoc EMA profiles ({PHEMA_DIR}/pema-*.safetensors); train with "
            "--phema-every-kimg K to keep them"
        )
    return stored


def _load(path: Path) -> dict[str, torch.Tensor]:
    # every profile checked as sampling checks a snapshot (config, names, shapes, finite values), so a
    # damaged or foreign file is a one-line error, not a failed tensor sum
    return load_snapshot(path, torch.device("cpu"))[0].state_dict()


def posthoc_snapshot(config: PhemaConfig) -> PhemaResult:
    """Write the EMA of ``config.sigma_rel`` at a stored time as an EMA snapshot (``diffkit phema``)."""
    run = config.run
    stored = stored_profiles(run)
    limit = math.inf if config.kimg is None else config.kimg * 1000
    times = sorted({(p.nimg, p.step) for p in stored if p.nimg <= limit})
    if not times:
        raise DiffkitError(f"no post-hoc EMA profile at or before {config.kimg:g} kimg in {run}")
    nimg, step = times[-1]
    result = reconstruct(stored, config.sigma_rel, step, _load)
    payload = snapshot_payload(result.used[-1].path)
    out = config.out or run / PHEMA_DIR / f"posthoc-{config.sigma_rel:.3f}-{nimg:09d}.safetensors"
    extra = {"sigma_rel": str(config.sigma_rel), "posthoc": "1"}
    save_ema_snapshot(run, result.state, nimg, step, payload, path=out, extra=extra)
    sources = [
        {"file": p.path.name, "sigma_rel": p.sigma_rel, "step": p.step, "coefficient": round(c, 6)}
        for p, c in zip(result.used, result.fit.coefficients.tolist(), strict=True)
    ]
    return PhemaResult(
        run, out, config.sigma_rel, result.gamma, step, nimg, result.fit.relative_error, sources
    )
