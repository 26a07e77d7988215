"""``diffkit train``: config, run (the entry), result, report; loop, EMA and monitor are internals."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "TrainConfig": "config",
        "TrainPlan": "config",
        "TrainResult": "result",
        "train": "run",
    },
)
