"""Sampling from trained runs: EMA snapshots (safetensors) to images, PNG folders and grids."""

from diffkit.sample.command import SampleConfig, SampleResult, sample
from diffkit.sample.generate import generate_images, load_run_config, load_snapshot
from diffkit.sample.grid import make_grid, to_uint8

__all__ = [
    "SampleConfig",
    "SampleResult",
    "generate_images",
    "load_run_config",
    "load_snapshot",
    "make_grid",
    "sample",
    "to_uint8",
]
