"""``diffkit eval`` against hostile or odd inputs: crafted weights files, 16-bit PNGs, non-UTF-8 and
markup file names, unwritable outputs, broken or linked cache entries, non-square images.

Most tests use a tiny TorchScript stand-in for clean-fid's Inception (real FID/KID arithmetic, a network
that runs in milliseconds); the weights tests use torch-fidelity's real InceptionV3 architecture.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import draw_face, write_face_folder
from diffkit.metrics.features import build_inception, build_vgg16
from diffkit.metrics.weights import INCEPTION_ENV, TORCH_FIDELITY_INCEPTION, VGG16_ENV, resolve_weights
from diffkit.testing.inception import calibration_faces, make_inception_weights

N = 8

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.:FutureWarning")


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
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-inception") / "tiny-inception.pt"
    torch.jit.script(_TinyTorchScriptInception().eval()).save(str(path))
    return path


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory) -> Path:
    return make_inception_weights(tmp_path_factory.mktemp("inception-weights") / "inception-test.pth")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hardening-faces")
    write_face_folder(root / "generated", N, size=32, seed=1)
    write_face_folder(root / "reference", N, size=32, seed=2)
    return {"root": root, "generated": root / "generated", "reference": root / "reference"}


def invoke(args: list, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [os.fspath(arg) if isinstance(arg, Path) else str(arg) for arg in args],
                              env=env)  # fmt: skip


def tiny_args(generated: Path, reference: Path, tiny: Path, tmp: Path, n: int = N, metrics: str = "fid,kid"):
    return ["eval", "--generated", generated, "--reference", reference, "--samples", n, "--engine",
            "clean-fid", "--weights", tiny, "--metrics", metrics, "--bootstrap", 0,
            "--cache-dir", tmp / "cache", "--report", tmp / "report.html"]  # fmt: skip


def eval_json(args: list) -> dict:
    result = invoke([*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_one_line_error(result, *phrases: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit | None)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


# --- 1. weights files are never unpickled unless they are the pinned official file --------------------


class _Payload:
    """Unpickling this creates ``marker``: what a crafted weights file would do with a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.fixture
