"""The dataset folder has one owner (``diffkit.dataset``): the image lister, the manifest and its queries
(including dedupe's removal table), ``metadata.jsonl`` and the pHash that scrape and dedupe share.

The pHash values below were computed with the code before this module existed (scrape's
``validate.phash_of`` and dedupe's ``hashing.hash_file``; ``draft-L-256`` and ``full``) and when the
default became ``draft-L-64``; a manifest's ``hash_decode`` and dedupe's cache depend on them, so the
values of a decode path must never change (a new decode is a new path name, and old values migrate).
"""

from __future__ import annotations

import ast
import io
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import diffkit
from diffkit.errors import DiffkitError

PACKAGE = Path(diffkit.__file__).resolve().parent  # the code under test, wherever it was imported from


# -- fixed images ------------------------------------------------------------------------------------
def _pattern(width: int, height: int, seed: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    a, b, c = np.random.default_rng(seed).uniform(0.01, 0.08, 3)
    red = 127.5 + 127.5 * np.sin(a * x + b * y)
    green = 127.5 + 127.5 * np.cos(b * x - c * y)
    blue = 255.0 * (x + y) / (width + height)
    return np.stack([red, green, blue], axis=-1)


def _encode(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8)).save(buffer, fmt, **options)
    return buffer.getvalue()


def fixed_images() -> dict[str, bytes]:
    grey16 = io.BytesIO()
    Image.fromarray((_pattern(80, 60, 3)[..., 0] * 257).astype(np.uint16)).save(grey16, "PNG")
    return {
        "png_rgb": _encode(_pattern(64, 48, 1), "PNG"),
        "jpeg_large": _encode(_pattern(1200, 800, 2), "JPEG", quality=90),  # draft: 150x100 (600x400 on
        # the retired draft-L-256)
        "png_grey16": grey16.getvalue(),  # mode I;16: hashed as its picture, not as white
    }


# name -> pHash on each decode path: the default (1/8 scale here), the retired default, the full decode
EXPECTED_PHASH = {
    "png_rgb": ("eab5953f903e9038", "eab5953f903e9038", "eab5953f903e9038"),
    "jpeg_large": ("872a752ad5aa55aa", "ad2ad52a55aa55aa", "a52af52a55aa55aa"),
    "png_grey16": ("802a7f207b237f2e", "802a7f207b237f2e", "802a7f207b237f2e"),
}


# -- the one pHash -----------------------------------------------------------------------------------
def test_phash_values_are_unchanged_on_both_decode_paths(tmp_path: Path) -> None:
    from diffkit.dataset.phash import DRAFT_DECODE, FULL_DECODE, phash

    for name, data in fixed_images().items():
        draft, retired, full = EXPECTED_PHASH[name]
        assert f"{phash(data):016x}" == draft, name
        assert f"{phash(data, DRAFT_DECODE):016x}" == draft, name
        assert f"{phash(data, 'draft-L-256'):016x}" == retired, name  # still decodable, for migrations
        assert f"{phash(data, FULL_DECODE):016x}" == full, name
        (tmp_path / name).write_bytes(data)
        assert f"{phash(tmp_path / name):016x}" == draft, name  # a file hashes like its bytes


def test_scrape_and_dedupe_hash_the_same_bytes_to_the_same_phash(tmp_path: Path) -> None:
    """One pHash: scrape's manifest value equals dedupe's on the default decode path; dedupe's full path
    differs only where the documented decode differs (a JPEG large enough to be DCT-scaled)."""
    from diffkit.dedupe.config import DECODE_DRAFT, DECODE_FULL
    from diffkit.dedupe.hashing import hash_file
    from diffkit.scrape.validate import HASH_DECODE, decode_image, phash_of

    assert HASH_DECODE == DECODE_DRAFT == "draft-L-64"
    for name, data in fixed_images().items():
        path = tmp_path / name
        path.write_bytes(data)
        scraped = decode_image(data, max_pixels=10**8, expect_size=None)
        draft, _, full = EXPECTED_PHASH[name]
        assert f"{phash_of(data):016x}" == f"{scraped.phash:016x}" == draft, name  # type: ignore[union-attr]
        assert f"{hash_file((str(path), 'phash', DECODE_DRAFT))[1]:016x}" == draft, name
        assert f"{hash_file((str(path), 'phash', DECODE_FULL))[1]:016x}" == full, name


