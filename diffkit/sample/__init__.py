"""Sampling from trained runs: EMA snapshots (safetensors) to images and PNG folders.

Snapshots are read by :mod:`diffkit.runs` (``load_snapshot`` is re-exported here for convenience);
grids are drawn by :mod:`diffkit.report.grid`.
"""

from diffkit.runs import load_snapshot
from diffkit.sample.command import SampleConfig, SampleResult, sample
from diffkit.sample.generate import generate_images

__all__ = ["SampleConfig", "SampleResult", "generate_images", "load_snapshot", "sample"]
