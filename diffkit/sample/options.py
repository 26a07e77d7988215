"""How to sample a run, resolved once: :class:`SamplingOptions`.

``diffkit sample`` and ``diffkit eval --run`` both build one with :meth:`SamplingOptions.resolve`, the
one place that finds the snapshot, reads its config, checks the label against the run's classes and
fills in the default guidance. :func:`diffkit.sample.generate.generate_batches` takes it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffkit.console import shown
from diffkit.diffusion.names import SAMPLERS
from diffkit.errors import DiffkitError
from diffkit.runs.folder import class_names
from diffkit.runs.snapshots import resolve_snapshot, snapshot_payload
from diffkit.sample.config import DEFAULT_GUIDANCE, SampleConfig, guidance_problems


@dataclass(frozen=True)
class SamplingOptions:
    """One sampling job with every default filled in and every check done: made by :meth:`resolve`."""

    snapshot: Path
    n: int
    resolution: int  # the model's, as its config states it (0 when it does not: loading then refuses it)
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0  # DDIM noise: 0 deterministic, 1 like DDPM
    seed: int = 0
    batch_size: int = 64
    device: str = "auto"
    precision: str = "auto"
    label: str | None = None
    label_index: int | None = None  # the class of ``label``; None: unconditional (the null label)
    guidance: float | None = None  # the weight used: None exactly when unconditional

    @classmethod
    def resolve(
        cls,
        run: Path | None,
        n: int,
        *,
        snapshot: Path | None = None,
        sampler: str = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
        batch_size: int = 64,
        device: str = "auto",
        precision: str = "auto",
        label: str | None = None,
        guidance: float | None = None,
    ) -> SamplingOptions:
        """The run's latest EMA snapshot (or ``snapshot``), checked against ``label`` and ``guidance``."""
        if n < 1 or batch_size < 1 or steps < 1:
            raise DiffkitError(
                "n, batch_size and steps must be at least 1 "
                f"(got n={n}, batch_size={batch_size}, steps={steps})"
            )
        if sampler not in SAMPLERS:
            raise DiffkitError(f"--sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
        problems = guidance_problems(label, guidance)
        if problems:
            raise DiffkitError("; ".join(problems))
        path = resolve_snapshot(run, snapshot)
        payload = snapshot_payload(path)
        label_index = resolve_label(payload, label, guidance)
        weight = None if label_index is None else (DEFAULT_GUIDANCE if guidance is None else guidance)
        return cls(
            path, n, _resolution(payload), sampler, steps, eta, seed, batch_size, device, precision,
            label, label_index, weight,
        )  # fmt: skip

    @classmethod
    def from_config(cls, config: SampleConfig) -> SamplingOptions:
        """The options of ``diffkit sample`` (its config was validated when it was made)."""
        return cls.resolve(
            config.run, config.n, snapshot=config.snapshot, sampler=config.sampler, steps=config.steps,
            eta=config.eta, seed=config.seed, batch_size=config.batch_size, device=config.device,
            precision=config.precision, label=config.label, guidance=config.guidance,
        )  # fmt: skip


def _resolution(payload: dict[str, Any]) -> int:
    value = payload["model"].get("resolution")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def resolve_label(payload: dict[str, Any], label: str | None, guidance: float | None) -> int | None:
    """The class index of ``label`` in the run, with one clear error for every way it can be wrong.

    ``guidance`` has passed :func:`~diffkit.sample.config.guidance_problems` (it comes with a label).
    """
    names = class_names(payload)
    labels = payload.get("labels") or {}
    dropout = labels.get("label_dropout") if isinstance(labels, dict) else None
    if label is None:
        if names and dropout == 0:
            raise DiffkitError(
                "this run was trained with --label-dropout 0, so its unconditional (null) label was never "
                f"trained; pass --label NAME with one of: {', '.join(map(shown, names))}"
            )
        return None
    if not names:
        raise DiffkitError(
            f"--label {shown(label)}: this run was trained without labels; train on labelled data "
            "(one subfolder per class, or a label column in metadata.jsonl) to sample a class"
        )
    if label not in names:
        raise DiffkitError(
            f"--label {shown(label)} is not a class of this run; its classes: {', '.join(map(shown, names))}"
        )
    if dropout == 0 and (guidance is None or guidance > 0):
        raise DiffkitError(
            "this run was trained with --label-dropout 0 (no unconditional model), so it cannot be "
            "guided; pass --guidance 0"
        )
    return names.index(label)