def test_open_for_hash_reports_the_full_size_and_refuses_float_pixels(tmp_path: Path) -> None:
    from diffkit.dataset.decode import UndecodableImage
    from diffkit.dataset.phash import open_for_hash, phash

    image, width, height = open_for_hash(fixed_images()["jpeg_large"])
    assert (width, height) == (1200, 800) and image.size == (150, 100) and image.mode == "L"
    buffer = io.BytesIO()
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64), mode="F").save(
        buffer, "TIFF"
    )
    with pytest.raises(UndecodableImage, match="floating-point"):
        phash(buffer.getvalue())


# -- the one image lister ----------------------------------------------------------------------------
def _touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_lister_extensions_hidden_files_nesting_and_order(tmp_path: Path) -> None:
    from diffkit.dataset.listing import scan_images

    for name in ("b.png", "a.JPG", "a/b.jpeg", "a.png", "B.webp", "c.bmp", "z/y/x.PNG", "a-b.png"):
        _touch(tmp_path / name)
    for name in (
        "notes.txt",
        "anim.gif",
        "png",
        ".hidden.png",
        ".cache/x.png",
        "a/.tmp/y.jpg",
        "a/.z.jpg.tmp",
    ):
        _touch(tmp_path / name)
    scan = scan_images(tmp_path)
    rels = [entry.rel for entry in scan.files]
    # str order of the relative POSIX path: "." < "/" and capitals first, the same for every command
    assert rels == ["B.webp", "a-b.png", "a.JPG", "a.png", "a/b.jpeg", "b.png", "c.bmp", "z/y/x.PNG"]
    assert scan.paths == [tmp_path / rel for rel in rels] and scan.symlinks == []
    entry = scan.files[0]
    info = os.stat(tmp_path / "B.webp")
    assert (entry.size, entry.mtime_ns, entry.ctime_ns) == (1, info.st_mtime_ns, info.st_ctime_ns)


def test_lister_skips_and_reports_symlinks_and_never_enters_linked_folders(tmp_path: Path) -> None:
    from diffkit.dataset.listing import scan_images

    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(root / "real.png")
    _touch(outside / "elsewhere.png")
    (root / "link.png").symlink_to(root / "real.png")
    (root / "dangling.jpg").symlink_to(tmp_path / "missing.jpg")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    scan = scan_images(root)
    assert [entry.rel for entry in scan.files] == ["real.png"]
    assert scan.symlinks == ["dangling.jpg", "link.png", "linked/"]


def test_lister_leaves_out_dedupe_quarantines_but_not_folders_named_quarantine(tmp_path: Path) -> None:
    from diffkit.dataset.listing import MOVE_LOG_NAME, scan_images
    from diffkit.dedupe.config import MOVE_LOG_NAME as DEDUPE_MOVE_LOG

    assert MOVE_LOG_NAME == DEDUPE_MOVE_LOG  # the file dedupe writes into every quarantine it fills
    _touch(tmp_path / "a.png")
    _touch(tmp_path / "quarantine" / "b.png")  # an ordinary folder: its images count
    _touch(tmp_path / "dups" / "c.png")
    _touch(tmp_path / "dups" / MOVE_LOG_NAME, b"{}\n")  # a quarantine put inside with --to
    _touch(tmp_path / "skipped" / "d.png")
    assert [e.rel for e in scan_images(tmp_path).files] == ["a.png", "quarantine/b.png", "skipped/d.png"]
    assert [e.rel for e in scan_images(tmp_path, skip=[tmp_path / "skipped"]).files] == [
        "a.png",
        "quarantine/b.png",
    ]


