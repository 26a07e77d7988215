"""``diffkit sample``: config, run (the entry), result (+ report); the sampling options resolved once
(options.py), the engine (generate.py: ``generate_batches``) and the PNG writer (pngs.py).

Snapshots are read by :mod:`diffkit.runs.snapshots`; grids are drawn by :mod:`diffkit.report.grid`.
"""
