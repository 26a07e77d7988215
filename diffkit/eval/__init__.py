"""``diffkit eval``: the command around the metrics (sampling a run's images for it, today).

Kept minimal on purpose: importing ``diffkit.eval.sampling`` must not pull in ``diffkit.metrics.run``,
which imports this package back.
"""
