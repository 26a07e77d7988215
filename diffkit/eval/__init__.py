"""``diffkit eval``: config, run (the entry), result, report; sampling.py samples a run's images for it.

The metrics themselves (FID, KID, IS, precision/recall, memorization, feature extraction) are the
maths in :mod:`diffkit.metrics`, which never imports this package.
"""
