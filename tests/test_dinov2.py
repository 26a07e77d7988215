"""``diffkit eval --features dinov2`` through the real DINOv2 ViT-L/14 architecture (timm), offline,
with informative weights made here (:mod:`diffkit.testing.dinov2`).

The features are checked against timm's own forward on images prepared as dgm-eval prepares them
(torchvision ``Resize((224, 224), BICUBIC)`` on a PIL image, ``ToTensor``, ImageNet ``Normalize``),
written independently here. ViT-L/14 is slow on a CPU: few, small images, one weights file per module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.fakesite.faces import write_face_folder
from diffkit.metrics import caveats as cav
from diffkit.metrics.fid import FastFrechet, frechet_distance
from diffkit.metrics.kid import kernel_distance
from diffkit.metrics.prc import manifold_scores
from diffkit.metrics.weights import DINOV2_ENV, DINOV2_VITL14, OFFLINE_ENV
from diffkit.testing.dinov2 import make_dinov2_weights

pytest.importorskip("timm")
N = 6  # > 5: precision/recall/density/coverage at k = 3 and 5 need more than k images per set
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dinov2")
    write_face_folder(root / "generated", N, size=32, seed=1)
    write_face_folder(root / "reference", N, size=32, seed=2)
    return {"root": root, "weights": make_dinov2_weights(root / "dinov2-test.safetensors", seed=0)}


def invoke(args: list, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [os.fspath(a) if isinstance(a, Path) else str(a) for a in args], env=env)


def dgm_eval_transform(image: Image.Image) -> torch.Tensor:
    """dgm-eval's DINOv2Encoder.transform (clean_resize=False), written out with torchvision."""
    import torchvision.transforms as tf

    resized = tf.Resize((224, 224), tf.InterpolationMode.BICUBIC)(image)
    return tf.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(tf.ToTensor()(resized))


def timm_features(weights: Path, folder: Path) -> np.ndarray:
    """timm's own model and forward, on dgm-eval's transform: nothing of diffkit's DINOv2 code."""
    import timm
    from safetensors.torch import load_file

    model = timm.create_model("vit_large_patch14_dinov2", pretrained=False, num_classes=0, img_size=224)
    model.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()}, strict=True)
    files = sorted(folder.glob("*.png"))
    batch = torch.stack([dgm_eval_transform(Image.open(path).convert("RGB")) for path in files])
    with torch.no_grad():
        return model.eval()(batch).numpy()


def test_preparation_equals_dgm_evals_transform(setup) -> None:
    from diffkit.metrics.dinov2 import prepare

    images = [Image.open(path).convert("RGB") for path in sorted((setup["root"] / "reference").glob("*.png"))]
    ours = prepare(np.stack([np.asarray(image) for image in images])).numpy()
    theirs = torch.stack([dgm_eval_transform(image) for image in images]).numpy()
    assert ours.shape == (N, 3, 224, 224)
    assert np.abs(ours - theirs).max() < 1e-5


def test_eval_in_dinov2_space_uses_timms_features_and_names_the_space(setup) -> None:
    root = setup["root"]
    cache = root / "cache"
    args = ["eval", "--generated", root / "generated", "--reference", root / "reference", "--samples", N,
            "--features", "dinov2", "--dinov2-weights", setup["weights"], "--metrics", "fid,kid,prc",
            "--bootstrap", 20, "--seed", 4, "--cache-dir", cache, "--report", root / "report.html",
            "--json"]  # fmt: skip
    result = invoke(args, env={OFFLINE_ENV: "1"})
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)

    # the features diffkit cached are timm's, image for image (to 1e-5 of their scale)
    cached = [np.load(path)["dinov2"] for path in sorted(cache.glob("*.npz"))]
    assert len(cached) == 2 and all(features.shape == (N, 1024) for features in cached)
    expected = timm_features(setup["weights"], root / "generated")
    gen = min(cached, key=lambda features: float(np.abs(features - expected).max()))
    ref = next(features for features in cached if features is not gen)
    assert np.abs(gen - expected).max() <= 1e-5 * np.abs(expected).max()
    assert float(np.abs(gen - ref).max()) > 0.1  # different faces, clearly different features

    # every metric computed in DINOv2 space, from those features
    assert data["features"] == "dinov2" and "inception" not in data["weights"]
    assert data["fid"] == pytest.approx(frechet_distance(gen, ref), rel=1e-9) and data["fid"] > 1
    boot = cav.fid_bootstrap(gen, FastFrechet(ref), 20, seed=5)
    interval, clipped = cav.clip_to_range(cav.percentile_interval(boot, centre=data["fid"]))
    assert data["fid_ci95"] == pytest.approx(list(interval), rel=1e-9)
    assert data["fid_ci95_clipped"] is clipped
    kid, _, _ = kernel_distance(gen, ref, 100, N)
    assert data["kid_mean"] == pytest.approx(kid, rel=1e-9)
    scores = manifold_scores(gen, ref, (3, 5))
    assert data["prc_by_k"] == {str(k): pytest.approx(scores[k].to_dict()) for k in (3, 5)}

    # every label names the space
    assert data["fid_label"] == f"FD_DINOv2@{N} (reference {N})"
    assert data["fid_headline"].startswith(f"FD_DINOv2@{N} ") and "DINOv2 ViT-L/14" in data["fid_headline"]
    assert data["prc_network"] == "DINOv2 ViT-L/14"
    caveats = "\n".join(data["caveats"])
    for phrase in (f"FD_DINOv2 is FD_DINOv2@{N} (reference {N}) in DINOv2 ViT-L/14 features",
                   f"{N} samples < 1024 feature dimensions", f"KD_DINOv2@{N} (reference {N})",
                   "FD_DINOv2 bootstrap 95% interval", "in DINOv2 ViT-L/14 features, k=3",
                   "no verified sha256 pin"):  # fmt: skip
        assert phrase in caveats, phrase
    html = (root / "report.html").read_text(encoding="utf-8")
    assert f"FD_DINOv2@{N}" in html and f"KD_DINOv2@{N}" in html and "features: DINOv2 ViT-L/14" in html


