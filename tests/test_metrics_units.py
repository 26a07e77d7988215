"""Weights lookup, image selection/preprocessing and the feature-cache key, without running a network."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading

import numpy as np
import pytest
from PIL import Image

from diffkit.dataset.listing import MOVE_LOG_NAME
from diffkit.errors import DiffkitError
from diffkit.eval.config import EvalConfig, parse_metrics
from diffkit.fakesite.faces import write_face_folder
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


def test_lookup_order_is_option_then_environment_then_engine_cache(empty_caches, monkeypatch):
    official = b"stands in for the official file"
    spec = dataclasses.replace(TORCH_FIDELITY_INCEPTION, sha256=hashlib.sha256(official).hexdigest())
    spec.cache_path().parent.mkdir(parents=True)
    spec.cache_path().write_bytes(official)
    assert resolve_weights(spec) == ResolvedWeights(spec.cache_path(), spec.sha256, "cache", True)
    env_file, option_file = empty_caches / "env.pth", empty_caches / "option.pth"
    env_file.write_bytes(b"environment")
    option_file.write_bytes(official)  # the pinned content under another name is official too
    monkeypatch.setenv(INCEPTION_ENV, str(env_file))
    assert resolve_weights(spec) == ResolvedWeights(
        env_file, hashlib.sha256(b"environment").hexdigest(), "environment", False
    )
    assert resolve_weights(spec, option_file) == ResolvedWeights(option_file, spec.sha256, "option", True)


@pytest.fixture
def weights_server(tmp_path):
    """A static HTTP server on 127.0.0.1 over ``tmp_path / "site"``; counts the GET requests."""
    (tmp_path / "site").mkdir()
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(tmp_path / "site"), **kwargs)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield tmp_path / "site", f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_happens_once_into_the_engine_cache_and_is_checked_against_the_pin(
    empty_caches, weights_server
):
    site, base_url, requests = weights_server
    payload = np.random.default_rng(0).bytes(3 << 20)  # several read chunks
    (site / "w.pth").write_bytes(payload)
    spec = dataclasses.replace(
        TORCH_FIDELITY_INCEPTION, url=f"{base_url}/w.pth", sha256=hashlib.sha256(payload).hexdigest()
    )
    first = resolve_weights(spec, allow_download=True)
    assert first == ResolvedWeights(spec.cache_path(), spec.sha256, "download", True)
    assert spec.cache_path().read_bytes() == payload
    second = resolve_weights(spec, allow_download=True)
    assert second.source == "cache" and requests == ["/w.pth"]

    tampered = dataclasses.replace(spec, filename="other.pth", sha256="0" * 64)
    with pytest.raises(DiffkitError, match="not saved") as info:
        resolve_weights(tampered, allow_download=True)
    assert spec.sha256 in str(info.value) and "\n" not in str(info.value)
    assert sorted(p.name for p in spec.cache_dir().iterdir()) == [spec.filename]  # no partial file left
    missing = dataclasses.replace(spec, filename="absent.pth", url=f"{base_url}/absent.pth")
    with pytest.raises(DiffkitError, match="download failed: HTTP 404") as info:
        resolve_weights(missing, allow_download=True)
    assert "absent.pth" in str(info.value) and spec.sha256 in str(info.value)


def test_select_images_refuses_fewer_than_asked_and_skips_quarantine(tmp_path):
    write_face_folder(tmp_path / "set", 5, size=32)
    write_face_folder(tmp_path / "set" / "quarantine", 2, size=32, seed=9)
    (tmp_path / "set" / "quarantine" / MOVE_LOG_NAME).write_text("")  # a real dedupe quarantine
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
    expected = np.asarray(image.crop((10, 0, 50, 40)).resize((16, 16), Image.Resampling.LANCZOS))
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


def test_eval_prepares_images_exactly_as_the_training_cache(tmp_path):
    """The reference set is 'the training data': eval must see the same pixels the model trained on
    (EXIF orientation, JPEG draft decode, centre crop, Lanczos), for a rotated, non-square JPEG."""
    from diffkit.dataset.decode import square_pixels as decode_image

    pixels = np.random.default_rng(1).integers(0, 256, (300, 420, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise on display
    Image.fromarray(pixels).save(tmp_path / "rotated.jpg", quality=90, exif=exif)
    out = load_images([tmp_path / "rotated.jpg"], 32)
    assert np.array_equal(out[0], decode_image(tmp_path / "rotated.jpg", 32))
    upright = load_images([tmp_path / "rotated.jpg"], 300)[0]
    assert upright.shape == (300, 300, 3)
