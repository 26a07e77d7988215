"""``diffkit phema``: config, run (the entry), result: the EMA of any length after training.

The profile maths (power-function EMAs, their inner products, the least-squares reconstruction) and
the profiles training keeps are :mod:`diffkit.train.phema`'s; this package reads a run's stored
profiles and writes the reconstruction as an EMA snapshot.
"""
