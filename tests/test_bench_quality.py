"""bench_quality's harness checks itself (``--self-test``): pooled pixels, shared noise, the diffusers
recipe's loader, LR and EMA schedules, its DDIM loop against ``DDIMPipeline``, FD of a set with itself.

The self-test runs as ``python -m benchmarks.bench_quality --self-test`` from the repository root, as a user
runs it; seconds, not a benchmark run.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from diffkit.models.config import preset_config

ROOT = Path(__file__).resolve().parent.parent
PRESETS_SMALL_32 = preset_config("small", 32)


def test_bench_quality_self_test_passes() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_quality", "--self-test"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


def _shape(model: torch.nn.Module) -> dict[str, list[int]]:
    """Per GroupNorm: its width and groups; per attention block: its width and heads (module order)."""
    from diffkit.models.blocks import AttentionBlock

    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    attention = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    return {
        "norm_widths": [m.num_channels for m in norms],
        "groups": [m.num_groups for m in norms],
        "attention_widths": [m.norm.num_channels for m in attention],
        "heads": [m.heads for m in attention],
        "params": [sum(p.numel() for p in model.parameters())],
    }


def test_small_unaligned_lever_trains_and_samples_the_pre_alignment_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lever that checks issue 15's alignment must train the old `small` (gcd(32, width) groups,
    width // 64 heads) and leave the preset as it is for everything else."""
    # benchmarks/ is a package of the repository root (as `python -m benchmarks.x` sees it from there)
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks._quality_job import _diffkit_config, preset_shape
    from benchmarks.bench_quality import LEVERS
    from diffkit.fakesite.faces import write_face_folder
    from diffkit.models.unet import UNet
    from diffkit.runs.snapshots import latest_snapshot, load_snapshot
    from diffkit.train.run import train

    lever = LEVERS["small_unaligned"]
    aligned = _shape(UNet(preset_config("small", 32)))
    write_face_folder(tmp_path / "faces", 4, size=32, seed=0)
    spec = {"train_dir": str(tmp_path / "faces"), "seed": 0, "overrides": lever}
    with preset_shape("small", lever["preset_shape"]):
        config = _diffkit_config(spec, tmp_path / "run", steps=1)
        train(config)
    assert preset_config("small", 32) == PRESETS_SMALL_32  # restored after the block
    model, _, _ = load_snapshot(latest_snapshot(tmp_path / "run"), torch.device("cpu"))
    old = _shape(model)  # rebuilt from the run's own config.json, outside the block
    for key in ("norm_widths", "attention_widths", "params"):  # the same network but for groups and heads
        assert old[key] == aligned[key]
    # at 32 px small attends at 16, 8 and 4 px (widths 96, 144, 192) and in the middle block
    assert set(aligned["attention_widths"]) == {96, 144, 192}
    assert aligned["heads"] == [width // 48 for width in aligned["attention_widths"]]
    assert old["heads"] == [max(1, width // 64) for width in old["attention_widths"]]
    assert set(aligned["groups"]) == {16}
    assert old["groups"] == [math.gcd(32, width) for width in old["norm_widths"]]
    assert set(old["groups"]) == {16, 32}
    assert config.preset == "small" and "preset_shape" not in config.to_dict()


def test_the_report_headline_is_the_readmes_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """bench_quality writes no headline of its own: the index shows the README's, for both modes."""
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks.bench_quality import report_headline

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("quality", "quality_levers_3"):
        report = json.loads((ROOT / "reports" / f"bench_{name}.json").read_text(encoding="utf-8"))
        headline = report_headline(report["summary"], report["data"])
        assert f"| {headline} | [bench_{name}](reports/bench_{name}.html) |" in readme


@pytest.mark.slow
def test_the_queue_runs_each_job_as_a_module_of_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench_quality starts each job as `python -m benchmarks.bench_quality --job SPEC` (its siblings import
    as benchmarks.x): a features job on 8 images, through the real queue, writes both spaces' features."""
    import numpy as np

    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(ROOT)  # where a user runs `python -m benchmarks.bench_quality`
    from benchmarks.bench_quality import Job, run_queue
    from diffkit.testing.inception import make_inception_weights

    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "set.npy", images)
    make_inception_weights(tmp_path / "weights.pt", images, seed=0)
    spec = {"kind": "features", "sets": {"set": str(tmp_path / "set.npy")},
            "weights": str(tmp_path / "weights.pt"), "out": str(tmp_path / "job")}  # fmt: skip
    job = Job("features", "features", spec, 1.0)
    run_queue([job], workers=1)
    assert job.result["torch_threads"] == 1 and "set" in job.result
    with np.load(tmp_path / "job" / "set-features.npz") as features:
        assert features["pixels"].shape == (8, 192) and features["inception"].shape == (8, 2048)


def test_every_benchmark_module_imports_as_part_of_the_package() -> None:
    """benchmarks/ is a package of the repository root: each module (and each reading) imports as
    benchmarks.x from there, with nothing put on sys.path, so no sibling is found through a path hack."""
    sources = [*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "docs").glob("*.py")]
    hacks = [
        str(path.relative_to(ROOT)) for path in sources if "sys.path" in path.read_text(encoding="utf-8")
    ]
    assert not hacks, f"sys.path used in {hacks}"
    script = (
        "import importlib, pkgutil, benchmarks, benchmarks.readings\n"
        "for package in (benchmarks, benchmarks.readings):\n"
        "    for module in pkgutil.iter_modules(package.__path__, package.__name__ + '.'):\n"
        "        importlib.import_module(module.name)\n"
        "        print(module.name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = set(done.stdout.split())
    assert {"benchmarks.twins", "benchmarks.bench_train_profile", "benchmarks._quality_recipe"} <= imported
    assert {"benchmarks.readings.catalog", "benchmarks.readings.quality"} <= imported
