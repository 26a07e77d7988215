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
from typing import TYPE_CHECKING

from diffkit.errors import DiffkitError

if TYPE_CHECKING:  # torch is imported where a model runs, so configs can check a weight without it
    import torch

ConditionalModel = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]
# Useful weights are small: Ho & Salimans (2022) sweep w up to 4, and Stable Diffusion's default scale
# 7.5 is w = 6.5. The bound leaves room to experiment while keeping (1 + w) (cond - uncond) far from
# float overflow, where an infinite w turned every image black.
MAX_GUIDANCE = 100.0


def guidance_problem(guidance: float) -> str | None:
    """Why ``guidance`` is not a usable weight (finite, 0 to MAX_GUIDANCE), or None when it is."""
    if not 0.0 <= guidance <= MAX_GUIDANCE:  # also refuses NaN and the infinities
        return f"--guidance must be a number from 0 to {MAX_GUIDANCE:g} (got {guidance})"
    return None


def guide(cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """``uncond + (1 + w) (cond - uncond)`` in float32 (autocast may hand over bf16 halves)."""
    cond, uncond = cond.float(), uncond.float()
    return uncond + (1.0 + guidance) * (cond - uncond)


def guided_model(
    model: ConditionalModel, label: int, guidance: float, null_label: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    import torch

    problem = guidance_problem(guidance)
    if problem is not None:
        raise DiffkitError(problem)

    def call(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        labels = torch.full((x.shape[0],), label, dtype=torch.long, device=x.device)
        if guidance == 0:
            return model(x, t, labels)
        null = torch.full_like(labels, null_label)
        both = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
        cond, uncond = both.chunk(2)
        return guide(cond, uncond, guidance)

    return call
