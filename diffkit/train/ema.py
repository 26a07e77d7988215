"""Exponential moving average of the weights with a half-life in images and a ramp-up (NVlabs/edm).

A fixed per-step decay of 0.9999 has a half-life of ~7k steps, so a short run samples from weights
that are still mostly the random init (diffusers issue #1772: pure noise after 100 epochs). Here the
half-life is given in images and, with a ramp-up, never exceeds ``rampup * images seen``: early in the
run the EMA follows the model closely, later it averages over ``halflife_kimg``.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


def ema_beta(batch_size: int, nimg: int, halflife_kimg: float, rampup: float | None) -> float:
    """Per-step decay for a step of ``batch_size`` images taken after ``nimg`` images."""
    halflife_nimg = halflife_kimg * 1000.0
    if rampup is not None:
        halflife_nimg = min(halflife_nimg, nimg * rampup)
    return 0.5 ** (batch_size / max(halflife_nimg, 1e-8))


@torch.no_grad()
def blend_into(average: nn.Module, model: nn.Module, weight: float) -> None:
    """``average <- average + weight (model - average)`` for every parameter (one foreach lerp); buffers
    are copied. The one update that both this EMA and the post-hoc EMA profiles (phema.py) apply."""
    torch._foreach_lerp_(list(average.parameters()), [p.detach() for p in model.parameters()], weight)
    for average_buffer, buffer in zip(average.buffers(), model.buffers(), strict=True):
        average_buffer.copy_(buffer)


class EMA:
    """Holds an eval-mode copy of the model; ``update`` blends the live weights in after each step."""

    def __init__(self, model: nn.Module, halflife_kimg: float, rampup: float | None) -> None:
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.halflife_kimg = halflife_kimg
        self.rampup = rampup

    @torch.no_grad()
    def update(self, model: nn.Module, batch_size: int, nimg: int) -> float:
        beta = ema_beta(batch_size, nimg, self.halflife_kimg, self.rampup)
        blend_into(self.model, model, 1.0 - beta)
        return beta

    def state_dict(self) -> dict[str, Any]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state)
