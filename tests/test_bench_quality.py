"""bench_quality's harness checks itself (``--self-test``): pooled pixels, shared noise, the diffusers
recipe's loader, LR and EMA schedules, its DDIM loop against ``DDIMPipeline``, FD of a set with itself.

Run as a subprocess so the benchmark stays a script; seconds, not a benchmark run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_quality_self_test_passes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_quality.py"), "--self-test"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
