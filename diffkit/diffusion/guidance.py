"""Classifier-free guidance (Ho & Salimans 2022) for a class-conditional model.

``guided_model(model, label, w, null_label)`` is a ``(x, t) -> output`` callable that any sampler
runs like an unconditional model. Each call is one batched forward of the conditional and the
unconditional (null label) halves, combined as ``out = out_uncond + (1 + w) (out_cond - out_uncond)``.
For eps-prediction that is the paper's formula. For v-prediction the same line is exact too: at a
given (x_t, t), eps = sqrt(1 - abar) x_t + sqrt(abar) v is affine in v with weights (1 + w) and -w
that sum to one, so guiding v guides eps (and x0) identically. ``w = 0`` is the plain conditional
model (one forward of the batch, no unconditional half).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from diffkit.errors import DiffkitError

ConditionalModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guide(cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """``uncond + (1 + w) (cond - uncond)`` in float32 (autocast may hand over bf16 halves)."""
    cond, uncond = cond.float(), uncond.float()
    return uncond + (1.0 + guidance) * (cond - uncond)


def guided_model(
    model: ConditionalModel, label: int, guidance: float, null_label: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if not guidance >= 0:  # also refuses NaN
        raise DiffkitError(f"--guidance must be >= 0 (got {guidance})")

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
        if guidance == 0:
            return model(x, t, labels)
        null = torch.full_like(labels, null_label)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return guide(cond, uncond, guidance)

    return call
