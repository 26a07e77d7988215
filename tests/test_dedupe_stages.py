"""Issue 16: two-stage near-duplicate test (hash candidates, thumbnail verifier) in dedupe and scrape,
the thumbnail cache and its migration, multi-index search, and ``--against``."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_dedupe_search import brute_force, clustered_hashes  # noqa: I001  (tests/ is on sys.path)
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.dataset.phash import phash
from diffkit.dataset.verify import THUMB_BYTES, open_for_hash_and_thumbnail, pair_similarities, similarity
from diffkit.dedupe import hashing, search
from diffkit.dedupe.against import reference_cache
from diffkit.dedupe.config import CACHE_NAME, DedupeConfig
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.run import dedupe
from diffkit.fakesite.faces import draw_face
from diffkit.fakesite.transforms import encode_image, transformed_copy
from diffkit.scrape.kept import KeptIndex
from diffkit.scrape.storage import Store
from diffkit.scrape.validate import ValidImage, decode_image


def run(directory: Path, **options: object) -> DedupeResult:
    options.setdefault("write_report", False)
    options.setdefault("progress", False)
    return dedupe(DedupeConfig(directory=directory, **options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def lookalikes() -> list[tuple[bytes, bytes, int]]:
    """Pairs of *distinct* 96 px aligned faces whose pHashes lie within 12 bits (hash-only would call
    them duplicates), as (bytes_a, bytes_b, distance); the five closest among 160 faces."""
    faces = [encode_image(draw_face(np.random.default_rng([16, i]), 96), "JPEG", 90) for i in range(160)]
    hashes = [phash(data) for data in faces]
    pairs = sorted(
        (bin(hashes[i] ^ hashes[j]).count("1"), i, j)
        for i in range(len(faces))
        for j in range(i + 1, len(faces))
    )
    return [(faces[i], faces[j], d) for d, i, j in pairs[:5] if d <= 12]


def test_verifier_separates_similar_distinct_faces_from_near_copies(
    lookalikes: list[tuple[bytes, bytes, int]], tmp_path: Path
) -> None:
    assert len(lookalikes) == 5  # aligned faces hash alike: distinct pairs within the candidate threshold
    face = draw_face(np.random.default_rng([16, 999]), 96)
    for k, (a, b, _) in enumerate(lookalikes):
        (tmp_path / f"pair{k}-a.jpg").write_bytes(a)
        (tmp_path / f"pair{k}-b.jpg").write_bytes(b)
    (tmp_path / "z-original.png").write_bytes(encode_image(face, "PNG"))
    rng = np.random.default_rng(3)
    for kind in ("jpeg", "resize", "brightness", "crop"):
        data, ext = transformed_copy(face, kind, rng)
        (tmp_path / f"z-copy-{kind}.{ext}").write_bytes(data)

    hash_only = run(tmp_path, verify=False)  # the same candidates, no second stage
    cluster_of = {rel: c for c, cluster in enumerate(hash_only.clusters) for rel in cluster}
    for k in range(5):  # hash only: every pair of distinct lookalikes would be "duplicates"
        assert cluster_of[f"pair{k}-a.jpg"] == cluster_of[f"pair{k}-b.jpg"]
    result = run(tmp_path)
    assert result.clusters == [
        ["z-original.png", "z-copy-brightness.jpg", "z-copy-crop.jpg", "z-copy-jpeg.jpg", "z-copy-resize.jpg"]
    ]
    assert result.n_rejected == result.n_candidates - 10  # 5 copies: 10 pairs among the 5 images
    scores = [
        similarity(open_for_hash_and_thumbnail(a)[1], open_for_hash_and_thumbnail(b)[1])
        for a, b, _ in lookalikes
    ]
    assert max(scores) < result.min_similarity  # type: ignore[operator]
    rejected = [b for b in result.borderline if not b["accepted"]]
    assert rejected and rejected[0]["similarity"] == round(max(scores), 4)


def test_thumbnail_cache_schema_2_is_migrated_keeping_every_hash(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"{i}.jpg").write_bytes(
            encode_image(draw_face(np.random.default_rng([4, i]), 64), "JPEG", 90)
        )
    assert run(tmp_path).n_hashed == 4
    cache = tmp_path / CACHE_NAME
    with contextlib.closing(sqlite3.connect(cache)) as db, db:  # rebuild it as schema 2 wrote it
        rows = db.execute(
            "SELECT rel, kind, decode, size, mtime_ns, sha256, hash, width, height, error FROM hashes"
        ).fetchall()
        db.execute("DROP TABLE hashes")
        db.execute(
            "CREATE TABLE hashes (rel TEXT NOT NULL, kind TEXT NOT NULL, decode TEXT NOT NULL,"
            " size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT, hash INTEGER,"
            " width INTEGER NOT NULL, height INTEGER NOT NULL, error TEXT, PRIMARY KEY (rel, kind, decode))"
        )
        db.executemany("INSERT INTO hashes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")

    result = run(tmp_path)
    assert result.warnings == []  # migrated, not thrown away as damaged
    assert result.n_hashed == 4  # each file decoded once more, for its thumbnail
    with contextlib.closing(sqlite3.connect(cache)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
        after = db.execute("SELECT rel, hash, length(thumb) FROM hashes ORDER BY rel").fetchall()
    assert [(rel, value) for rel, value, _ in after] == sorted((r[0], r[6]) for r in rows)  # same hashes
    assert {length for _, _, length in after} == {THUMB_BYTES}
    assert run(tmp_path).n_hashed == 0


@pytest.mark.parametrize("threshold", [0, 3, 4, 8, 12])
def test_multi_index_search_finds_exactly_the_brute_force_pairs(threshold: int) -> None:
    hashes = clustered_hashes(1500, seed=threshold + 100)
    expected, _ = brute_force([int(h) for h in hashes], threshold)
    assert len(expected) >= 50
    for plan in (search.BandPlan(max(2, threshold + 1), 0), search.BandPlan(max(2, threshold // 3 + 1), 1)):
        found = search.mih_pairs(hashes, threshold, plan)
        assert found is not None
        assert list(zip(*(c.tolist() for c in found), strict=True)) == expected, plan


def test_band_plans_keep_the_pigeonhole_guarantee() -> None:
    """Some band of a pair within ``radius`` differs in at most radius // bands bits: a plan is exact only
    when that is 0 (exact band match) or <= 2 (one flipped bit on each side)."""
    for n in (1_000, 50_000, 1_000_000):
        for radius in range(0, 17):
            plan = search.band_plan(n, radius)
            assert radius // plan.bands <= 2 * plan.flips and max(plan.widths()) <= 32, (n, radius, plan)
    assert search.band_plan(1_000_000, 8) == search.BandPlan(3, 1)  # the plan the 1M benchmark uses


def test_search_above_the_all_pairs_limit_uses_bands_or_falls_back_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(search, "_BRUTE_MAX", 100)
    hashes = clustered_hashes(900, seed=7)
    expected, nearest = brute_force([int(h) for h in hashes], 8)
    result = search.search_pairs(hashes, 8)
    assert (
        list(zip(result.pairs_i.tolist(), result.pairs_j.tolist(), result.distances.tolist(), strict=True))
        == expected
    )
    assert result.nearest.tolist() == [d if d <= 8 else 255 for d in nearest]
    # Hashes that all share their bands (one cluster): too many band candidates -> all pairs, same answer.
    same = np.full(300, 0x0123_4567_89AB_CDEF, dtype=np.uint64) ^ np.arange(300, dtype=np.uint64)
    assert search.mih_pairs(same, 8) is None
    clustered = search.search_pairs(same, 8)
    expected_same, _ = brute_force([int(h) for h in same], 8)
    assert len(clustered.pairs_i) == len(expected_same) > 10_000


def _listing(folder: Path) -> list[tuple[str, int, int, bytes]]:
    """Every entry under ``folder``, hidden ones included: name, mode, mtime and content."""
    entries = []
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        data = path.read_bytes() if path.is_file() else b""
        entries.append((path.relative_to(folder).as_posix(), info.st_mode, info.st_mtime_ns, data))
    return entries


def test_against_reports_leaks_from_the_reference_cache(tmp_path: Path) -> None:
    ref, train = tmp_path / "ref", tmp_path / "train"
    ref.mkdir()
    train.mkdir()
    faces = [draw_face(np.random.default_rng([9, i]), 80) for i in range(6)]
    for i, face in enumerate(faces[:4]):
        (ref / f"r{i}.png").write_bytes(encode_image(face, "PNG"))
    (train / "leak-exact.png").write_bytes((ref / "r1.png").read_bytes())
    crop, _ = transformed_copy(faces[2], "crop", np.random.default_rng(1))
    (train / "leak-crop.jpg").write_bytes(crop)
    for i in (4, 5):
        (train / f"own{i}.png").write_bytes(encode_image(faces[i], "PNG"))
    (train / "own4-again.png").write_bytes((train / "own4.png").read_bytes())  # not a leak: within train

    runner = CliRunner()
    before = _listing(ref)
    report = ["--report", str(tmp_path / "reports" / "leaks.html")]
    out = runner.invoke(
        app, ["dedupe", str(train), "--against", str(ref), "--json", "--no-progress", *report]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert [(x["path"], x["reference"]) for x in data["leaks"]] == [
        ("leak-crop.jpg", "r2.png"),
        ("leak-exact.png", "r1.png"),
    ]
    assert data["n_duplicates"] == 2 and data["clusters"] == []
    # The leak check has its own report (it wrote none before: --report was silently ignored).
    assert data["report_html"] == str(tmp_path / "reports" / "leaks.html")
    sidecar = json.loads((tmp_path / "reports" / "leaks.json").read_text())
    assert sidecar["title"] == f"Dedupe {train.resolve()} against {ref.resolve()}"
    assert sidecar["summary"]["leaks"] == 2 and sidecar["summary"]["against"] == str(ref.resolve())
    leaks_section = sidecar["sections"][0]
    assert leaks_section["heading"] == "Images that duplicate a reference image"
    assert [(x["path"], x["reference"]) for x in leaks_section["table"]] == [
        ("leak-crop.jpg", "r2.png"),
        ("leak-exact.png", "r1.png"),
    ]
    assert _listing(ref) == before  # issue 24.10: REF is read-only input, no cache is written into it
    assert (data["n_hashed"], data["n_cached"]) == (5, 0)
    ref_cache = reference_cache(train, ref)  # REF's hashes are cached in DIR, one file per reference
    assert sorted(p.name for p in train.glob(".*")) == sorted([CACHE_NAME, ref_cache.name])
    with contextlib.closing(sqlite3.connect(ref_cache)) as db:
        assert db.execute("SELECT rel FROM hashes WHERE thumb IS NOT NULL ORDER BY rel").fetchall() == [
            (f"r{i}.png",) for i in range(4)
        ]
    (ref / "r3.png").touch()  # unchanged bytes, new mtime: only this one is hashed again
    hashed = []
    real_hash_file = hashing.hash_file

    def counting(task: tuple[str, str, str]) -> hashing.HashOutput:
        hashed.append(Path(task[0]).name)
        return real_hash_file(task)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing, "hash_file", counting)
        again = runner.invoke(
            app, ["dedupe", str(train), "--against", str(ref), "--json", "--no-progress", *report]
        )
    assert json.loads(again.stdout)["leaks"] == data["leaks"] and hashed == ["r3.png"]

    refused = runner.invoke(app, ["dedupe", str(train), "--against", str(ref), "--action", "move"])
    assert (
        refused.exit_code == 2
        and "--against only reports" in refused.output
        and "Traceback" not in refused.output
    )
    inside = runner.invoke(app, ["dedupe", str(tmp_path), "--against", str(ref)])
    assert inside.exit_code == 2 and "overlaps" in inside.output


def test_against_a_read_only_reference(tmp_path: Path) -> None:
    """REF on a read-only mount: the check works and REF is left exactly as it was."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root for a read-only bind mount")
    ref, train = tmp_path / "ref", tmp_path / "train"
    ref.mkdir()
    train.mkdir()
    for i in range(3):
        (ref / f"r{i}.png").write_bytes(encode_image(draw_face(np.random.default_rng([10, i]), 64), "PNG"))
    (train / "leak.png").write_bytes((ref / "r0.png").read_bytes())
    (train / "own.png").write_bytes(encode_image(draw_face(np.random.default_rng([10, 9]), 64), "PNG"))
    before = _listing(ref)
    if subprocess.run(["mount", "--bind", str(ref), str(ref)]).returncode != 0:
        pytest.skip("mount is not allowed here")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ref)], check=True)
        result = run(train, against=ref, workers=1)
        again = run(train, against=ref, workers=1)
    finally:
        subprocess.run(["umount", str(ref)], check=False)
    assert [(leak["path"], leak["reference"]) for leak in result.leaks] == [("leak.png", "r0.png")]
    assert not result.warnings and again.leaks == result.leaks
    assert _listing(ref) == before


