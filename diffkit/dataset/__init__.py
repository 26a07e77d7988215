"""The dataset folder, one owner for each of its concepts (scrape, dedupe, train and eval all use these):

- :mod:`~diffkit.dataset.listing`: which files are the folder's images, in which order (the one lister);
- :mod:`~diffkit.dataset.decode`: bytes or a file to faithful 8-bit RGB pixels (the one decoder);
- :mod:`~diffkit.dataset.phash`: the one 64-bit pHash and its decode paths;
- :mod:`~diffkit.dataset.manifest`: file names, the SQLite manifest (schema and every query, including
  dedupe's removal table) and ``metadata.jsonl``;
- :mod:`~diffkit.dataset.labels`: class labels of a folder (subfolders or ``metadata.jsonl``);
- :mod:`~diffkit.dataset.redact`: credentials in URLs never reach the manifest, files or the terminal.

Nothing here knows who calls it: it imports only :mod:`diffkit.atomic`, :mod:`diffkit.console`,
:mod:`diffkit.errors` and :mod:`diffkit.safepath` from the rest of diffkit. The package face is plain:
import each name from its module.
"""
