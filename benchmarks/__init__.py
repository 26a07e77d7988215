"""diffkit's benchmarks: one module per benchmark, each writing ``reports/bench_<name>.html`` + ``.json``.

Run each as a module from the repository root, so its sibling modules import as ``benchmarks.x``::

    .venv/bin/python -m benchmarks.bench_train --quick
    .venv/bin/python -m benchmarks.bench_quality --self-test

What lives where:

- ``bench_<name>.py``: one benchmark, its command line and its report;
- ``twins.py``: the peers' twins that several benchmarks share (diffusers' ``UNet2DModel`` built with a
  diffkit preset's shape, and the one-step ``Trainer`` that times either network);
- ``_quality_job.py`` / ``_quality_recipe.py``: one ``bench_quality`` job, and diffusers'
  ``train_unconditional.py`` recipe it trains;
- ``readings/``: how each committed report is read (its headline and its docs table); docs/generate.py
  splices them into README.md and docs/benchmarks.md.
"""
