"""Reference statistics files: ``--save-stats`` writes them, ``--reference ref.npz`` reads diffkit's and
pytorch-fid's, FID from a file equals FID from the folder it was made from, and a file made another
way is refused. End-to-end runs use a tiny TorchScript stand-in for clean-fid's Inception (real
arithmetic, a network that runs in milliseconds)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics.fid import (
    GaussianStats,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_stats,
    frechet_distance_to_stats,
)
from diffkit.metrics.stats_file import check_matches, load_stats, save_stats

N = 12
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")

IDENTITY = {
    "features": "inception",
    "extractor": "clean-fid/x",
    "resize": "clean",
    "weights_sha256": "ab" * 32,
    "resolution": 32,
}


def _features(seed: int, n: int, dims: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dims, dims)) / np.sqrt(dims)  # correlated features, like a network's
    return (rng.standard_normal((n, dims)) @ mixing + shift).astype(np.float32)


@pytest.mark.parametrize(("n", "m"), [(30, 40), (300, 200), (30, 200)])  # both, neither, one rank-deficient
def test_fid_from_a_saved_file_equals_fid_from_the_features(tmp_path: Path, n: int, m: int) -> None:
    generated, reference = _features(1, n, 64, 0.3), _features(2, m, 64)
    save_stats(tmp_path / "ref.npz", reference, dict(IDENTITY, dims=64))
    loaded = load_stats(tmp_path / "ref.npz")
    assert loaded.source == "diffkit" and loaded.n == m and loaded.meta["dims"] == 64
    assert loaded.meta["weights_sha256"] == IDENTITY["weights_sha256"]
    folder = frechet_distance(generated, reference)
    assert folder > 1.0  # a real distance, not ~0
    assert frechet_distance_to_stats(generated, loaded.stats) == pytest.approx(folder, rel=1e-6)
    # and both equal the textbook formula on float64 statistics
    textbook = frechet_distance_from_stats(feature_statistics(generated), feature_statistics(reference))
    assert folder == pytest.approx(textbook, rel=1e-5)


def test_a_pytorch_fid_file_loads_and_gives_the_same_fid(tmp_path: Path) -> None:
    generated, reference = _features(3, 50, 32, 0.5), _features(4, 60, 32)
    mu, sigma = np.mean(reference.astype(np.float64), axis=0), np.cov(reference, rowvar=False)
    np.savez(tmp_path / "pytorch_fid.npz", mu=mu, sigma=sigma)  # what pytorch-fid --save-stats writes
    loaded = load_stats(tmp_path / "pytorch_fid.npz")
    assert loaded.source == "pytorch-fid" and loaded.meta is None and loaded.n is None
    expected = frechet_distance_from_stats(feature_statistics(generated), GaussianStats(mu, sigma, 60))
    assert frechet_distance_to_stats(generated, loaded.stats) == pytest.approx(expected, rel=1e-6)
    check_matches(loaded, dict(IDENTITY, dims=32))  # Inception space: accepted, with its caveat
    with pytest.raises(DiffkitError, match="pytorch-fid statistics file .* --features dinov2 needs diffkit"):
        check_matches(loaded, dict(IDENTITY, dims=32, features="dinov2"))
    with pytest.raises(DiffkitError, match="holds 32-d statistics; Inception pool3 features are 2048-d"):
        check_matches(loaded, dict(IDENTITY, dims=2048))  # e.g. pytorch-fid --dims 64/192/768


@pytest.mark.parametrize(
    ("field", "other"),
    [("features", "dinov2"), ("extractor", "torch-fidelity/inception-v3-compat"), ("resize", "tf1"),
     ("weights_sha256", "cd" * 32), ("resolution", 64), ("dims", 1024)],
)  # fmt: skip
def test_a_file_made_another_way_is_refused_naming_the_field(tmp_path: Path, field: str, other) -> None:
    save_stats(tmp_path / "ref.npz", _features(5, 20, 8), dict(IDENTITY, dims=8))
    expected = {**IDENTITY, "dims": 8, field: other}
    with pytest.raises(DiffkitError) as caught:
        check_matches(load_stats(tmp_path / "ref.npz"), expected)
    assert f"{field}: file" in str(caught.value) and repr(other) in str(caught.value)
    check_matches(load_stats(tmp_path / "ref.npz"), dict(IDENTITY, dims=8))  # the matching one passes


def test_odd_files_are_refused_in_one_line_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "pickled.npz", mu=np.array([object()], dtype=object), sigma=np.eye(1))
    with pytest.raises(DiffkitError, match="refusing reference statistics"):
        load_stats(tmp_path / "pickled.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DiffkitError, match="not an .npz file"):
        load_stats(tmp_path / "text.npz")
    np.savez(tmp_path / "nomu.npz", sigma=np.eye(2))
    with pytest.raises(DiffkitError, match="has no mu"):
        load_stats(tmp_path / "nomu.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(2))
    with pytest.raises(DiffkitError, match="do not match"):
        load_stats(tmp_path / "shape.npz")


# --- end to end through the CLI ----------------------------------------------------------------------


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


def _tiny(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    torch.jit.script(_TinyTorchScriptInception().eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stats")
    write_face_folder(root / "generated", N, size=32, seed=1)
    write_face_folder(root / "reference", N, size=32, seed=2)
    write_face_folder(root / "generated16", N, size=16, seed=1)
    return {"root": root, "tiny": _tiny(root / "tiny.pt", 0), "other": _tiny(root / "other.pt", 1)}


def invoke(args: list):
    return CliRunner().invoke(app, [os.fspath(a) if isinstance(a, Path) else str(a) for a in args])


def run_eval(setup: dict, reference: Path, *extra, generated: str = "generated", weights: str = "tiny"):
    root = setup["root"]
    args = ["eval", "--generated", root / generated, "--reference", reference, "--samples", N,
            "--engine", "clean-fid", "--weights", setup[weights], "--bootstrap", 20,
            "--cache-dir", root / "cache", "--report", root / "report.html", *extra, "--json"]  # fmt: skip
    return invoke(args)


def assert_one_line_error(result, *phrases: str) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def test_save_stats_then_reference_the_file_gives_the_folders_fid(setup) -> None:
    root = setup["root"]
    stats = root / "ref-stats.npz"
    folder = run_eval(setup, root / "reference", "--metrics", "fid,kid,is", "--save-stats", stats)
    assert folder.exit_code == 0, folder.output
    by_folder = json.loads(folder.stdout)
    assert by_folder["stats_saved"] == str(stats)
    meta = load_stats(stats).meta
    assert meta["n"] == N and meta["features"] == "inception" and meta["resolution"] == 32
    assert meta["extractor"] == by_folder["feature_space"]["extractor"] and meta["dims"] == 2048
    assert meta["weights_sha256"] == by_folder["weights"]["inception"]["sha256"]
    assert "Lanczos to 32 px" in meta["preparation"] and meta["resize"] == by_folder["resize"]

    result = run_eval(setup, stats)  # default metrics fid,kid,is: KID cannot come from statistics
    assert result.exit_code == 0, result.output
    by_file = json.loads(result.stdout)
    assert by_file["fid"] == pytest.approx(by_folder["fid"], rel=1e-6) and by_folder["fid"] > 1
    assert by_file["fid_label"] == f"FID@{N} (reference {N})"
    assert by_file["is_mean"] == by_folder["is_mean"]  # IS reads the generated set only
    assert by_file["metrics"] == ["fid", "is"] and "kid_mean" not in by_file
    assert "pairs of images" in by_file["unavailable"]["kid"]
    caveats = "\n".join(by_file["caveats"])
    assert "KID not computed: KID is an average of a kernel over pairs of images" in caveats
    assert "The reference is the statistics file" in caveats
    assert by_file["reference_stats"]["source"] == "diffkit" and by_file["n_reference"] == N
    # the bootstrap resamples the generated side against the file's statistics, as against the folder
    assert by_file["fid_ci95"] == pytest.approx(by_folder["fid_ci95"], rel=1e-6)

    only_kid = run_eval(setup, stats, "--metrics", "kid,prc")
    assert_one_line_error(only_kid, "statistics file", "pairs of images", "k-nearest-neighbour radius")


def test_a_mismatched_comparison_is_refused(setup) -> None:
    root = setup["root"]
    stats = root / "mismatch-stats.npz"
    made = run_eval(setup, root / "reference", "--metrics", "fid", "--save-stats", stats)
    assert made.exit_code == 0, made.output
    other_weights = run_eval(setup, stats, "--metrics", "fid", weights="other")
    assert_one_line_error(other_weights, "made differently", "weights_sha256: file")
    other_size = run_eval(setup, stats, "--metrics", "fid", generated="generated16")
    assert_one_line_error(other_size, "made differently", "resolution: file 32, now 16")


def test_a_pytorch_fid_file_is_read_with_its_caveat(setup) -> None:
    root = setup["root"]
    stats = root / "for-pytorch-fid.npz"
    folder = json.loads(run_eval(setup, root / "reference", "--metrics", "fid", "--save-stats", stats).stdout)
    diffkit_file = load_stats(stats)
    np.savez(root / "pytorch_fid.npz", mu=diffkit_file.stats.mu, sigma=diffkit_file.stats.sigma)
    result = run_eval(setup, root / "pytorch_fid.npz", "--metrics", "fid")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["fid"] == pytest.approx(folder["fid"], rel=1e-6)
    assert data["fid_label"] == f"FID@{N} (reference statistics, N unknown)"
    assert data["reference_stats"]["source"] == "pytorch-fid" and data["n_reference"] == 0
    assert any("image preparation (resize" in note and "are unknown" in note for note in data["caveats"])
    assert "reference statistics, N unknown" in data["fid_headline"]


def test_save_stats_refuses_a_statistics_reference_and_a_wrong_suffix(setup) -> None:
    root = setup["root"]
    stats = root / "ref-stats.npz"
    if not stats.exists():
        save_stats(stats, _features(1, 4, 4), dict(IDENTITY, dims=4))
    again = run_eval(setup, stats, "--save-stats", root / "again.npz")
    assert_one_line_error(again, "needs reference images")
    text = run_eval(setup, root / "reference", "--save-stats", root / "s.txt")
    assert_one_line_error(text, "must name an .npz")