def evil_weights(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": _Payload(marker)}, path)
    # the file really is dangerous: an unrestricted load runs the payload
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


@pytest.mark.parametrize("how", ["option", "environment", "vgg-option", "vgg-environment"])
def test_a_crafted_pickle_as_weights_is_refused_without_running_it(faces, tmp_path, evil_weights, how):
    path, marker = evil_weights
    args = ["eval", "--generated", faces["generated"], "--reference", faces["reference"], "--samples", N,
            "--bootstrap", 0, "--cache-dir", tmp_path / "cache", "--report", tmp_path / "r.html",
            "--json"]  # fmt: skip
    env = {}
    if how == "option":
        args += ["--metrics", "fid", "--weights", path]
    elif how == "environment":
        args += ["--metrics", "fid"]
        env[INCEPTION_ENV] = str(path)
    elif how == "vgg-option":
        args += ["--metrics", "prc", "--vgg-weights", path]
    else:
        args += ["--metrics", "prc"]
        env[VGG16_ENV] = str(path)
    result = invoke(args, env=env)
    assert not marker.exists(), "the crafted weights file ran code"
    assert_one_line_error(result, "refusing", "weights_only=True")
    assert result.stdout == ""
    assert not list((tmp_path / "cache").glob("*.npz"))  # refused before any feature was extracted


class _ShellPayload:
    """A raw pickle (protocol 4, no torch zip container) whose unpickling would run a command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("network", ["inception", "vgg16", "dinov2"])
def test_a_raw_pickle_is_refused_in_one_line_without_torchs_warning_or_advice(faces, tmp_path, network):
    import pickle

    marker, path = tmp_path / "pwned", tmp_path / "raw.pth"
    path.write_bytes(pickle.dumps({"weight": _ShellPayload(marker)}, protocol=4))
    option, metrics = {
        "inception": (["--weights", path], "fid"),
        "vgg16": (["--vgg-weights", path], "prc"),
        "dinov2": (["--features", "dinov2", "--dinov2-weights", path], "fid"),
    }[network]
    args = ["eval", "--generated", faces["generated"], "--reference", faces["reference"], "--samples", N,
            "--metrics", metrics, *option, "--bootstrap", 0, "--cache-dir", tmp_path / "cache",
            "--report", tmp_path / "r.html", "--json"]  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:  # pytest would capture them before stderr does
        warnings.simplefilter("always")
        result = invoke(args)
    assert not marker.exists(), "the crafted weights file ran code"
    # torch warns "Detected pickle protocol 4" before refusing: printed, it precedes the refusal
    assert not [str(w.message) for w in caught if "pickle" in str(w.message)]
    line = assert_one_line_error(result, "refusing", "not a plain state dict of tensors")
    # the fact torch found, not its advice (which includes re-loading with weights_only=False)
    assert "Unsupported" in line and "Please file an issue" not in line
    assert "weights_only=False" not in line and "will likely succeed" not in line


def test_a_crafted_pickle_for_the_clean_fid_engine_is_not_run_either(faces, tmp_path, evil_weights):
    path, marker = evil_weights
    result = invoke([*tiny_args(faces["generated"], faces["reference"], path, tmp_path), "--json"])
    assert not marker.exists()
    assert_one_line_error(result, "cannot load the clean-fid TorchScript Inception")


def _features_of(extractor) -> np.ndarray:
    return extractor(calibration_faces(n=2, size=32))["2048"]


def test_a_plain_state_dict_and_its_safetensors_copy_load_safely_and_give_torch_fidelitys_features(
    inception_weights, tmp_path
):
    from safetensors.torch import save_file
    from torch_fidelity.utils import create_feature_extractor

    cpu = torch.device("cpu")
    resolved = resolve_weights(TORCH_FIDELITY_INCEPTION, inception_weights)
    assert not resolved.official
    ours = _features_of(build_inception("torch-fidelity", resolved, cpu))
    reference_model = create_feature_extractor(
        "inception-v3-compat", ["2048"], cuda=False, verbose=False,
        feature_extractor_weights_path=str(inception_weights),
    )  # fmt: skip
    with torch.no_grad():
        images = torch.from_numpy(calibration_faces(n=2, size=32).transpose(0, 3, 1, 2).copy())
        theirs = reference_model(images)[0].numpy()
    assert np.abs(ours).max() > 0 and np.array_equal(ours, theirs)

    copy = tmp_path / "inception-test.safetensors"
    save_file(torch.load(inception_weights, weights_only=True), str(copy))
    from_safetensors = _features_of(build_inception("torch-fidelity", resolve_weights(
        TORCH_FIDELITY_INCEPTION, copy), cpu))  # fmt: skip
    assert np.array_equal(from_safetensors, theirs)

    # the pinned file (here: a spec pinned to this file) takes torch-fidelity's own path
    pinned = dataclasses.replace(TORCH_FIDELITY_INCEPTION, sha256=resolved.sha256)
    official = resolve_weights(pinned, inception_weights)
    assert official.official
    assert np.array_equal(_features_of(build_inception("torch-fidelity", official, cpu)), theirs)


def test_a_safe_pickle_that_is_not_a_state_dict_is_refused_in_one_line(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(DiffkitError, match="not a state dict of tensors") as info:
        build_vgg16(resolve_weights(TORCH_FIDELITY_INCEPTION, path), torch.device("cpu"))
    assert "\n" not in str(info.value)


# --- 2. 16-bit PNGs are scaled, not clamped to white ---------------------------------------------------


def _png_rgb16(path: Path, rgb8: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one) holding ``rgb8 * 257``."""
    height, width, _ = rgb8.shape
    values = (rgb8.astype(">u2") * 257).reshape(height, width * 3)
    raw = b"".join(b"\0" + row.tobytes() for row in values)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))  # fmt: skip


