"""Which run made a folder of images: ``provenance.json`` from ``diffkit sample``, read back by ``eval``,
and the run page that credits an eval to a run only when that file names the run (issue 25.1, 25.2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open
from typer.testing import CliRunner

import diffkit.sample.run as sample_run
from diffkit.cli import app
from diffkit.report.index import IndexConfig, build_index
from diffkit.runs.snapshots import latest_snapshot
from diffkit.sample.provenance import PROVENANCE_FILE, read_provenance
from diffkit.testing.inception import make_inception_weights
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

RES = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, faces: Path) -> Path:
    out = tmp_path_factory.mktemp("provenance") / "runs" / "lab"
    train(
        TrainConfig(
            data=faces, out=out, preset="tiny", resolution=RES, batch_size=4, steps=3, seed=0, device="cpu",
            precision="fp32", progress=False, report=False, sample_grid=4, sample_steps=2,
        )
    )  # fmt: skip
    return out


def _invoke(*args: object) -> dict:
    result = CliRunner().invoke(app, [*map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _sample(run: Path, out: Path, *options: object) -> dict:
    return _invoke(
        "sample", "--run", run, "--out", out, "--device", "cpu", "--precision", "fp32", "--no-progress",
        *options,
    )  # fmt: skip


def test_sample_records_the_run_snapshot_and_sampling_it_used(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "gen"
    options = ["--n", "3", "--sampler", "dpmpp", "--steps", "4", "--seed", "7"]
    printed = _sample(run, out, *options, "--report", tmp_path / "r.html")
    snapshot = latest_snapshot(run)
    with safe_open(str(snapshot), framework="pt") as handle:  # read independently of the code under test
        metadata = handle.metadata()
    recorded = json.loads((out / PROVENANCE_FILE).read_text())
    assert recorded == {
        "schema": "diffkit.provenance/1", "command": "sample", "run": str(run), "snapshot": str(snapshot),
        "snapshot_kimg": int(metadata["nimg"]) / 1000, "snapshot_step": int(metadata["step"]),
        "sampler": "dpmpp", "steps": 4, "eta": 0.0, "seed": 7, "n": 3, "resolution": RES, "label": None,
        "guidance": None,
    }  # fmt: skip
    assert read_provenance(out) == recorded and printed["provenance"] == recorded
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["made_by"] == (
        f"{snapshot.name} of {run} ({int(metadata['nimg']) / 1000:g} kimg), DPMPP 4 steps, seed 7, N=3"
    )


def test_a_folder_being_resampled_carries_no_stale_provenance(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record is removed before the first PNG and written after the last: never beside a half set."""
    out = tmp_path / "gen"
    out.mkdir()
    (out / PROVENANCE_FILE).write_text(json.dumps({"schema": "diffkit.provenance/1", "run": "runs/other"}))
    seen: list[bool] = []
    original = sample_run.write_png

    def spy(path: Path, image) -> None:  # type: ignore[no-untyped-def]
        seen.append((path.parent / PROVENANCE_FILE).exists())
        original(path, image)

    monkeypatch.setattr(sample_run, "write_png", spy)
    _sample(run, out, "--n", "2", "--steps", "2", "--report", tmp_path / "r.html")
    assert seen == [False, False]
    assert json.loads((out / PROVENANCE_FILE).read_text())["run"] == str(run)


def test_read_provenance_refuses_what_is_not_one(tmp_path: Path) -> None:
    assert read_provenance(tmp_path) is None
    (tmp_path / PROVENANCE_FILE).write_text('{"run": "runs/lab"}')  # no schema: not diffkit's
    assert read_provenance(tmp_path) is None
    (tmp_path / PROVENANCE_FILE).write_text("{not json")
    assert read_provenance(tmp_path) is None


def test_the_run_page_credits_an_eval_only_to_the_run_that_made_its_images(
    run: Path, faces: Path, tmp_path: Path
) -> None:
    """An eval of two folders is credited to ``runs/lab`` only when its images' provenance names it,
    and every FID label says what made the images and against what reference."""
    weights = make_inception_weights(tmp_path / "inception.pth")
    reports = tmp_path / "reports"
    gen = tmp_path / "gen"
    _sample(run, gen / "a", "--n", "4", "--steps", "2", "--seed", "1", "--report", tmp_path / "s.html")
    common = ["--weights", weights, "--metrics", "fid", "--samples", "4", "--bootstrap", "0", "--no-progress"]
    ours = _invoke("eval", "--generated", gen / "a", "--reference", faces, *common,
                   "--report", reports / "eval-ours.html")  # fmt: skip
    # the same reference (the run's data) but images the run never made: a copy of the data itself
    _invoke("eval", "--generated", faces, "--reference", faces, *common, "--report", reports / "eval-x.html")
    sidecar = json.loads((reports / "eval-ours.json").read_text())
    assert sidecar["data"]["provenance"] == json.loads((gen / "a" / PROVENANCE_FILE).read_text())
    made = f"{latest_snapshot(run).name} of {run}"
    assert (
        sidecar["data"]["made_by"].startswith(made)
        and "DDIM 2 steps, seed 1, N=4" in sidecar["data"]["made_by"]
    )
    setup = next(s["table"] for s in sidecar["sections"] if s["heading"] == "Setup")
    assert {"field": "generated_by", "value": sidecar["data"]["made_by"]} in setup  # on the eval page too
    stranger = json.loads((reports / "eval-x.json").read_text())
    assert stranger["data"]["provenance"] is None
    assert stranger["data"]["made_by"] == "images of unknown origin (no provenance.json)"

    result = build_index(IndexConfig(reports_dir=reports))
    page = result.page_for_run(run)
    assert page is not None
    page_sidecar = json.loads(page.with_suffix(".json").read_text())
    assert page_sidecar["data"]["reports"] == {"eval": ["eval-ours.html"]}
    assert page_sidecar["headline"] == (
        f"{ours['fid_headline']} — generated: {sidecar['data']['made_by']}; reference: {faces}, M=24"
    )
    html = page.read_text()
    assert "eval-x.html" not in html and "FID/KID measured on generated: " + made in html


def test_eval_run_records_which_snapshot_made_its_samples(run: Path, tmp_path: Path) -> None:
    """`eval --run` samples into the run folder: that folder's provenance names the run, the snapshot
    file and the sampling it used, and the eval's sidecar carries the same record."""
    from diffkit.eval.config import EvalConfig
    from diffkit.eval.sampling import ensure_samples

    weights = make_inception_weights(tmp_path / "inception.pth")
    _invoke(
        "eval", "--run", run, "--samples", "3", "--steps", "2", "--seed", "5", "--metrics", "fid",
        "--weights", weights, "--device", "cpu", "--no-progress", "--report", tmp_path / "e.html",
    )  # fmt: skip
    config = EvalConfig(run=run, samples=3, steps=2, seed=5, metrics=("fid",), device="cpu", progress=False)
    folder, reused = ensure_samples(config)
    assert reused  # the eval above sampled this very folder
    recorded = read_provenance(folder)
    assert recorded is not None
    assert (recorded["command"], recorded["run"], recorded["snapshot"]) == (
        "eval --run", str(run), str(latest_snapshot(run))
    )
    assert (recorded["steps"], recorded["seed"], recorded["n"], recorded["eta"]) == (2, 5, 3, 0.0)
    sidecar = json.loads((tmp_path / "e.json").read_text())
    assert sidecar["data"]["provenance"] == recorded