def _valid(data: bytes) -> ValidImage:
    checked = decode_image(data, 10**7, None)
    assert isinstance(checked, ValidImage)
    return checked


def test_scrape_inline_check_uses_the_same_two_stages(
    lookalikes: list[tuple[bytes, bytes, int]], tmp_path: Path
) -> None:
    store = Store(tmp_path)
    kept_a, distinct_b, distance = lookalikes[0]
    store.add(_valid(kept_a), None)
    fresh = _valid(distinct_b)
    assert 0 < distance <= 12 and store.index.nearest_distance(fresh.phash) == distance
    assert not store.index.near_duplicate(fresh.phash, fresh.data, 12)  # a fresh face, kept
    face = draw_face(np.random.default_rng([16, 508]), 96)  # its 12 crops: 2-10 bits away
    store.add(_valid(encode_image(face, "JPEG", 90)), None)
    crops = [transformed_copy(face, "crop", np.random.default_rng(s))[0] for s in range(12)]
    far = [c for c in crops if 4 < store.index.nearest_distance(_valid(c).phash) <= 12]  # type: ignore[operator]
    assert far  # crops the old 4-bit test let through as new faces
    assert all(store.index.near_duplicate(_valid(c).phash, c, 12) for c in crops)
    store.close()

    # A kept image whose file is gone is judged by its hash alone, at the strict 4 bits.
    index = KeptIndex()
    index.add("0" * 64, _valid(kept_a).phash, tmp_path / "missing.jpg")
    assert not index.near_duplicate(fresh.phash, fresh.data, 12)
    assert index.near_duplicate(_valid(kept_a).phash, kept_a, 12)


