"""Training: the typed config, the loop, EMA, the monitor and the training report (run files: runs)."""

from diffkit.train.config import TrainConfig, TrainPlan
from diffkit.train.loop import train
from diffkit.train.result import TrainResult

__all__ = ["TrainConfig", "TrainPlan", "TrainResult", "train"]
