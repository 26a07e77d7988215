"""``diffkit eval`` end to end through the real InceptionV3 architecture, with weights made here.

The weights come from :mod:`diffkit.testing.inception` (Kaiming init + BatchNorm calibration), so
different image sets give clearly different FIDs and a comparison with torch-fidelity can fail.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.weights import INCEPTION_ENV, OFFLINE_ENV, TORCH_FIDELITY_INCEPTION
from diffkit.testing.inception import make_inception_weights

N = 12  # >= 10 for the Inception Score's 10 splits; InceptionV3 at 299 px is slow on a CPU


@pytest.fixture(scope="session")
def inception_weights(tmp_path_factory) -> Path:
    return make_inception_weights(tmp_path_factory.mktemp("inception-weights") / "inception-test.pth")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("eval-folders")
    write_face_folder(root / "generated", N, size=64, seed=1)
    write_face_folder(root / "reference", N, size=64, seed=2)
    return {"root": root, "generated": root / "generated", "reference": root / "reference"}


def invoke(args: list[str]):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def image_sets(generated: Path, reference: Path, samples: int = N) -> list:
    return ["--generated", generated, "--reference", reference, "--samples", samples]


def folder_sets(folders: dict[str, Path], samples: int = N) -> list:
    return image_sets(folders["generated"], folders["reference"], samples)


def eval_json(args: list[str]) -> dict:
    result = invoke(["eval", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def first_run(folders, inception_weights) -> dict:
    cache = folders["root"] / "feature-cache"
    data = eval_json(
        [*folder_sets(folders), "--weights", inception_weights,
         "--metrics", "fid,kid,is", "--cache-dir", cache, "--report", folders["root"] / "report.html",
         "--bootstrap", 20]
    )  # fmt: skip
    return {"data": data, "cache": cache}


def test_eval_json_equals_torch_fidelity_on_the_same_folders_and_weights(
    folders, inception_weights, first_run
):
    ours = first_run["data"]
    theirs = torch_fidelity.calculate_metrics(
        input1=str(folders["generated"]),
        input2=str(folders["reference"]),
        cuda=False,
        isc=True,
        fid=True,
        kid=True,
        kid_subset_size=N,
        feature_extractor_weights_path=str(inception_weights),
        verbose=False,
        cache=False,
        save_cpu_ram=True,
    )
    assert ours["fid"] > 10  # informative weights: a real distance, not 1e-14
    assert ours["is_mean"] > 1.05  # logits that actually vary between images
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], abs=1e-5)
    assert ours["is_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-4)
    assert ours["is_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-4)


def test_eval_json_carries_sizes_engine_and_caveats(folders, first_run):
    data = first_run["data"]
    required = ("n_generated", "n_reference", "engine", "resize", "fid", "kid_mean", "kid_std", "is_mean",
                "is_std", "caveats")  # fmt: skip
    assert set(required) <= set(data) and all(isinstance(note, str) for note in data["caveats"])
    assert (data["n_generated"], data["n_reference"]) == (N, N)
    assert data["engine"] == "torch-fidelity" and data["resize"] == "tf1-bilinear"
    assert data["fid_label"] == f"FID@{N} (reference {N})"
    assert data["kid_subset_size"] == N
    assert data["fid_ci95"][0] < data["fid"] < data["fid_ci95"][1]
    assert data["kid_ci95"][0] < data["kid_ci95"][1]
    caveats = "\n".join(data["caveats"])
    for phrase in (
        f"FID@{N} (reference {N})",
        "rank-deficient",
        "KID subset size equals N",
        "not meaningful for face",
        "not the official file",
        "No FID-infinity estimate",
    ):
        assert phrase in caveats
    assert "precision" not in data and "memorization" not in data  # not asked for
    assert Path(data["report_html"]).is_file()
    sidecar = json.loads(Path(data["report_json"]).read_text())
    assert sidecar["data"]["fid"] == data["fid"]
    assert sidecar["data"]["versions"]["torch-fidelity"] == torch_fidelity.__version__


def test_feature_cache_reuses_the_reference_and_notices_a_changed_image(
    folders, inception_weights, first_run
):
    reference = folders["root"] / "reference-copy"
    shutil.copytree(folders["reference"], reference)  # same content elsewhere: same cache key
    args = [
        *image_sets(folders["generated"], reference),
        "--weights",
        inception_weights,
        "--metrics",
        "kid",
        "--bootstrap",
        0,
        "--cache-dir",
        first_run["cache"],
        "--report",
        folders["root"] / "cached.html",
    ]
    again = eval_json(args)
    assert again["feature_cache"] == {"inception_generated": "hit", "inception_reference": "hit"}
    assert again["features_extracted"] == {"inception_generated": 0, "inception_reference": 0}
    assert again["kid_mean"] == first_run["data"]["kid_mean"]

    write_face_folder(folders["root"] / "other", 1, size=64, seed=7)
    (folders["root"] / "other" / "face-00000.png").replace(reference / "face-00003.png")
    changed = eval_json(args)
    assert changed["feature_cache"] == {"inception_generated": "hit", "inception_reference": "miss"}
    assert changed["features_extracted"] == {"inception_generated": 0, "inception_reference": N}
    assert changed["kid_mean"] != again["kid_mean"]


def test_memorization_flags_exact_copies_of_reference_images(folders, inception_weights, first_run):
    generated = folders["root"] / "with-copies"
    shutil.copytree(folders["generated"], generated)
    for index in (0, 5, 9):
        shutil.copyfile(
            folders["reference"] / f"face-{index + 2:05d}.png", generated / f"face-{index:05d}.png"
        )
    data = eval_json(
        [*image_sets(generated, folders["reference"]), "--weights", inception_weights, "--metrics",
         "memorization", "--cache-dir", first_run["cache"], "--report", folders["root"] / "memo.html"]
    )  # fmt: skip
    memo = data["memorization"]
    assert memo["n_flagged"] == 3 and memo["share_flagged"] == pytest.approx(3 / N)
    assert memo["nn_ratio_min"] == 0.0 and memo["feature_cosine_max"] == pytest.approx(1.0, abs=1e-5)
    assert "fid" not in data


def test_missing_weights_offline_is_one_line_naming_file_and_sha256(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    result = invoke(["eval", *folder_sets(folders), "--cache-dir", tmp_path / "cache", "--json"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert TORCH_FIDELITY_INCEPTION.filename in lines[0] and TORCH_FIDELITY_INCEPTION.sha256 in lines[0]
    assert result.stdout == ""


def test_fewer_samples_than_asked_is_a_clear_error(folders, inception_weights):
    result = invoke(["eval", *folder_sets(folders, 50), "--weights", inception_weights, "--json"])
    assert result.exit_code == 2
    assert f"holds {N} image(s) but 50 were asked for" in result.stderr
    assert "Traceback" not in result.stderr


class _TinyTorchScriptInception(torch.nn.Module):
    """The interface of clean-fid's TorchScript Inception (``layers`` -> 2048-d, ``output`` 2048 -> 1008)."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 16, kernel_size=13, stride=13),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 2048, kernel_size=3, stride=3),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
        )
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - 128) / 128).view(x.shape[0], 2048)


