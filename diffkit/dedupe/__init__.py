"""Exact and perceptual de-duplication of image folders (``diffkit dedupe``)."""

from diffkit.dedupe.config import DEFAULT_THRESHOLDS, DedupeConfig
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.run import dedupe

__all__ = ["DEFAULT_THRESHOLDS", "DedupeConfig", "DedupeResult", "dedupe"]
