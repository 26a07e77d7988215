"""U-Net denoiser for pixel-space diffusion: configs, presets, the network and its cost."""