def test_lister_keeps_names_that_are_not_utf8(tmp_path: Path) -> None:
    from diffkit.dataset.listing import scan_images

    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")
    with open(raw, "wb") as handle:
        handle.write(b"x")
    _touch(tmp_path / "cafe.png")
    scan = scan_images(tmp_path)
    assert [os.fsencode(entry.rel) for entry in scan.files] == [
        b"cafe.png",
        b"caf\xe9.png",
    ]  # str order: surrogates last
    assert all(entry.path.is_file() for entry in scan.files)


def test_lister_relative_to_a_base_and_the_image_root_of_a_scrape_folder(tmp_path: Path) -> None:
    from diffkit.dataset.listing import image_root, scan_images
    from diffkit.dataset.manifest import MANIFEST_NAME

    _touch(tmp_path / "images" / "ab" / "x.jpg")
    _touch(tmp_path / "report.png")
    assert image_root(tmp_path) == tmp_path  # images/ alone does not make a scrape folder
    sqlite3.connect(tmp_path / MANIFEST_NAME).close()
    assert image_root(tmp_path) == tmp_path / "images"
    scan = scan_images(image_root(tmp_path), base=tmp_path)
    assert [entry.rel for entry in scan.files] == ["images/ab/x.jpg"]


def test_dedupe_lists_exactly_what_the_dataset_lister_lists(tmp_path: Path) -> None:
    """Before: dedupe ignored ``.bmp`` files that eval evaluated (three listers, three answers)."""
    from diffkit.dataset.listing import scan_images
    from diffkit.dedupe.hashing import scan_folder

    for name in ("a.png", "b.bmp", "sub/c.JPEG", ".d.png", "e.gif"):
        _touch(tmp_path / name)
    (tmp_path / "f.png").symlink_to(tmp_path / "a.png")
    ours = scan_images(tmp_path)
    theirs = scan_folder(tmp_path)
    assert [f.rel for f in theirs.files] == [e.rel for e in ours.files] == ["a.png", "b.bmp", "sub/c.JPEG"]
    assert theirs.symlinks == ours.symlinks == ["f.png"]


# -- the manifest ------------------------------------------------------------------------------------
def _row(seed: int) -> dict[str, object]:
    data = _encode(_pattern(32, 32, seed), "PNG")
    from diffkit.dataset.phash import phash

    digest = f"{seed:02x}" + "0" * 62
    return {"sha256": digest, "phash": phash(data), "size": (32, 32), "n_bytes": len(data)}


def test_manifest_round_trip_and_removal_table(tmp_path: Path) -> None:
    from diffkit.dataset.manifest import (
        METADATA_NAME,
        Manifest,
        RemovedFile,
        fetch_times,
        record_removals,
        relative_file_name,
        rewrite_metadata,
    )
    from diffkit.dataset.phash import DRAFT_DECODE

    rows = [_row(seed) for seed in (1, 2, 3)]
    names = [relative_file_name(str(r["sha256"]), "png") for r in rows]
    manifest = Manifest.open(tmp_path, DRAFT_DECODE)
    for row, name, when in zip(rows, names, ("t1", "t2", "t3"), strict=True):
        manifest.insert_image(
            str(row["sha256"]),
            name,
            int(row["phash"]),
            row["size"],
            int(row["n_bytes"]),  # type: ignore[arg-type]
            "http://user:secret@site/img",
            when,
        )
    manifest.add_count("http_503")
    manifest.add_count("http_503", 2)
    assert manifest.kept_count() == 3 and manifest.counts() == {"http_503": 3}
    assert [r["file_name"] for r in manifest.rows()] == names
    assert [r["phash"] for r in manifest.rows()] == [r["phash"] for r in rows]  # unsigned again
    assert manifest.has_image(str(rows[0]["sha256"])) and not manifest.has_image("f" * 64)
    manifest.write_metadata()
    lines = [json.loads(line) for line in (tmp_path / METADATA_NAME).read_text().splitlines()]
    assert [line["phash"] for line in lines] == [f"{r['phash']:016x}" for r in rows]
    assert {line["url"] for line in lines} == {"http://***@site/img"}  # credentials never stored
    manifest.close()

    assert fetch_times(tmp_path) == dict(zip(names, ("t1", "t2", "t3"), strict=True))
    gone = RemovedFile(names[1], "move", "/q/x.png", names[0], 2)
    assert (
        record_removals(tmp_path, [gone, RemovedFile("images/zz/none.png", "move", None, names[0], 0)]) == 1
    )
    assert rewrite_metadata(tmp_path)
    lines = [json.loads(line) for line in (tmp_path / METADATA_NAME).read_text().splitlines()]
    assert [line["file_name"] for line in lines] == [names[0], names[2]]
    with sqlite3.connect(tmp_path / "manifest.sqlite") as db:
        removed = db.execute(
            "SELECT file_name, action, moved_to, keeper_file_name, distance FROM dedupe_removed"
        )
        assert removed.fetchall() == [(names[1], "move", "/q/x.png", names[0], 2)]

    reopened = Manifest.open(tmp_path, DRAFT_DECODE)
    assert reopened.kept_count() == 2
    # what scrape never fetches again: the kept images and the removed one
    assert [sha for sha, _ in reopened.known_hashes()] == [
        rows[0]["sha256"],
        rows[2]["sha256"],
        rows[1]["sha256"],
    ]
    reopened.close()


