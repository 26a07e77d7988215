"""DINOv2 ViT-L/14 features, the space Stein et al. (NeurIPS 2023, dgm-eval) recommend for FD.

The architecture is timm's ``vit_large_patch14_dinov2`` (``pip install diffkit[dinov2]``), built at
224 px without a head: its output is the class token after the final LayerNorm, 1024-d, which is what
torch.hub's ``dinov2_vitl14`` returns and dgm-eval uses. Preprocessing follows dgm-eval's
``DINOv2Encoder.transform``: each uint8 image resized to 224 x 224 with PIL bicubic (torchvision's
``Resize`` on a PIL image), scaled to [0, 1], normalised with the ImageNet mean and std.

Weights come from one file, hashed before it is read and loaded only as tensors (safetensors, or
``torch.load(weights_only=True)``), never unpickled: Meta's ``dinov2_vitl14_pretrain.pth`` (as torch.hub
caches it) or a timm-format state dict. Meta's file holds a 37 x 37 position-embedding grid (518 px);
timm's ``checkpoint_filter_fn`` resamples it to 16 x 16 once at load (bicubic, antialiased), whereas
torch.hub's model interpolates at every forward without antialiasing: features, and so FD_DINOv2, can
differ slightly from dgm-eval's.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from diffkit.console import printable
from diffkit.errors import DiffkitError
from diffkit.metrics.features import Extractor, _first_line, safe_state_dict
from diffkit.metrics.weights import ResolvedWeights

MODEL_NAME = "vit_large_patch14_dinov2"
INPUT_SIZE = 224
FEATURE_DIM = 1024
OUTPUT = "dinov2"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
RESIZE = "PIL bicubic to 224 px, ImageNet mean/std (as dgm-eval)"


def dinov2_model() -> torch.nn.Module:
    """timm's DINOv2 ViT-L/14 at 224 px, headless, randomly initialised (weights are loaded after)."""
    try:
        import timm
    except ImportError:
        raise DiffkitError(
            "--features dinov2 needs timm (the DINOv2 ViT-L/14 architecture): pip install 'diffkit[dinov2]'"
        ) from None
    return timm.create_model(MODEL_NAME, pretrained=False, num_classes=0, img_size=INPUT_SIZE)


def prepare(batch: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> normalised float32 (B, 3, 224, 224), as dgm-eval's transform."""
    resized = np.stack(
        [
            np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC))
            for image in batch
        ]
    )
    scaled = (resized.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)))


def load_dinov2(weights: ResolvedWeights) -> torch.nn.Module:
    """The model with ``weights`` (Meta's or timm's key layout), in eval mode; one-line errors."""
    from timm.models.vision_transformer import checkpoint_filter_fn

    state = safe_state_dict(weights, "DINOv2")
    model = dinov2_model()
    try:
        # Meta's layout (mask_token, 518 px grid) -> timm's; a timm state dict passes through unchanged
        converted = checkpoint_filter_fn(state, model)
        model.load_state_dict(converted, strict=True)
    except Exception as exc:  # a state dict of another network: missing, unexpected or misshapen keys
        raise DiffkitError(
            f"cannot load DINOv2 ViT-L/14 weights from {printable(weights.path)}: {_first_line(exc)}"
        ) from None
    return model.float().eval()


class DinoV2Extractor(Extractor):
    """Class-token features of DINOv2 ViT-L/14 (1024-d) for FD, KD and the k-NN metrics."""

    def __init__(self, weights: ResolvedWeights, device: torch.device):
        self.name = f"timm/{MODEL_NAME}"
        self.resize = RESIZE
        self.outputs = (OUTPUT,)
        self.weights = weights
        self.device = device
        self.model = load_dinov2(weights).to(device)

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        features = self.model(prepare(batch).to(self.device))
        return {OUTPUT: features.float().cpu().numpy()}
