"""U-Net denoiser for pixel-space diffusion: configs, presets, the network and its cost."""

from diffkit.models.config import PRESETS, UNetConfig, UNetPreset, preset_config
from diffkit.models.stats import count_parameters, flops_per_image
from diffkit.models.unet import UNet

__all__ = [
    "PRESETS", "UNet", "UNetConfig", "UNetPreset", "count_parameters", "flops_per_image", "preset_config",
]
