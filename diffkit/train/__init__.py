"""``diffkit train``: config, run (the entry), result, report; loop, EMA and monitor are internals."""
