"""``diffkit eval``: config, run (the entry), result, report; sampling.py samples a run's images for it.

The metrics themselves (FID, KID, IS, precision/recall, memorization, feature extraction) are the
maths in :mod:`diffkit.metrics`, which never imports this package.
"""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "EvalConfig": "config",
        "EvalResult": "result",
        "evaluate": "run",
    },
)
