"""The image cache (decode once, content-keyed, corrupt files skipped) and the device batcher."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffkit.train.cache as cache_module
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import write_face_folder
from diffkit.train.batcher import DeviceBatcher
from diffkit.train.cache import ImageCache, load_image_dataset
from diffkit.train.cache_key import ImageFile, content_key

RES = 16


def reference_pixels(path: Path, resolution: int) -> np.ndarray:
    """Independent crop + resize: full decode, center square, Lanczos."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    side = min(rgb.size)
    left, top = (rgb.width - side) // 2, (rgb.height - side) // 2
    square = rgb.crop((left, top, left + side, top + side))
    return np.asarray(square.resize((resolution, resolution), Image.Resampling.LANCZOS))


def make_folder(root: Path, n: int = 5) -> list[Path]:
    """Faces, some cropped to landscape/portrait (so the center crop matters) and in a subfolder."""
    paths = write_face_folder(root, n, size=40, seed=3)
    with Image.open(paths[1]) as image:
        image.crop((0, 6, 40, 30)).save(paths[1])  # 40x24 landscape
    nested = root / "sub" / "deeper"
    nested.mkdir(parents=True)
    with Image.open(paths[2]) as image:
        image.crop((5, 0, 31, 40)).save(nested / "portrait.png")  # 26x40 portrait
    paths[2].unlink()
    return sorted(root.rglob("*.png"))


def load(root: Path, **kwargs) -> ImageCache:
    return load_image_dataset(root, RES, progress=False, **kwargs)


def test_cache_pixels_equal_independent_crop_and_resize(tmp_path: Path) -> None:
    files = make_folder(tmp_path / "faces")
    cache = load(tmp_path / "faces")
    assert cache.files == sorted(p.relative_to(tmp_path / "faces").as_posix() for p in files)
    assert "sub/deeper/portrait.png" in cache.files
    assert isinstance(cache.images, np.memmap)
    assert cache.images.dtype == np.uint8 and cache.images.shape == (len(files), RES, RES, 3)
    assert len(cache) == len(files) and cache.skipped == [] and not cache.reused
    for index, relative in enumerate(cache.files):
        expected = reference_pixels(tmp_path / "faces" / relative, RES)
        np.testing.assert_array_equal(cache.images[index], expected)
    assert cache.cache_path.parent == (tmp_path / "faces" / ".diffkit-cache").resolve()


def test_jpeg_draft_decode_stays_close_to_full_decode(tmp_path: Path) -> None:
    # JPEGs are decoded at a reduced DCT scale (>= 2x the target) before Lanczos: close, not equal.
    paths = write_face_folder(tmp_path / "jpg", 3, size=256, seed=5, fmt="jpg")
    cache = load(tmp_path / "jpg")
    for index, path in enumerate(paths):
        difference = np.abs(cache.images[index].astype(int) - reference_pixels(path, RES).astype(int))
        assert difference.mean() < 2.0 and difference.max() < 40


def test_second_load_decodes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_folder(tmp_path)
    first = load(tmp_path)
    mtime = first.cache_path.stat().st_mtime_ns
    first_pixels = np.array(first.images)

    def refuse(job: object) -> None:
        raise AssertionError("the second load decoded an image")

    monkeypatch.setattr(cache_module, "decode_or_reason", refuse)
    second = load(tmp_path)
    assert second.reused and second.cache_path == first.cache_path
    assert second.cache_path.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(np.asarray(second.images), first_pixels)


def test_changing_one_image_invalidates_the_cache(tmp_path: Path) -> None:
    files = make_folder(tmp_path)
    first = load(tmp_path)
    target = files[0]
    with Image.open(target) as image:
        Image.eval(image.convert("RGB"), lambda v: 255 - v).save(target)
    second = load(tmp_path)
    assert not second.reused and second.content_key != first.content_key
    assert second.files == first.files
    index = second.files.index(target.relative_to(tmp_path).as_posix())
    np.testing.assert_array_equal(second.images[index], reference_pixels(target, RES))
    assert not np.array_equal(second.images[index], np.asarray(first.images[index]))
    for other in range(len(files)):
        if other != index:
            np.testing.assert_array_equal(second.images[other], np.asarray(first.images[other]))
    assert not first.cache_path.exists(), "the superseded cache should be deleted"


