"""Procedural faces: deterministic per seed, varied across seeds, folders that extend stably."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from diffkit.fakesite.faces import draw_face, write_face_folder


def _pixels(seed: int, size: int) -> np.ndarray:
    return np.asarray(draw_face(np.random.default_rng(seed), size))


def test_same_seed_gives_identical_pixels_and_other_seeds_differ() -> None:
    first, again = _pixels(3, 64), _pixels(3, 64)
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again)
    others = [_pixels(seed, 64) for seed in range(4, 10)]
    assert all(np.abs(first.astype(int) - other).mean() > 10 for other in others)


def test_large_size_is_the_same_face_upscaled() -> None:
    small = _pixels(11, 64).astype(np.float64)
    big = np.asarray(Image.fromarray(_pixels(11, 1024)).resize((64, 64), Image.Resampling.BOX), np.float64)
    assert big.shape == small.shape
    centred_small, centred_big = small - small.mean(), big - big.mean()
    norms = np.sqrt((centred_small**2).sum() * (centred_big**2).sum())
    correlation = (centred_small * centred_big).sum() / norms
    assert correlation > 0.97


def test_face_is_centred_like_ffhq() -> None:
    # The face oval is skin: the centre pixel (nose area) differs from the top corners (background).
    for seed in range(5):
        pixels = _pixels(seed, 128).astype(int)
        centre_column = pixels[40:90, 64]
        assert pixels.shape == (128, 128, 3)
        assert np.abs(centre_column.mean(axis=0) - pixels[:6, :6].reshape(-1, 3).mean(axis=0)).sum() > 5


def test_write_face_folder_is_deterministic_and_extends_stably(tmp_path) -> None:
    first = write_face_folder(tmp_path / "a", 3, size=32, seed=5)
    assert [path.name for path in first] == ["face-00000.png", "face-00001.png", "face-00002.png"]
    longer = write_face_folder(tmp_path / "b", 5, size=32, seed=5)
    digest = [hashlib.sha256(path.read_bytes()).hexdigest() for path in longer]
    assert digest[:3] == [hashlib.sha256(path.read_bytes()).hexdigest() for path in first]
    assert len(set(digest)) == 5
    with Image.open(longer[4]) as image:
        assert image.size == (32, 32) and image.mode == "RGB"
    other_seed = write_face_folder(tmp_path / "c", 1, size=32, seed=6)
    assert hashlib.sha256(other_seed[0].read_bytes()).hexdigest() != digest[0]


def test_write_face_folder_jpeg_and_bad_format(tmp_path) -> None:
    paths = write_face_folder(tmp_path, 2, size=48, fmt="jpg")
    assert [path.name for path in paths] == ["face-00000.jpg", "face-00001.jpg"]
    assert paths[0].read_bytes()[:3] == b"\xff\xd8\xff"
    with pytest.raises(ValueError, match="fmt"):
        write_face_folder(tmp_path, 1, fmt="gif")
