"""Evaluation: FID / KID / IS / precision-recall / memorization with sample-size caveats in numbers."""

from diffkit.metrics.config import EvalConfig
from diffkit.metrics.run import EvalResult, evaluate

__all__ = ["EvalConfig", "EvalResult", "evaluate"]