def test_same_size_rewrite_with_restored_mtime_still_invalidates(tmp_path: Path) -> None:
    # What rsync -t or touch -d leave behind: same size, old mtime. The ctime in the key catches it.
    files = make_folder(tmp_path)
    first = load(tmp_path)
    before = files[0].stat()
    files[0].write_bytes(files[0].read_bytes())
    os.utime(files[0], ns=(before.st_atime_ns, before.st_mtime_ns))
    assert files[0].stat().st_mtime_ns == before.st_mtime_ns
    assert files[0].stat().st_size == before.st_size
    second = load(tmp_path)
    assert not second.reused and second.content_key != first.content_key


def test_corrupt_files_are_skipped_and_listed(tmp_path: Path) -> None:
    good = write_face_folder(tmp_path, 3, size=32, seed=1, fmt="jpg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good[0].read_bytes()[:300])
    (tmp_path / "garbage.png").write_bytes(b"this is not a png")
    (tmp_path / "notes.txt").write_text("not an image, not counted")
    cache = load(tmp_path)
    assert len(cache) == 3
    assert [path for path, _ in cache.skipped] == ["garbage.png", "truncated.jpg"]
    assert all(reason for _, reason in cache.skipped)
    assert "garbage.png" not in cache.files and "truncated.jpg" not in cache.files
    assert load(tmp_path).skipped == cache.skipped  # the list survives in the cache header


@pytest.mark.parametrize("case", ["missing", "file", "empty", "no_images", "all_corrupt"])
def test_unusable_folders_give_one_line_errors(tmp_path: Path, case: str) -> None:
    target = tmp_path / "data"
    if case == "file":
        target.write_text("x")
    elif case != "missing":
        target.mkdir()
    if case == "no_images":
        (target / "readme.txt").write_text("x")
    if case == "all_corrupt":
        (target / "a.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DiffkitError) as error:
        load(target)
    message = str(error.value)
    assert "\n" not in message and str(target) in message


def test_scrape_output_reads_only_images_folder(tmp_path: Path) -> None:
    write_face_folder(tmp_path / "images" / "ab", 2, size=24, seed=7, fmt="jpg")
    write_face_folder(tmp_path / "contact-sheets", 1, size=24, seed=8)  # not training data
    sqlite3.connect(tmp_path / "manifest.sqlite").close()
    cache = load(tmp_path)
    assert cache.files == ["images/ab/face-00000.jpg", "images/ab/face-00001.jpg"]


def test_unwritable_data_folder_falls_back_to_user_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder(tmp_path / "faces")
    (tmp_path / "faces" / ".diffkit-cache").write_text("a file where the cache folder would go")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = load(tmp_path / "faces")
    assert cache.cache_path.parent == tmp_path / "home" / ".cache" / "diffkit"
    assert load(tmp_path / "faces").reused


def asymmetric_cache(n: int) -> ImageCache:
    """In-memory cache of n distinct, left-right asymmetric images (pixel value encodes the index)."""
    images = np.zeros((n, 4, 4, 3), dtype=np.uint8)
    for i in range(n):
        images[i, :, 0] = 10 * i + 5  # left column marks orientation
        images[i, :, 1:] = 10 * i
    return ImageCache(images, [f"{i}.png" for i in range(n)], [], Path("unused"), "key")


def decode_batch(batch: torch.Tensor) -> list[tuple[int, bool]]:
    """(image index, flipped?) for each image of a batch built from ``asymmetric_cache``."""
    pixels = torch.round((batch + 1) * 127.5).to(torch.int64)
    out = []
    for image in pixels:
        left, right = int(image[0, 0, 0]), int(image[0, 0, -1])
        flipped = right > left
        out.append(((min(left, right)) // 10, flipped))
    return out


def test_batcher_values_layout_and_epochs(tmp_path: Path) -> None:
    cache = asymmetric_cache(7)
    batcher = DeviceBatcher(cache, 3, torch.device("cpu"), generator_seed=0, hflip=False)
    batch = batcher.next()
    assert batch.shape == (3, 3, 4, 4) and batch.dtype == torch.float32 and batch.is_contiguous()
    index = decode_batch(batch)[0][0]
    expected = torch.from_numpy(cache.images[index]).permute(2, 0, 1).float() / 127.5 - 1
    torch.testing.assert_close(batch[0], expected, rtol=0, atol=1e-6)
    seen = [i for i, _ in decode_batch(batch)]
    for _ in range(13):  # 3 + 39 = 42 images = exactly 6 epochs of 7
        seen += [i for i, flipped in decode_batch(batcher.next()) if not flipped]
    for epoch in range(6):  # every image exactly once per epoch, across batch boundaries
        assert sorted(seen[7 * epoch : 7 * epoch + 7]) == list(range(7))
    assert seen[:7] != seen[7:14]  # a fresh order each epoch
    cl = DeviceBatcher(cache, 2, torch.device("cpu"), 0, channels_last=True).next()
    assert cl.is_contiguous(memory_format=torch.channels_last)


def test_batcher_flips_both_ways_and_exactly() -> None:
    cache = asymmetric_cache(8)
    batcher = DeviceBatcher(cache, 8, torch.device("cpu"), generator_seed=1, hflip=True)
    orientations = []
    for _ in range(4):
        batch = batcher.next()
        for image, (index, flipped) in zip(batch, decode_batch(batch), strict=True):
            original = torch.from_numpy(cache.images[index]).permute(2, 0, 1).float() / 127.5 - 1
            torch.testing.assert_close(image, original.flip(-1) if flipped else original, rtol=0, atol=1e-6)
            orientations.append(flipped)
    assert 0 < sum(orientations) < len(orientations)
    plain = DeviceBatcher(cache, 8, torch.device("cpu"), generator_seed=1, hflip=False)
    assert not any(flipped for _ in range(4) for _, flipped in decode_batch(plain.next()))


def test_batcher_state_round_trip_gives_identical_next_batches() -> None:
    cache = asymmetric_cache(10)
    batcher = DeviceBatcher(cache, 4, torch.device("cpu"), generator_seed=42)
    for _ in range(7):  # mid-epoch, after two epoch roll-overs
        batcher.next()
    state = batcher.state_dict()
    expected = [batcher.next() for _ in range(4)]
    resumed = DeviceBatcher(cache, 4, torch.device("cpu"), generator_seed=0)  # seed comes from the state
    resumed.load_state_dict(state)
    for want in expected:
        assert torch.equal(resumed.next(), want)
    other_seed = DeviceBatcher(cache, 4, torch.device("cpu"), generator_seed=43)
    assert not all(torch.equal(other_seed.next(), batcher.next()) for _ in range(3))
    with pytest.raises(DiffkitError):
        DeviceBatcher(asymmetric_cache(9), 4, torch.device("cpu"), 42).load_state_dict(state)


def test_exif_orientation_and_transparency_are_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": red ends up on top
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    transparent = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    transparent.save(tmp_path / "transparent.png")
    cache = load(tmp_path)
    rotated = cache.images[cache.files.index("rotated.jpg")].astype(int)
    assert rotated[1, RES // 2, 0] > 200 and rotated[1, RES // 2, 2] < 60  # top row red
    assert rotated[-2, RES // 2, 2] > 200 and rotated[-2, RES // 2, 0] < 60  # bottom row blue
    assert (cache.images[cache.files.index("transparent.png")] == 255).all()  # on white, not black


def write_png16(path: Path, pixels: np.ndarray) -> None:
    """A 16-bit PNG, greyscale (2-D) or RGB (3-D), written by hand: Pillow cannot write 16-bit RGB."""
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


def test_16_bit_pngs_give_the_same_pixels_as_8_bit(tmp_path: Path) -> None:
    # Issue 9: Image.convert("RGB") clamps 16-bit greyscale at 255, so a 16-bit face cached all white.
    rng = np.random.default_rng(0)
    grey8 = rng.integers(0, 256, (24, 20), dtype=np.uint8)
    rgb8 = rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(grey8, mode="L").save(folder / "grey8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(folder / "grey16.png")  # Pillow writes I;16
    Image.fromarray(rgb8).save(folder / "rgb8.png")
    write_png16(folder / "rgb16.png", rgb8.astype(np.uint16) * 257)
    with Image.open(folder / "grey16.png") as image:
        assert image.mode.startswith("I")  # really a 16-bit file
    cache = load(folder)
    assert cache.skipped == [] and len(cache) == 4
    pixels = {name: cache.images[cache.files.index(name)].astype(int) for name in cache.files}
    assert np.abs(pixels["grey16.png"] - pixels["grey8.png"]).max() <= 1
    assert np.abs(pixels["rgb16.png"] - pixels["rgb8.png"]).max() <= 1
    assert pixels["grey16.png"].mean() < 200  # not the all-white square of the clamping decoder


def test_modes_without_a_white_level_are_skipped_with_the_reason(tmp_path: Path) -> None:
    # Pillow opens by content, so a float or 32-bit TIFF named .png reaches the decoder: skip, never guess.
    write_face_folder(tmp_path, 2, size=16, seed=2)
    floats = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(floats, mode="F").save(tmp_path / "float.png", format="TIFF")
    Image.fromarray((floats * 1e6).astype(np.int32), mode="I").save(tmp_path / "int32.png", format="TIFF")
    cache = load(tmp_path)
    assert len(cache) == 2 and [path for path, _ in cache.skipped] == ["float.png", "int32.png"]
    reasons = dict(cache.skipped)
    assert "floating-point" in reasons["float.png"] and "32-bit integer" in reasons["int32.png"]


def test_file_names_that_are_not_utf8_are_cached_and_keep_utf8_keys(tmp_path: Path) -> None:
    # Valid on Linux (bytes from an old Latin-1 archive); Python holds them as surrogate escapes.
    folder = tmp_path / "data"
    paths = write_face_folder(folder, 3, size=16, seed=4)
    latin1 = os.fsdecode(b"caf\xe9.png")
    os.rename(paths[0], folder / latin1)
    (folder / os.fsdecode(b"br\xefken.png")).write_bytes(b"not an image")
    cache = load(folder)
    assert len(cache) == 3 and latin1 in cache.files
    assert [path for path, _ in cache.skipped] == [os.fsdecode(b"br\xefken.png")]
    assert load(folder).reused  # the header round-trips the name
    # UTF-8 names hash as before (same bytes), so existing caches stay valid.
    files = [ImageFile("caf\u00e9.png", 10, 20, 30), ImageFile("a/b.jpg", 1, 2, 3)]
    old = hashlib.sha256(b"diffkit-image-cache v1 16px\n")
    for f in files:
        old.update(f"{f.relative_path}\0{f.size}\0{f.mtime_ns}\0{f.ctime_ns}\n".encode())
    assert content_key(files, 16, 1) == old.hexdigest()


def test_a_symlinked_cache_folder_in_the_data_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_folder(tmp_path / "faces")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "images-16px-0123456789abcdef.json").write_text('{"data_dir": "x"}')  # pruning bait
    (tmp_path / "faces" / ".diffkit-cache").symlink_to(elsewhere, target_is_directory=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = load(tmp_path / "faces")
    assert cache.cache_path.parent == tmp_path / "home" / ".cache" / "diffkit"
    assert [p.name for p in elsewhere.iterdir()] == ["images-16px-0123456789abcdef.json"]


def test_batcher_labels_follow_their_images_across_epochs_and_resume() -> None:
    """Each label comes with its own image (across epoch roll-overs), and a resumed batcher continues
    the same (image, label) stream from its three integers."""
    cache = asymmetric_cache(7)
    labels = np.array([3, 1, 4, 1, 5, 9, 2])
    batcher = DeviceBatcher(cache, 3, torch.device("cpu"), generator_seed=4, labels=labels)
    for _ in range(5):  # 15 images: two roll-overs inside batches
        images, batch_labels = batcher.next_batch()
        assert batch_labels is not None and batch_labels.dtype == torch.long
        assert batch_labels.tolist() == [int(labels[i]) for i, _ in decode_batch(images)]
    state = batcher.state_dict()
    expected = [batcher.next_batch() for _ in range(3)]
    resumed = DeviceBatcher(cache, 3, torch.device("cpu"), generator_seed=0, labels=labels)
    resumed.load_state_dict(state)
    for (images, batch_labels), (again, again_labels) in zip(
        expected, [resumed.next_batch() for _ in range(3)], strict=True
    ):
        assert batch_labels is not None and again_labels is not None
        assert torch.equal(images, again) and torch.equal(batch_labels, again_labels)
    unlabelled = DeviceBatcher(cache, 3, torch.device("cpu"), generator_seed=4)
    assert unlabelled.next_batch()[1] is None
    with pytest.raises(DiffkitError, match="6 labels for 7 images"):
        DeviceBatcher(cache, 3, torch.device("cpu"), generator_seed=4, labels=labels[:6])


def test_labels_from_subfolders_need_every_image_in_one_of_two_or_more(tmp_path: Path) -> None:
    from diffkit.dataset.labels import read_labels

    labels = read_labels(tmp_path, ["b/1.png", "a/2.png", "b/4.png"])
    assert labels is not None and labels.names == ("a", "b") and labels.indices.tolist() == [1, 0, 1]
    # HF imagefolder's rule: the file's own folder, all files at one depth (two depths: no labels)
    assert read_labels(tmp_path, ["b/1.png", "a/2.png", "b/3/4.png"]) is None
    assert read_labels(tmp_path, ["a/1.png", "top.png"]) is None  # an image outside the subfolders
    assert read_labels(tmp_path, ["a/1.png", "a/2.png"]) is None  # one folder is no labelling
    numbers = read_labels(tmp_path, ["10/a.png", "9/b.png", "-1/c.png"])
    assert numbers is not None and numbers.names == ("-1", "9", "10")  # numbers sort numerically
