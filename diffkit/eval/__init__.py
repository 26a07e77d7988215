"""``diffkit eval``: config, run (the entry), result, report; sampling.py samples a run's images for it.

The metrics themselves (FID, KID, IS, precision/recall, memorization, feature extraction) are the
maths in :mod:`diffkit.metrics`, which never imports this package.
"""

from diffkit.eval.config import EvalConfig
from diffkit.eval.result import EvalResult
from diffkit.eval.run import evaluate

__all__ = ["EvalConfig", "EvalResult", "evaluate"]
