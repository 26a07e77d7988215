"""The run folder, one owner: names, ``config.json``, resume state, EMA snapshots, listing, "latest".

Train writes run folders, sample and eval read them; none of them spells a run file's name or format
itself. This package knows the files, not the training loop.
"""
