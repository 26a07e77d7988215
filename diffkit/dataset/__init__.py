"""The dataset folder, one owner for each of its concepts (scrape, dedupe, data and eval all use these):

- :mod:`~diffkit.dataset.listing`: which files are the folder's images, in which order (the one lister);
- :mod:`~diffkit.dataset.decode`: bytes or a file to faithful 8-bit RGB pixels (the one decoder);
- :mod:`~diffkit.dataset.phash`: the one 64-bit pHash and its decode paths;
- :mod:`~diffkit.dataset.manifest`: file names, the SQLite manifest (schema and every query, including
  dedupe's removal table) and ``metadata.jsonl``;
- :mod:`~diffkit.dataset.redact`: credentials in URLs never reach the manifest, files or the terminal.

Nothing here knows who calls it: it imports only :mod:`diffkit.atomic`, :mod:`diffkit.errors` and
:mod:`diffkit.safepath` from the rest of diffkit.
"""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "UndecodableImage": "decode",
        "open_rgb": "decode",
        "to_8bit": "decode",
        "IMAGE_EXTENSIONS": "listing",
        "ImageEntry": "listing",
        "ImageScan": "listing",
        "image_root": "listing",
        "scan_images": "listing",
    },
)