def test_16_bit_pngs_give_the_same_features_and_fid_as_their_8_bit_copies(faces, tmp_path, tiny):
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    eight.mkdir()
    sixteen.mkdir()
    for index in range(N):
        face = draw_face(np.random.default_rng([5, index]), 32)
        if index % 2:  # greyscale: Pillow reads a 16-bit grey PNG as mode I;16
            grey = np.asarray(face.convert("L"))
            Image.fromarray(grey).save(eight / f"f{index}.png")
            Image.fromarray(grey.astype(np.uint16) * 257).save(sixteen / f"f{index}.png")
            with Image.open(sixteen / f"f{index}.png") as check:
                assert check.mode.startswith("I")
        else:  # 16-bit RGB
            rgb = np.asarray(face.convert("RGB"))
            Image.fromarray(rgb).save(eight / f"f{index}.png")
            _png_rgb16(sixteen / f"f{index}.png", rgb)
    results = {}
    for name, folder in (("eight", eight), ("sixteen", sixteen)):
        results[name] = eval_json(tiny_args(folder, faces["reference"], tiny, tmp_path / f"run-{name}"))
    assert results["eight"]["fid"] > 1
    assert results["sixteen"]["fid"] == pytest.approx(results["eight"]["fid"], rel=1e-6)
    assert results["sixteen"]["kid_mean"] == pytest.approx(results["eight"]["kid_mean"], rel=1e-6, abs=1e-9)


def test_an_undecodable_image_stops_eval_naming_the_file(faces, tmp_path, tiny):
    generated = tmp_path / "generated"
    write_face_folder(generated, N, size=32, seed=1)
    broken = generated / "face-00003.png"
    broken.write_bytes(broken.read_bytes()[:120])  # the header survives, the pixels do not
    result = invoke([*tiny_args(generated, faces["reference"], tiny, tmp_path), "--json"])
    assert_one_line_error(result, "cannot read image", "face-00003.png")


@pytest.mark.parametrize("content", [b"", b"hello, not an image"], ids=["empty", "not-an-image"])
@pytest.mark.parametrize("where", ["first", "later"])  # the first file is opened for the size
def test_an_empty_or_unidentifiable_png_stops_eval_in_one_line_naming_it(
    faces, tmp_path, tiny, content, where
):
    generated = tmp_path / "generated"
    write_face_folder(generated, N, size=32, seed=1)
    broken = generated / ("face-00000.png" if where == "first" else "face-00005.png")
    broken.write_bytes(content)
    result = invoke([*tiny_args(generated, faces["reference"], tiny, tmp_path), "--json"])
    reason = (
        "the file is empty (0 bytes)"
        if not content
        else f"not an image PIL can identify ({len(content)} bytes)"
    )
    line = assert_one_line_error(result, "cannot read image", broken.name, reason)
    assert "BytesIO" not in line and "object at 0x" not in line and "'" not in line


# --- 3 and 6. odd file names: non-UTF-8 bytes and rich markup ------------------------------------------


def test_non_utf8_file_names_are_evaluated_and_shown_escaped(faces, tmp_path, tiny):
    generated = tmp_path / os.fsdecode(b"gen-\xff")
    write_face_folder(generated, N, size=32, seed=1)
    odd = generated / os.fsdecode(b"face-\xe9\xff.png")
    (generated / "face-00000.png").rename(odd)
    args = tiny_args(generated, faces["reference"], tiny, tmp_path, metrics="fid,kid,memorization")
    data = eval_json(args)
    assert data["n_generated"] == N and data["fid"] > 1
    assert data["generated"] == str(tmp_path / "gen-\\xff")  # shown escaped, not as a lone surrogate
    text = invoke(args)
    assert text.exit_code == 0, text.output
    assert "report:" in text.stdout
    html = Path(data["report_html"]).read_text(encoding="utf-8")
    assert "gen-\\xff" in html


def test_rich_markup_in_paths_is_printed_as_text(faces, tmp_path, tiny):
    # "x[" / "]" as folders: the path text holds "[/]", the closing tag rich would act on
    weights = tmp_path / "[red]w[" / "]tiny.pt"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(tiny.read_bytes())
    report = tmp_path / "[bold]x[" / "]" / "r.html"
    args = tiny_args(faces["generated"], faces["reference"], weights, tmp_path)
    args[args.index("--report") + 1] = report
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert f"report: {report}" in result.stdout
    assert f"Inception weights {weights} (sha256" in result.stdout  # the "not the official file" caveat
    assert report.is_file()


# --- 4. unwritable outputs fail before the expensive work ----------------------------------------------


@pytest.mark.parametrize("which", ["--report", "--cache-dir"])
def test_an_unwritable_report_or_cache_fails_in_one_line_before_extraction(faces, tmp_path, tiny, which):
    blocker = tmp_path / "somefile.txt"
    blocker.write_text("a file, so nothing can be created below it, even as root")
    args = tiny_args(faces["generated"], faces["reference"], tiny, tmp_path)
    args[args.index(which) + 1] = blocker / ("report.html" if which == "--report" else "cache")
    result = invoke([*args, "--json"])
    what = "the report" if which == "--report" else "the feature cache"
    assert_one_line_error(result, f"cannot write {what}", "somefile.txt")
    assert not list(tmp_path.rglob("*.npz"))  # no feature was extracted (or cached) first


