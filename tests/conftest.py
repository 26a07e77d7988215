"""Shared test set-up.

One torch thread per process: tests run beside subprocesses (CLI runs, the image site), and on a
2-core machine OpenMP threads spinning against each other made tiny training steps 10-50x slower.
The environment variable reaches the CLI subprocesses the tests start.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402  (after the environment is set)
import torch  # noqa: E402

from diffkit.fakesite.faces import write_face_folder  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 procedural 32 px faces, shared by the training and sampling tests (treat as read-only).

    Its image cache (``.diffkit-cache`` inside) is built by the first test that trains and reused after.
    """
    folder = tmp_path_factory.mktemp("faces")
    write_face_folder(folder, 24, size=32, seed=0)
    return folder
