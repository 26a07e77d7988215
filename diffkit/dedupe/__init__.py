"""Exact and perceptual de-duplication of image folders (``diffkit dedupe``)."""

from diffkit.dedupe.config import DEFAULT_THRESHOLDS, DedupeConfig
from diffkit.dedupe.run import DedupeResult, dedupe

__all__ = ["DEFAULT_THRESHOLDS", "DedupeConfig", "DedupeResult", "dedupe"]
