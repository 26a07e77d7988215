"""U-Net denoiser for pixel-space diffusion: configs, presets, the network and its cost."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "PRESETS": "config",
        "UNetConfig": "config",
        "UNetPreset": "config",
        "preset_config": "config",
        "count_parameters": "stats",
        "flops_per_image": "stats",
        "UNet": "unet",
    },
)
