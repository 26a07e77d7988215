"""The dataset folder: how its images are decoded (and, later, listed and recorded)."""

from diffkit.dataset.decode import UndecodableImage, open_rgb, to_8bit

__all__ = ["UndecodableImage", "open_rgb", "to_8bit"]
