"""Informative random DINOv2 ViT-L/14 weights in timm's layout, for offline tests.

Meta's file cannot be downloaded here. timm's own random init is no substitute: its layer scales start
at 1e-5, so every block adds almost nothing and the class token is nearly the same for any image (FD ~ 0
whatever the inputs, and a comparison built on it could not fail). These weights keep timm's seeded
init and set every layer scale to ``layer_scale``, so that different images give clearly different
features. The architecture is the real ViT-L/14 (24 blocks, 1024 wide, 304 M parameters).

The file is safetensors in float16 (half the size of float32; the model computes in float32 after
loading): pass it as ``diffkit eval --features dinov2 --dinov2-weights FILE``. It is not Meta's file,
so results computed with it are marked not comparable with published values.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from diffkit.metrics.dinov2 import dinov2_model


def make_dinov2_weights(path: Path, seed: int = 0, layer_scale: float = 0.1) -> Path:
    """Write informative random DINOv2 ViT-L/14 weights to ``path``; same arguments, same file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = dinov2_model()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith((".ls1.gamma", ".ls2.gamma")):
                parameter.fill_(layer_scale)
    state = {
        name: tensor.detach().to(torch.float16).contiguous() for name, tensor in model.state_dict().items()
    }
    save_file(state, str(path))
    return path
