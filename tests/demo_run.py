"""One small demo run per test session, shared by tests/test_demo.py and tests/test_browser.py.

The demo (scrape -> dedupe -> train -> sample -> eval, with generated Inception weights) is the
slowest thing the suite does; both modules read its outputs and neither changes them, so it runs
once per pytest process. Module-level state rather than a fixture: a fixture defined here and
imported into two test modules would be run once per module.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from diffkit.demo import DemoConfig, DemoResult, run_demo
from diffkit.testing.inception import make_inception_weights


@dataclass(frozen=True)
class DemoRun:
    root: Path  # the folder the demo ran in: demo/ and reports/ are inside
    result: DemoResult
    config: DemoConfig


_runs: list[DemoRun] = []


def shared_demo(factory: pytest.TempPathFactory) -> DemoRun:
    """The session's demo run (read-only for the tests), made on the first call."""
    if not _runs:
        root = factory.mktemp("demo-run")
        weights = make_inception_weights(root / "inception-test.pth")
        config = DemoConfig(
            out=Path("demo"),
            n_images=24,
            site_image_size=64,
            resolution=16,
            train_steps=4,
            batch_size=8,
            eval_samples=16,
            weights=weights,
            device="cpu",
            progress=False,
        )
        before = Path.cwd()
        os.chdir(root)  # the demo writes demo/ and reports/ where it runs, as a user would
        try:
            result = run_demo(config)
        finally:
            os.chdir(before)
        _runs.append(DemoRun(root=root, result=result, config=config))
    return _runs[0]
