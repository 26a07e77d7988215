"""Informative random InceptionV3 weights in torch-fidelity's format, for offline tests and benchmarks.

The official weights cannot be downloaded here. A randomly initialised InceptionV3 is no substitute:
activations vanish through its ~50 layers, so pool3 features are almost constant, FID ~ 1e-14 and
IS = 1 for any inputs, and a comparison built on them could not fail. These weights are informative:
Kaiming-normal convolutions, then every BatchNorm's running statistics calibrated on one batch of
images (train-mode forward with ``momentum=None``, i.e. exactly that batch's statistics), so that
different image sets give clearly different FIDs and a wrong preprocessing step shows up.

The file is a plain ``state_dict`` of torch-fidelity's ``FeatureExtractorInceptionV3``: pass it as
``feature_extractor_weights_path`` (or ``diffkit eval --weights``). It is not the official file, so
diffkit marks results computed with it as not comparable with published values.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from diffkit.fakesite.faces import draw_face

INCEPTION_FEATURES = ["2048", "logits_unbiased"]


class _UnloadedInceptionV3(FeatureExtractorInceptionV3):
    """torch-fidelity's InceptionV3 whose constructor skips loading weights (same state_dict keys)."""

    def load_state_dict(self, state_dict, strict=True, assign=False):  # noqa: ANN001, ANN201
        return None


def calibration_faces(n: int = 6, size: int = 64, seed: int = 99) -> np.ndarray:
    """``n`` procedural faces as uint8 (n, size, size, 3), the same pixels ``write_face_folder`` saves."""
    return np.stack(
        [np.asarray(draw_face(np.random.default_rng([seed, i]), size).convert("RGB")) for i in range(n)]
    )


def make_inception_weights(path: Path, calibration: np.ndarray | None = None, seed: int = 0) -> Path:
    """Write informative random InceptionV3 weights to ``path``; BatchNorm calibrated on ``calibration``.

    ``calibration``: uint8 images (B, H, W, 3), B >= 2 (default: 6 procedural 64 px faces). Same
    arguments, same file contents.
    """
    images = calibration_faces() if calibration is None else np.asarray(calibration)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) < 2:
        raise ValueError(f"calibration must be uint8 (B>=2, H, W, 3), got {images.dtype} {images.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    placeholder = io.BytesIO()
    torch.save({}, placeholder)  # the constructor loads this (and ignores it) instead of downloading
    placeholder.seek(0)
    torch.manual_seed(seed)
    model = _UnloadedInceptionV3(
        "inception-v3-compat", INCEPTION_FEATURES, feature_extractor_weights_path=placeholder
    )
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
        elif isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average: after one batch, exactly that batch's statistics
    torch.nn.init.normal_(model.fc.weight, std=0.3)  # logits that vary between images: IS > 1
    torch.nn.init.zeros_(model.fc.bias)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    model.eval()
    torch.save(model.state_dict(), path)  # tensors only: loads with torch.load(weights_only=True)
    return path
