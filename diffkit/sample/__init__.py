"""``diffkit sample``: config, run (the entry), result; ``generate_images`` (generate.py) is the engine.

Snapshots are read by :mod:`diffkit.runs` (``load_snapshot`` is re-exported here for convenience);
grids are drawn by :mod:`diffkit.report.grid`.
"""
