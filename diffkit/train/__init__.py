"""``diffkit train``: config, run (the entry), result, report; loop, EMA and monitor are internals."""

from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.result import TrainResult
from diffkit.train.run import train

__all__ = ["TrainConfig", "TrainPlan", "TrainResult", "train"]
