"""Weights lookup, image selection/preprocessing and the feature-cache key, without running a network."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from diffkit.errors import DiffkitError
from diffkit.metrics.config import EvalConfig, parse_metrics
from diffkit.metrics.features import Extractor, cache_key
from diffkit.metrics.images import describe_set, list_images, load_images, select_images, to_uint8
from diffkit.metrics.weights import (
    CLEAN_FID_INCEPTION,
    INCEPTION_ENV,
    OFFLINE_ENV,
    TORCH_FIDELITY_INCEPTION,
    VGG16,
    ResolvedWeights,
    resolve_weights,
)
from diffkit.testing.faces import write_face_folder


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point torch hub at an empty folder; no environment override; downloads disabled."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.delenv(INCEPTION_ENV, raising=False)
    monkeypatch.setenv(OFFLINE_ENV, "1")
    return tmp_path


def test_pinned_hashes_agree_with_the_file_names():
    # torch hub names carry the first 8 hex digits of the sha256 of the file
    assert TORCH_FIDELITY_INCEPTION.filename.endswith(TORCH_FIDELITY_INCEPTION.sha256[:8] + ".pth")
    assert VGG16.filename.endswith(VGG16.sha256[:8] + ".pth")
    for spec in (TORCH_FIDELITY_INCEPTION, CLEAN_FID_INCEPTION, VGG16):
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0


def test_missing_weights_offline_names_file_hash_and_place(empty_caches):
    with pytest.raises(DiffkitError) as info:
        resolve_weights(TORCH_FIDELITY_INCEPTION)
    message = str(info.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert TORCH_FIDELITY_INCEPTION.sha256 in message
    assert str(empty_caches / "torch-home" / "hub" / "checkpoints") in message
    assert "\n" not in message


def test_explicit_and_environment_weights_are_hashed_and_marked_unofficial(empty_caches, monkeypatch):
    weights = empty_caches / "my.pth"
    weights.write_bytes(b"not the official file")
    resolved = resolve_weights(TORCH_FIDELITY_INCEPTION, weights)
    sha = hashlib.sha256(b"not the official file").hexdigest()
    assert resolved == ResolvedWeights(weights, sha, "option", False)
    monkeypatch.setenv(INCEPTION_ENV, str(weights))
    assert resolve_weights(TORCH_FIDELITY_INCEPTION).source == "environment"
    with pytest.raises(DiffkitError, match="not a file"):
        resolve_weights(TORCH_FIDELITY_INCEPTION, empty_caches / "absent.pth")


def test_a_corrupt_file_in_the_engine_cache_is_refused(empty_caches):
    cached = TORCH_FIDELITY_INCEPTION.cache_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"partial download")
    with pytest.raises(DiffkitError, match="expected " + TORCH_FIDELITY_INCEPTION.sha256):
        resolve_weights(TORCH_FIDELITY_INCEPTION)


def test_select_images_refuses_fewer_than_asked_and_skips_quarantine(tmp_path):
    write_face_folder(tmp_path / "set", 5, size=32)
    write_face_folder(tmp_path / "set" / "quarantine", 2, size=32, seed=9)
    write_face_folder(tmp_path / "set" / "sub", 1, size=32, seed=3)
    assert len(list_images(tmp_path / "set")) == 6  # nested folders count, quarantine does not
    assert [p.name for p in select_images(tmp_path / "set", 3, "generated")] == [
        "face-00000.png",
        "face-00001.png",
        "face-00002.png",
    ]
    with pytest.raises(DiffkitError, match="holds 6 image\\(s\\) but 10 were asked for"):
        select_images(tmp_path / "set", 10, "generated")


def test_reference_is_cropped_and_resized_to_the_generated_resolution(tmp_path):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))
    image.save(tmp_path / "wide.png")
    out = load_images([tmp_path / "wide.png"], 16)
    expected = np.asarray(image.crop((10, 0, 50, 40)).resize((16, 16), Image.Resampling.BICUBIC))
    assert out.shape == (1, 16, 16, 3) and out.dtype == np.uint8
    assert np.array_equal(out[0], expected)
    described = describe_set(tmp_path, [tmp_path / "wide.png"], 16)
    assert described.resized and described.native_sizes == {"60x40": 1}


def test_to_uint8_rounds_instead_of_flooring():
    assert to_uint8(np.array([0.4, 0.6, 254.5, 300.0, -3.0])).tolist() == [0, 1, 254, 255, 0]


class _FakeExtractor(Extractor):
    def __init__(self, sha: str, resize: str = "tf1-bilinear"):
        self.name, self.resize, self.outputs = "fake", resize, ("2048",)
        self.weights = ResolvedWeights(__file__, sha, "option", False)  # type: ignore[arg-type]


def test_cache_key_changes_with_content_weights_and_resize(tmp_path):
    write_face_folder(tmp_path / "a", 3, size=32)
    files = select_images(tmp_path / "a", None, "reference")
    base = describe_set(tmp_path / "a", files, 32)
    key = cache_key(base, _FakeExtractor("aa"))
    assert key == cache_key(describe_set(tmp_path / "a", files, 32), _FakeExtractor("aa"))
    assert key != cache_key(base, _FakeExtractor("bb"))
    assert key != cache_key(base, _FakeExtractor("aa", resize="clean"))
    assert key != cache_key(describe_set(tmp_path / "a", files, 16), _FakeExtractor("aa"))
    write_face_folder(tmp_path / "b", 1, size=32, seed=5)
    (tmp_path / "b" / "face-00000.png").replace(files[1])  # same names, one image's content changed
    assert key != cache_key(describe_set(tmp_path / "a", files, 32), _FakeExtractor("aa"))


def test_config_validation_and_metric_parsing(tmp_path):
    assert parse_metrics("FID, kid,isc,fid") == ("fid", "kid", "is")
    with pytest.raises(DiffkitError, match="unknown metric"):
        parse_metrics("fid,lpips")
    with pytest.raises(DiffkitError, match="exactly one of"):
        EvalConfig(generated=tmp_path, run=tmp_path, reference=tmp_path).validate()
    with pytest.raises(DiffkitError, match="--reference DIR is required"):
        EvalConfig(generated=tmp_path).validate()
    with pytest.raises(DiffkitError, match="--engine"):
        EvalConfig(generated=tmp_path, reference=tmp_path, engine="pytorch-fid").validate()