def test_manifest_migrates_other_hash_paths_refuses_garbage_and_symlinks(tmp_path: Path) -> None:
    from diffkit.dataset.manifest import (
        MANIFEST_NAME,
        METADATA_NAME,
        Manifest,
        check_manifest_header,
        fetch_times,
        unsafe_manifest_files,
    )

    Manifest.open(tmp_path, "draft-L-256").close()
    migrated = Manifest.open(tmp_path, "full")  # another path: migrated (tests/test_hash_migration.py)
    meta = dict(migrated.db.execute("SELECT key, value FROM meta").fetchall())
    assert meta["hash_decode"] == "full" and migrated.migrated == 0 and migrated.stale_shas() == []
    migrated.close()
    with pytest.raises(ValueError, match="decode must be one of"):
        Manifest.open(tmp_path, "draft-L-9")  # a path this diffkit does not know
    assert unsafe_manifest_files(tmp_path) is None
    (tmp_path / METADATA_NAME).symlink_to(tmp_path / "elsewhere.jsonl")
    assert unsafe_manifest_files(tmp_path) is not None

    garbage = tmp_path / "g"
    _touch(garbage / MANIFEST_NAME, b"this is not a database at all")
    with pytest.raises(DiffkitError, match="damaged or not a diffkit manifest"):
        check_manifest_header(garbage)
    assert fetch_times(garbage) == {}  # dedupe falls back to file times


# -- one owner ---------------------------------------------------------------------------------------
def _imported_modules(package: str) -> set[str]:
    found: set[str] = set()
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
    return found


def test_scrape_and_dedupe_share_the_dataset_and_never_import_each_other() -> None:
    assert not any(m.startswith("diffkit.scrape") for m in _imported_modules("dedupe"))
    assert not any(m.startswith("diffkit.dedupe") for m in _imported_modules("scrape"))
    for command in ("scrape", "dedupe"):
        assert "diffkit.dataset.manifest" in _imported_modules(command)
    below = {m for m in _imported_modules("dataset") if m.startswith("diffkit.")}
    assert all(
        m.startswith(
            ("diffkit.dataset", "diffkit.atomic", "diffkit.console", "diffkit.errors", "diffkit.safepath")
        )
        for m in below
    )


def test_no_sql_on_the_manifest_outside_the_dataset() -> None:
    """The manifest's tables are queried in one module (dedupe's own hash cache has its own tables)."""
    for path in [*(PACKAGE / "scrape").rglob("*.py"), *(PACKAGE / "dedupe").rglob("*.py")]:
        text = path.read_text()
        for table in ("images", "counts", "dedupe_removed"):
            for verb in ("FROM", "INTO", "UPDATE", "TABLE"):
                assert f"{verb} {table}" not in text, (path.name, verb, table)
