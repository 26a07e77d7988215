"""The pixel convention: models see floats in [-1, 1], files hold uint8 in [0, 255].

Sampling, training's fixed-noise grids and evaluation's samples all turn model output into images
through :func:`to_uint8`, so one rounding rule holds everywhere.
"""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW floats in [-1, 1] -> NHWC uint8 (values outside the range are clipped)."""
    scaled = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return scaled.permute(0, 2, 3, 1).cpu().numpy()