# -- issue 24: the verifier at its edges ---------------------------------------------------------------


def test_a_pair_exactly_at_min_similarity_is_a_duplicate(tmp_path: Path) -> None:
    """``--min-similarity`` is "at least": a pair whose similarity equals it is accepted, one float step
    above it is not; in dedupe's batch verifier and in scrape's inline check alike (">" passed the suite:
    no pair sat at the boundary)."""
    face = draw_face(np.random.default_rng([24, 1]), 96)
    (tmp_path / "a.png").write_bytes(encode_image(face, "PNG"))
    (tmp_path / "b.jpg").write_bytes(encode_image(face, "JPEG", 60))
    thumbs = np.stack(
        [
            np.frombuffer(open_for_hash_and_thumbnail((tmp_path / name).read_bytes())[1], np.uint8)
            for name in ("a.png", "b.jpg")
        ]
    )
    exact = pair_similarities(thumbs, np.array([0]), np.array([1]))[0]  # dedupe's own arithmetic
    above = float(np.nextafter(exact, np.float32(2)))
    assert 0.9 < exact < 1.0
    at = run(tmp_path, min_similarity=float(exact))
    assert at.clusters == [["a.png", "b.jpg"]] and (at.n_candidates, at.n_rejected) == (1, 0)
    over = run(tmp_path, min_similarity=above)
    assert over.clusters == [] and (over.n_candidates, over.n_rejected) == (1, 1)

    kept = KeptIndex()  # scrape: the same rule inline
    a, b = (_valid((tmp_path / name).read_bytes()) for name in ("a.png", "b.jpg"))
    kept.add(a.sha256, a.phash, tmp_path / "a.png", a.thumb)
    score = similarity(b.thumb, a.thumb)  # type: ignore[arg-type]
    assert kept.near_duplicate(b.phash, b.data, 12, min_similarity=score, thumb=b.thumb)
    above_score = float(np.nextafter(np.float32(score), np.float32(2)))
    assert not kept.near_duplicate(b.phash, b.data, 12, min_similarity=above_score, thumb=b.thumb)


