"""Training data: an image folder decoded once into a uint8 cache, and batches drawn on the device."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "DeviceBatcher": "batcher",
        "ImageCache": "cache",
        "load_image_dataset": "cache",
        "IMAGE_EXTENSIONS": "folder",
        "find_images": "folder",
        "DatasetLabels": "labels",
        "LabelsMode": "labels",
        "read_labels": "labels",
    },
)
