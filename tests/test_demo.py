"""The demo runs the whole pipeline end to end: scrape -> dedupe -> train -> sample -> eval."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from diffkit.demo import DemoConfig, run_demo
from diffkit.errors import DiffkitError
from diffkit.testing.inception import make_inception_weights


def test_demo_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    weights = make_inception_weights(tmp_path / "inception-test.pth")
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
    result = run_demo(config)

    images = sorted((tmp_path / "demo" / "data" / "images").rglob("*.jpg"))
    assert len(images) == 24
    assert list(result.seconds) == ["scrape", "dedupe", "train", "sample", "eval"]
    assert result.skipped == {}
    assert set(result.reports) == {"scrape", "dedupe", "train", "eval"}
    for html in result.reports.values():
        assert Path(html).is_file() and Path(html).with_suffix(".json").is_file()
    assert len(list((tmp_path / "demo" / "run").glob("ema-*.safetensors"))) >= 1
    eval_numbers = json.loads(Path(result.reports["eval"]).with_suffix(".json").read_text())["data"]
    assert eval_numbers["n_generated"] == 16 and eval_numbers["n_reference"] == 24
    assert math.isfinite(eval_numbers["fid"]) and eval_numbers["fid"] > 0
    index = (tmp_path / "reports" / "index.html").read_text(encoding="utf-8")
    assert all(Path(html).name in index for html in result.reports.values())


def test_demo_rejects_impossible_settings() -> None:
    with pytest.raises(DiffkitError, match="eval-samples"):
        DemoConfig(n_images=20, eval_samples=50).validate()
