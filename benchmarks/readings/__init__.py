"""How each committed benchmark report is read: one module per report (or family of reports), owning its
README headline and its docs/benchmarks.md block; ``catalog`` lists them in the order the docs show them.

Every figure is formatted from a *traced* report (``figures.load``): each number carries the report and
the key it came from, so docs/generate.py can write each figure's source beside it and tests/test_docs.py
can check every figure against its key.
"""
