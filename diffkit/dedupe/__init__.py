"""Exact and perceptual de-duplication of image folders (``diffkit dedupe``)."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DEFAULT_THRESHOLDS": "config",
        "DedupeConfig": "config",
        "DedupeResult": "result",
        "dedupe": "run",
    },
)
