"""Training data: an image folder decoded once into a uint8 cache, and batches drawn on the device."""

from diffkit.data.batcher import DeviceBatcher
from diffkit.data.cache import ImageCache, load_image_dataset
from diffkit.data.folder import IMAGE_EXTENSIONS, find_images

__all__ = ["IMAGE_EXTENSIONS", "DeviceBatcher", "ImageCache", "find_images", "load_image_dataset"]