def test_missing_dinov2_weights_offline_name_the_file_and_where_to_put_it(setup, tmp_path) -> None:
    root = setup["root"]
    args = ["eval", "--generated", root / "generated", "--reference", root / "reference", "--samples", N,
            "--features", "dinov2", "--metrics", "fid", "--cache-dir", tmp_path / "c", "--json"]  # fmt: skip
    result = invoke(args, env={OFFLINE_ENV: "1", "TORCH_HOME": str(tmp_path / "hub"), DINOV2_ENV: ""})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for phrase in (DINOV2_VITL14.filename, DINOV2_VITL14.url, "--dinov2-weights", DINOV2_ENV,
                   str(tmp_path / "hub" / "hub" / "checkpoints"), "sha256"):  # fmt: skip
        assert phrase in lines[0], phrase
    assert "--weights /" not in lines[0]


def test_metas_layout_in_a_pth_loads_as_tensors_into_the_same_model(setup, tmp_path) -> None:
    """torch.hub caches Meta's file: a plain .pth (read with weights_only=True) with a mask_token."""
    from safetensors.torch import load_file

    from diffkit.metrics.dinov2 import load_dinov2
    from diffkit.metrics.weights import resolve_weights

    state = load_file(str(setup["weights"]))
    meta_layout = {**state, "mask_token": torch.zeros(1, 1024, dtype=state["cls_token"].dtype)}
    torch.save(meta_layout, tmp_path / DINOV2_VITL14.filename)
    from_meta = load_dinov2(resolve_weights(DINOV2_VITL14, tmp_path / DINOV2_VITL14.filename)).state_dict()
    assert "mask_token" not in from_meta
    for name, tensor in state.items():
        assert torch.equal(from_meta[name], tensor.float()), name
    assert from_meta.keys() == state.keys()


def test_torch_hubs_cached_file_is_found_hashed_and_not_official(tmp_path, monkeypatch) -> None:
    from diffkit.metrics.weights import file_sha256, resolve_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv(DINOV2_ENV, raising=False)
    cached = tmp_path / "hub" / "checkpoints" / DINOV2_VITL14.filename  # where torch.hub.load puts it
    cached.parent.mkdir(parents=True)
    torch.save({"cls_token": torch.zeros(1, 1, 1024)}, cached)
    found = resolve_weights(DINOV2_VITL14, None, allow_download=False)
    assert found.path == cached and found.source == "cache"
    assert found.sha256 == file_sha256(cached) and not found.official  # no pin to call it official


def test_an_unknown_feature_space_and_another_networks_weights_are_one_line_errors(tmp_path) -> None:
    from diffkit.testing.inception import make_inception_weights

    write_face_folder(tmp_path / "faces", N, size=32, seed=1)
    base = ["eval", "--generated", tmp_path / "faces", "--reference", tmp_path / "faces", "--samples", N,
            "--metrics", "fid", "--cache-dir", tmp_path / "c", "--report", tmp_path / "r.html"]  # fmt: skip
    unknown = invoke([*base, "--features", "clip"])
    assert unknown.exit_code == 2 and "--features must be one of inception, dinov2" in unknown.stderr
    inception = make_inception_weights(tmp_path / "inception.pth")
    wrong = invoke([*base, "--features", "dinov2", "--dinov2-weights", inception], env={OFFLINE_ENV: "1"})
    assert wrong.exit_code == 2, wrong.output
    lines = [line for line in wrong.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot load DINOv2 ViT-L/14 weights from" in lines[0], wrong.stderr
