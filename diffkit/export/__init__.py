"""``diffkit export``: a run's EMA snapshot as a folder another library loads (diffusers for now).

config, run (the entry), result; ``mapping`` renames the weights and writes the configs, ``card`` the
model card.
"""
