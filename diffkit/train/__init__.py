"""Training: the typed config, the loop, EMA, precision, checkpoints and run folders."""

from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.loop import train
from diffkit.train.result import TrainResult

__all__ = ["TrainConfig", "TrainPlan", "TrainResult", "train"]
