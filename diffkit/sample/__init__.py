"""``diffkit sample``: config, run (the entry), result; ``generate_images`` (generate.py) is the engine.

Snapshots are read by :mod:`diffkit.runs` (``load_snapshot`` is re-exported here for convenience);
grids are drawn by :mod:`diffkit.report.grid`.
"""

from diffkit.runs import load_snapshot
from diffkit.sample.config import SampleConfig
from diffkit.sample.generate import generate_images
from diffkit.sample.result import SampleResult
from diffkit.sample.run import sample

__all__ = ["SampleConfig", "SampleResult", "generate_images", "load_snapshot", "sample"]
