"""Training data: an image folder decoded once into a uint8 cache, and batches drawn on the device."""

from diffkit.data.batcher import DeviceBatcher
from diffkit.data.cache import ImageCache, load_image_dataset
from diffkit.data.folder import IMAGE_EXTENSIONS, find_images
from diffkit.data.labels import DatasetLabels, LabelsMode, read_labels

__all__ = [
    "IMAGE_EXTENSIONS",
    "DatasetLabels",
    "DeviceBatcher",
    "ImageCache",
    "LabelsMode",
    "find_images",
    "load_image_dataset",
    "read_labels",
]