# --- 5 and 7. broken and linked cache entries are misses, never followed ------------------------------


def _first_run(faces, tmp_path, tiny) -> tuple[list, dict, list[Path]]:
    args = tiny_args(faces["generated"], faces["reference"], tiny, tmp_path)
    first = eval_json(args)
    entries = sorted((tmp_path / "cache").glob("*.npz"))
    assert len(entries) == 2 and first["feature_cache"]["inception_generated"] == "miss"
    return args, first, entries


def test_a_truncated_cache_entry_is_recomputed_and_rewritten(faces, tmp_path, tiny):
    args, first, entries = _first_run(faces, tmp_path, tiny)
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    again = eval_json(args)
    assert again["feature_cache"] == {"inception_generated": "miss", "inception_reference": "miss"}
    assert again["features_extracted"] == {"inception_generated": N, "inception_reference": N}
    assert again["fid"] == first["fid"] and again["kid_mean"] == first["kid_mean"]
    third = eval_json(args)  # rewritten whole: a hit again
    assert third["feature_cache"] == {"inception_generated": "hit", "inception_reference": "hit"}


def test_a_cache_entry_that_is_a_symlink_is_neither_read_nor_written_through(faces, tmp_path, tiny):
    args, first, entries = _first_run(faces, tmp_path, tiny)
    outside = tmp_path / "outside"
    outside.mkdir()
    targets = []
    for entry in entries:
        with np.load(entry) as data:
            bogus = {name: np.zeros_like(data[name]) + 7 for name in data.files}
        target = outside / entry.name
        np.savez(target, **bogus)
        entry.unlink()
        entry.symlink_to(target)
        targets.append((target, target.read_bytes()))
    again = eval_json(args)
    assert again["feature_cache"] == {"inception_generated": "miss", "inception_reference": "miss"}
    assert again["fid"] == first["fid"]  # not the planted features
    for entry, (target, content) in zip(entries, targets, strict=True):
        assert not entry.is_symlink() and entry.is_file()
        assert target.read_bytes() == content  # the link's target was not overwritten


# --- 8. non-square images are centre-cropped on both sides ---------------------------------------------


def test_non_square_generated_and_reference_equal_cropping_by_hand(tmp_path, tiny):
    """Generated 40x56 (face in the middle 40x40, noise bands above and below) and reference 80x60.

    Cropping and resizing by hand and evaluating the squares must give the very same numbers: a
    squashed (uncropped) image or an off-centre crop changes them.
    """
    rng = np.random.default_rng(0)
    raw, squares = {}, {}
    for role in ("generated", "reference"):
        raw[role], squares[role] = tmp_path / f"{role}-raw", tmp_path / f"{role}-square"
        raw[role].mkdir()
        squares[role].mkdir()
    for index in range(N):
        face = np.asarray(draw_face(np.random.default_rng([1, index]), 40).convert("RGB"))
        tall = rng.integers(0, 256, (56, 40, 3), dtype=np.uint8)
        tall[8:48] = face  # (56 - 40) // 2 = 8 rows above
        Image.fromarray(tall).save(raw["generated"] / f"g{index}.png")
        Image.fromarray(tall[8:48]).save(squares["generated"] / f"g{index}.png")

        wide = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
        wide.paste(draw_face(np.random.default_rng([2, index]), 60).convert("RGB"), (10, 0))
        wide.save(raw["reference"] / f"r{index}.png")
        by_hand = wide.crop((10, 0, 70, 60)).resize((40, 40), Image.Resampling.LANCZOS)
        by_hand.save(squares["reference"] / f"r{index}.png")
    ours = eval_json(tiny_args(raw["generated"], raw["reference"], tiny, tmp_path / "raw"))
    expected = eval_json(tiny_args(squares["generated"], squares["reference"], tiny, tmp_path / "square"))
    assert ours["resolution"] == 40 and expected["fid"] > 1
    assert ours["fid"] == expected["fid"]
    assert ours["kid_mean"] == expected["kid_mean"]