@pytest.fixture(scope="module")
def tiny_clean_fid_weights(tmp_path_factory) -> Path:
    """A fast stand-in for clean-fid's TorchScript file: the FID/KID numbers are real, the network tiny."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-inception") / "tiny-inception.pt"
    torch.jit.script(_TinyTorchScriptInception().eval()).save(str(path))
    return path


@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")
def test_clean_fid_engine_equals_clean_fid_on_its_own_features(folders, tmp_path, tiny_clean_fid_weights):
    from cleanfid.fid import get_folder_features, kernel_distance

    path = tiny_clean_fid_weights
    data = eval_json(
        [*folder_sets(folders), "--engine", "clean-fid", "--weights", path, "--metrics", "kid",
         "--bootstrap", 0, "--cache-dir", tmp_path / "cache", "--report", tmp_path / "clean.html"]
    )  # fmt: skip
    model = torch.jit.load(str(path))

    def features(folder: Path) -> np.ndarray:
        def model_fn(x: torch.Tensor) -> torch.Tensor:
            return model.layers((x - 128) / 128).view(x.shape[0], 2048)

        return get_folder_features(str(folder), model_fn, num_workers=0, batch_size=8,
                                   device=torch.device("cpu"), mode="clean", verbose=False)  # fmt: skip

    theirs = {role: features(folders[role]) for role in ("generated", "reference")}
    # diffkit's cached features (one file per set) are clean-fid's, image for image
    ours = [np.load(cached)["2048"] for cached in sorted((tmp_path / "cache").glob("*.npz"))]
    gap = [[float(np.abs(mine - expected).max()) for mine in ours] for expected in theirs.values()]
    matched = [int(np.argmin(row)) for row in gap]
    assert len(ours) == 2 and sorted(matched) == [0, 1]
    for row, index, expected in zip(gap, matched, theirs.values(), strict=True):
        assert row[index] <= 1e-5 * np.abs(expected).max()
    # subsets of min(N, M, 1000) = N images are the whole sets, so clean-fid's unseeded draws agree up
    # to summation order; in float64 that order no longer matters at this precision
    kid = kernel_distance(theirs["generated"].astype(np.float64), theirs["reference"].astype(np.float64))
    assert data["engine"] == "clean-fid" and data["resize"].startswith("clean")
    assert abs(kid) > 1e-6
    assert data["kid_mean"] == pytest.approx(kid, rel=1e-3)  # diffkit, like torch-fidelity, sums in float32


@pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")
def test_fid_curve_intercept_and_the_html_report(tmp_path, tiny_clean_fid_weights):
    n, m = 96, 100  # N >= 80: enough images for subsets down to N/8
    write_face_folder(tmp_path / "generated", n, size=32, seed=1)
    write_face_folder(tmp_path / "reference", m, size=32, seed=2, fmt="jpg")
    report = tmp_path / "report.html"
    data = eval_json(
        [*image_sets(tmp_path / "generated", tmp_path / "reference", n), "--engine", "clean-fid",
         "--weights", tiny_clean_fid_weights, "--metrics", "fid,kid,memorization", "--bootstrap", 10,
         "--seed", 3, "--cache-dir", tmp_path / "cache", "--report", report]
    )  # fmt: skip
    assert data["fid_label"] == f"FID@{n} (reference {m})" and data["fid"] > 0
    curve = data["fid_curve"]
    assert curve["sizes"][0] == 12 and curve["sizes"][-1] == n and len(curve["sizes"]) == 15
    assert curve["fids"][-1] == pytest.approx(data["fid"], rel=1e-5)  # the size-N subset is the whole set
    slope, intercept = np.polyfit(1 / np.array(curve["sizes"]), curve["fids"], 1)
    assert data["fid_infinity"] == pytest.approx(intercept, rel=1e-9)
    assert curve["slope"] == pytest.approx(slope, rel=1e-9)
    # 96 tiny random-weight features: the subset FIDs scatter (R² ~0.5), so the fit is flagged untrusted
    r2 = np.corrcoef(1 / np.array(curve["sizes"]), curve["fids"])[0, 1] ** 2
    assert curve["r2"] == pytest.approx(r2, rel=1e-9) and r2 < 0.8
    assert data["fid_infinity_problems"] == [f"poor linear fit (R² {r2:.2f} < 0.8)"]
    assert data["fid_ci95"][0] < data["fid"] < data["fid_ci95"][1]
    assert data["kid_subset_size"] == n
    caveats = "\n".join(data["caveats"])
    for phrase in (f"{m} of {m} reference images are JPEG", "FID-infinity estimate", "rank <= 95",
                   "KID subset size equals N = 96", "clean-fid engine"):  # fmt: skip
        assert phrase in caveats

    html = report.read_text()
    for text in ("FID vs 1/N", "FID∞ (untrusted fit)", "rank-deficient covariance", "KID subset = N",
                 "Generated samples", "Memorization: closest pairs", "seed_bootstrap", "bootstrap_replicates",
                 "torch-fidelity", torch_fidelity.__version__, f"FID@{n} (reference {m})"):  # fmt: skip
        assert text in html, text
    # the FID-vs-1/N plot, the sample grid and the 12 closest pairs, all embedded
    assert html.count('src="data:image/png;base64,') == 1 + 1 + 12
    sidecar = json.loads(Path(data["report_json"]).read_text())
    assert sidecar["data"]["fid_curve"] == curve and sidecar["data"]["n_reference"] == m
    assert sidecar["data"]["seeds"]["bootstrap"] == 4


def test_eval_run_samples_pngs_once_and_uses_the_training_data_as_reference(tmp_path, inception_weights):
    from diffkit.train.config import TrainConfig
    from diffkit.train.run import train

    write_face_folder(tmp_path / "faces", 8, size=32, seed=2)
    train(TrainConfig(data=tmp_path / "faces", out=tmp_path / "run", preset="tiny", resolution=16,
                      batch_size=4, steps=2, device="cpu", precision="fp32", progress=False, report=False,
                      sample_grid=4, sample_steps=2))  # fmt: skip
    args = ["--run", tmp_path / "run", "--samples", N, "--steps", 2, "--weights", inception_weights,
            "--metrics", "kid", "--bootstrap", 0, "--device", "cpu", "--cache-dir", tmp_path / "cache",
            "--report", tmp_path / "run.html"]  # fmt: skip
    first = eval_json(args)
    samples = tmp_path / "run" / f"eval-samples-{N}-seed0"
    assert sorted(p.name for p in samples.glob("*.png")) == [f"sample-{i:05d}.png" for i in range(N)]
    assert first["samples_reused"] is False and first["generated"] == str(samples)
    assert first["reference"] == str(tmp_path / "faces") and first["n_reference"] == 8
    assert first["resolution"] == 16 and first["kid_subset_size"] == 8
    caveats = "\n".join(first["caveats"])
    assert "resized (Lanczos, as the training data) to 16 px" in caveats and "training data" in caveats
    assert "KID subset size equals M = 8" in caveats
    second = eval_json(args)
    assert second["samples_reused"] is True
    assert second["features_extracted"] == {"inception_generated": 0, "inception_reference": 0}
    assert second["kid_mean"] == first["kid_mean"]


def test_prc_without_vgg16_weights_offline_names_the_vgg_file(folders, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    monkeypatch.delenv("DIFFKIT_VGG16_WEIGHTS", raising=False)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    result = invoke(["eval", *folder_sets(folders), "--metrics", "prc", "--json"])
    assert result.exit_code == 2
    assert "vgg16-397923af.pth" in result.stderr and "397923af8e79cdbb6a7127f12361acd7" in result.stderr
    # the option that takes the VGG file is --vgg-weights (--weights is Inception's)
    assert "pass its path with --vgg-weights / DIFFKIT_VGG16_WEIGHTS" in result.stderr
    assert "--weights /" not in result.stderr
    missing = invoke(["eval", *folder_sets(folders), "--metrics", "prc", "--vgg-weights",
                      tmp_path / "nope.pth", "--json"])  # fmt: skip
    assert missing.exit_code == 2
    assert f"--vgg-weights points to {tmp_path / 'nope.pth'}, which is not a file" in missing.stderr


def test_inception_score_needs_ten_images_and_says_so_before_any_work(folders, inception_weights):
    result = invoke(["eval", *folder_sets(folders, 5), "--weights", inception_weights,
                     "--metrics", "is", "--json"])  # fmt: skip
    assert result.exit_code == 2 and "at least 10 generated images (got 5)" in result.stderr


def test_a_missing_device_fails_first_before_any_image_is_read(folders):
    """--device is resolved before the image folders are listed or decoded: the device error comes
    first, even when the folders would fail too (here: fewer generated images than --samples)."""
    result = invoke(["eval", *folder_sets(folders, samples=N + 5), "--device", "cuda:99", "--json"])
    assert result.exit_code == 2
    assert "--device cuda:99 was asked for" in result.stderr
    assert "generated" not in result.stderr
