"""Model size and cost: parameter count and forward FLOPs per image."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from diffkit.models.unet import UNet

__all__ = ["count_parameters", "flops_per_image"]


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (what the optimiser updates; an EMA copy has the same count)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_image(model: UNet, resolution: int) -> int:
    """Forward FLOPs for one image (1 multiply-accumulate = 2 FLOPs), counted by FlopCounterMode.

    Counts convolutions, matmuls and attention (the work that matters); norms and activations are
    left out, as is customary. The count runs on a "meta" copy built from the config, so it allocates
    no memory and takes milliseconds even for large models. A training step costs about 3x this
    (forward + backward).
    """
    config = replace(model.config, resolution=resolution)  # validates: resolution must suit the levels
    with torch.device("meta"):
        meta_model = UNet(config)
        x = torch.zeros(1, config.in_channels, resolution, resolution)
        t = torch.zeros(1)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(x, t)
    return int(counter.get_total_flops())