def _flat(y: int, cb: int = 128, cr: int = 128) -> bytes:
    return bytes([y, cb, cr] * (THUMB_BYTES // 3))


def test_solid_colour_thumbnails_compare_by_their_colour_difference() -> None:
    """Flat in every channel: 1 - (largest channel difference) / 32, clipped to [-1, 1]. No test had a
    flat image, so rescaling this branch passed the suite."""
    cases = [
        (_flat(100), _flat(100), 1.0),
        (_flat(100), _flat(108), 0.75),
        (_flat(100, cb=120), _flat(104, cb=136), 0.5),  # the largest difference (Cb, 16) decides
        (_flat(0), _flat(200), -1.0),  # clipped
    ]
    for a, b, expected in cases:
        assert similarity(a, b) == expected
        both = np.frombuffer(a + b, np.uint8).reshape(2, THUMB_BYTES)
        assert pair_similarities(both, np.array([0]), np.array([1]))[0] == expected  # dedupe's batch path


def test_solid_colour_images_are_duplicates_only_when_their_colours_nearly_match(tmp_path: Path) -> None:
    """End to end: flat greys hash alike (distance 0), so the colour rule alone decides. At the default
    0.94: 1 grey level apart is a copy (0.969), 2 or 3 are not (0.9375, 0.906)."""
    for level in (100, 101, 103):
        Image.new("RGB", (64, 64), (level, level, level)).save(tmp_path / f"grey{level}.png")
    result = run(tmp_path)
    assert result.n_candidates == 3  # every pair is a hash candidate
    assert result.clusters == [["grey100.png", "grey101.png"]] and result.n_rejected == 2


def _thumb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> bytes:
    return np.stack([y, cb, cr], axis=-1).clip(0, 255).astype(np.uint8).tobytes()


def test_verifier_judges_a_greyscale_copy_by_its_one_structured_channel() -> None:
    """A channel flat in either picture carries no evidence and is left out, not counted as zero
    correlation (then greyscale copies could never reach 0.94); "flat" is a standard deviation under 1.5
    levels over the 256 pixels, so a JPEG's +-1 chroma noise in a grey picture is flat too."""
    rng = np.random.default_rng(24)
    y = rng.integers(40, 216, THUMB_BYTES // 3).astype(float)
    grey = np.full_like(y, 128.0)
    original = _thumb(y, grey, grey)
    copy = _thumb(y + rng.normal(0, 3, y.shape), grey, grey)  # re-encoded: a little noise in Y only

    def chroma_noise() -> np.ndarray:  # independent in each picture: nothing to correlate
        return grey + rng.integers(-1, 2, y.shape)

    noisy = _thumb(y, chroma_noise(), chroma_noise())
    noisy_copy = _thumb(y + rng.normal(0, 3, y.shape), chroma_noise(), chroma_noise())
    y_only = float(
        np.corrcoef(np.frombuffer(original, np.uint8)[0::3], np.frombuffer(copy, np.uint8)[0::3])[0, 1]
    )
    assert abs(similarity(original, copy) - y_only) < 1e-5 and y_only > 0.99
    assert similarity(noisy, noisy_copy) > 0.99  # +-1 chroma noise is flat, else it would drag the
    # mean down to about a third


def test_verifier_finds_greyscale_copies_in_a_folder(tmp_path: Path) -> None:
    face = draw_face(np.random.default_rng([24, 3]), 96).convert("L")
    face.save(tmp_path / "grey.png")
    face.save(tmp_path / "grey-copy.jpg", quality=80)
    draw_face(np.random.default_rng([24, 4]), 96).convert("L").save(tmp_path / "other.png")
    result = run(tmp_path, threshold=12)
    assert result.clusters == [["grey.png", "grey-copy.jpg"]]


def test_a_moved_byte_identical_pair_is_an_accepted_duplicate_in_report_and_sidecar(
    tmp_path: Path, lookalikes: list[tuple[bytes, bytes, int]]
) -> None:
    """Issue 25.3: byte-identical pairs were left out of the accepted mask before the borderline table,
    so a copy that was moved showed as "accepted: false" (distinct) in the HTML and the JSON sidecar."""
    folder = tmp_path / "faces"
    folder.mkdir()
    face = encode_image(draw_face(np.random.default_rng([25, 3]), 96), "JPEG", 90)
    (folder / "a.jpg").write_bytes(face)
    (folder / "a-copy.jpg").write_bytes(face)
    distinct_a, distinct_b, _ = lookalikes[0]  # within the hash threshold, turned down by the thumbnails
    (folder / "lookalike-1.jpg").write_bytes(distinct_a)
    (folder / "lookalike-2.jpg").write_bytes(distinct_b)
    report = tmp_path / "report.html"
    result = run(
        folder, action="move", quarantine=tmp_path / "quarantine", write_report=True, report_path=report
    )
    assert result.clusters == [["a.jpg", "a-copy.jpg"]] and result.n_removed == 1  # a.jpg written first
    assert (result.n_candidates, result.n_rejected) == (2, 1)

    sidecar = json.loads(report.with_suffix(".json").read_text())
    rows = {(row["a"], row["b"]): row for row in sidecar["data"]["borderline"]}
    exact = rows[("a-copy.jpg", "a.jpg")]
    assert (exact["accepted"], exact["exact"]) == (True, True)
    distinct = rows[("lookalike-1.jpg", "lookalike-2.jpg")]
    assert (distinct["accepted"], distinct["exact"]) == (False, False)
    tables = [section.get("table") or [] for section in sidecar["sections"]]
    shown = [
        row for table in tables for row in table if {row.get("a"), row.get("b")} == {"a.jpg", "a-copy.jpg"}
    ]
    assert shown and all(row["accepted"] is True for row in shown)

    html = report.read_text()
    assert "duplicate (byte-identical): similarity 1.0, 0 bits: a-copy.jpg | a.jpg" in html
    assert "distinct: similarity" in html and "distinct: similarity 1.0, 0 bits: a-copy.jpg" not in html


def test_sha256_only_for_files_that_share_a_size_and_exact_copies_still_count(tmp_path: Path) -> None:
    """Issue 28.3: a file no other file matches in size cannot be byte-identical to one, so it gets no
    sha256 (8 % of a decode); a copy added later gives both files one, the cached one included."""
    faces = [encode_image(draw_face(np.random.default_rng(90 + k), 96), "JPEG", 80 + k) for k in range(3)]
    assert len({len(data) for data in faces}) == 3
    for k, data in enumerate(faces):
        (tmp_path / f"f{k}.jpg").write_bytes(data)
    first = run(tmp_path, workers=2)
    assert first.n_clusters == 0
    with contextlib.closing(sqlite3.connect(tmp_path / CACHE_NAME)) as db:
        assert db.execute("SELECT COUNT(*) FROM hashes WHERE sha256 IS NOT NULL").fetchone()[0] == 0

    (tmp_path / "copy.jpg").write_bytes(faces[1])  # byte-identical to the cached f1.jpg
    (tmp_path / "same-size.jpg").write_bytes(faces[2][:-3] + b"\x00\xff\xd9")  # f2's size, other bytes
    requality = encode_image(Image.open(tmp_path / "f0.jpg"), "JPEG", 60)  # a near copy of another size
    assert len(requality) not in {len(data) for data in faces}
    (tmp_path / "requality.jpg").write_bytes(requality)
    second = run(tmp_path, workers=2)
    assert second.n_hashed == 3 and second.n_exact_duplicates == 1  # two files without a sha256 differ
    assert sorted(map(sorted, second.clusters)) == [
        ["copy.jpg", "f1.jpg"],
        ["f0.jpg", "requality.jpg"],
        ["f2.jpg", "same-size.jpg"],
    ]
    with contextlib.closing(sqlite3.connect(tmp_path / CACHE_NAME)) as db:
        shas = dict(db.execute("SELECT rel, sha256 FROM hashes"))
    assert shas["f0.jpg"] is None and shas["f1.jpg"] == shas["copy.jpg"] is not None
    assert None is not shas["f2.jpg"] != shas["same-size.jpg"] is not None


@pytest.fixture(scope="module")
def face_thumbnails() -> np.ndarray:
    """Thumbnails as dedupe sees them: 60 aligned faces, a near copy of each (every transform), a
    greyscale face, solid colours and one noise image; (n, 768) uint8."""
    rng = np.random.default_rng(41)
    images: list[bytes] = []
    for k in range(60):
        face = draw_face(np.random.default_rng([41, k]), 96)
        images.append(encode_image(face, "JPEG", 90))
        images.append(transformed_copy(face, ("jpeg", "resize", "brightness", "crop")[k % 4], rng)[0])
    images.append(encode_image(draw_face(np.random.default_rng([41, 99]), 96).convert("L"), "PNG"))
    for colour in ((120, 60, 30), (121, 60, 31), (10, 200, 10)):
        images.append(encode_image(Image.new("RGB", (64, 48), colour), "PNG"))
    noise = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    images.append(encode_image(Image.fromarray(noise), "PNG"))
    images.append(images[0])  # identical thumbnails: the one pair whose bound is tight (both equal 1)
    return np.stack([np.frombuffer(open_for_hash_and_thumbnail(data)[1], np.uint8) for data in images])


def test_the_similarity_bound_never_skips_a_pair_that_reaches_the_floor(face_thumbnails: np.ndarray) -> None:
    """Issue 28.2: pairs whose upper bound is below ``at_least`` are skipped (-inf). Every pair of the set
    (near copies, distinct aligned faces, flat and greyscale channels) keeps its exact value when it
    reaches the floor, including a floor set exactly at one pair's similarity, and most far pairs are
    skipped (else the bound buys nothing)."""
    from diffkit.dataset import verify

    n = len(face_thumbnails)
    pi, pj = np.triu_indices(n, k=1)
    exact = pair_similarities(face_thumbnails, pi, pj)
    features = verify.bound_features(face_thumbnails)
    bounds = verify.upper_bounds(features.take(pi), features.take(pj))
    assert (bounds >= exact - 1e-5).all()
    copies = exact[np.arange(0, 120, 2) * (2 * n - np.arange(0, 120, 2) - 1) // 2]  # (2k, 2k + 1) pairs
    assert (copies >= 0.94).all()
    on_a_pair = float(np.sort(exact)[-200])  # the boundary: a floor equal to a pair's value
    tight = float(exact[(pi == 0) & (pj == n - 1)][0])  # ...and to the identical pair's, where bound == value
    for floor in (0.5, 0.94, on_a_pair, tight):
        bounded = pair_similarities(face_thumbnails, pi, pj, at_least=floor)
        computed = np.isfinite(bounded)
        assert np.array_equal(bounded[computed], exact[computed])
        assert (exact[~computed] < floor).all()
        assert ((bounded >= floor) == (exact >= floor)).all()
        assert computed.mean() < 0.35, floor


def test_verify_candidates_reports_what_it_did_before_the_bound(
    face_thumbnails: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bounded stage 2 gives the same accepted pairs, values, histogram and borderline table as
    computing every candidate, with and without enough close calls to fill the table, and a
    byte-identical pair whose thumbnails are far apart still reports its own value."""
    from dataclasses import replace as dataclasses_replace

    from diffkit.dedupe import stages
    from diffkit.dedupe.hashing import HashRecord
    from diffkit.dedupe.search import SearchResult
    from diffkit.dedupe.stages import SIMILARITY_BINS, _borderline, verify_candidates

    n = len(face_thumbnails) - 1  # without the identical last one
    face_thumbnails = face_thumbnails[:n]
    computed: list[int] = []

    def counting(*args: object, **kwargs: object) -> np.ndarray:
        values = pair_similarities(*args, **kwargs)  # type: ignore[arg-type]
        computed.append(int(np.isfinite(values).sum()))
        return values

    monkeypatch.setattr(stages, "pair_similarities", counting)
    records = [HashRecord(f"{k:03d}.jpg", 1, 0, f"sha{k}", 0, 96, 96, None) for k in range(n)]
    records[-1] = dataclasses_replace(records[-1], sha256="sha0")  # noise image "byte-identical" to face 0
    for size in (n, 12):  # all pairs (plenty of close calls), then too few to fill the table
        pi, pj = (a.astype(np.int64) for a in np.triu_indices(size, k=1))
        found = SearchResult(
            pi, pj, np.zeros(pi.size, np.uint8), np.zeros(size, np.uint8), pi[:0], pj[:0], pi[:0]
        )
        computed.clear()
        got = verify_candidates(records[:size], face_thumbnails[:size], found, 0.94, True)
        if size == n:  # the bound skipped most pairs (the far byte-identical pair's value computed after)
            assert sum(computed) < 0.35 * pi.size, computed
        sims = pair_similarities(face_thumbnails[:size], pi, pj)
        exact = np.array([records[i].sha256 == records[j].sha256 for i, j in zip(pi, pj, strict=True)], bool)
        accept = exact | (sims >= 0.94)
        histogram, _ = np.histogram(
            np.clip(sims, SIMILARITY_BINS[0], SIMILARITY_BINS[-1]), bins=SIMILARITY_BINS
        )
        assert np.array_equal(got.pairs_i, pi[accept]) and np.array_equal(got.pairs_j, pj[accept])
        assert np.array_equal(got.similarity, sims[accept]) and got.histogram == histogram.tolist()
        assert got.borderline == _borderline(records[:size], pi, pj, found.distances, sims, accept, exact)
        assert got.n_rejected == int((~accept).sum())
        close_calls = int((~accept & (sims >= 0.5)).sum())
        assert close_calls >= 25 if size == n else close_calls < 25  # both ways of filling the table
        far_copy = exact & (pi == 0) & (pj == size - 1)
        assert far_copy.any() == (size == n) and (sims[far_copy] < 0.5).all()


def test_kept_bound_gives_the_inline_check_its_exact_answer(
    face_thumbnails: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28: the scraper's inline check bounds every candidate before computing any similarity. Over
    1,100 kept images (the index grows past its first 1,024 rows) that are all candidates, its answer
    for each probe equals the exact test on every candidate, at thresholds that include one set
    exactly at a probe's best similarity."""
    from diffkit.dataset.verify import similarities
    from diffkit.scrape import kept as kept_module

    computed: list[int] = []

    def counting(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        computed.append(len(a))
        return similarities(a, b)

    monkeypatch.setattr(kept_module, "similarities", counting)
    rng = np.random.default_rng(28)
    smooth = [
        np.asarray(Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize((16, 16)))
        for _ in range(1100 - 60)
    ]
    kept = np.concatenate([face_thumbnails[0:120:2], np.stack(smooth).reshape(-1, THUMB_BYTES)])
    index = KeptIndex()
    for k, thumb in enumerate(kept):
        index.add(f"sha{k}", 0, None, thumb.tobytes())
    probes = face_thumbnails[1:120:2]  # each face's near copy, whose original is kept
    probes = np.concatenate([probes, face_thumbnails[120:], kept[-5:] // 2 + 60])
    best = [float(similarities(np.repeat(p[None], len(kept), 0), kept).max()) for p in probes]
    for min_similarity in (0.5, 0.94, 0.99, best[3], best[-1]):
        computed.clear()
        expected = [b >= min_similarity for b in best]
        got = [index.near_duplicate(0, b"", 12, min_similarity, thumb=p.tobytes()) for p in probes]
        assert got == expected, min_similarity
        if min_similarity == 0.94:  # the bound spared nearly all exact similarities
            assert sum(computed) < 0.02 * len(kept) * len(probes), sum(computed)
    assert any(expected) and not all(expected)
