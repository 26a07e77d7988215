"""Shared test set-up.

One torch thread per process: tests run beside subprocesses (CLI runs, the image site), and on a
2-core machine OpenMP threads spinning against each other made tiny training steps 10-50x slower.
The environment variable reaches the CLI subprocesses the tests start.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after the environment is set)

torch.set_num_threads(1)
