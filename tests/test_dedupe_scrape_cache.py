"""Issue 28.2: dedupe of a scrape folder decodes nothing the scraper already decoded.

Scrape records each kept image's pHash and thumbnail (from its validation decode) in the manifest's
``image_hashes`` table with the file's size and mtime as written; dedupe uses them only for files whose
size and mtime are unchanged and whose status has not changed since the write (ctime) or whose sha256
is unchanged. Decodes are counted by wrapping dedupe's decoder in this process
(one worker, so no pool hides a decode).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffkit.dataset.manifest import MANIFEST_NAME, Manifest, recorded_hashes
from diffkit.dataset.phash import DRAFT_DECODE
from diffkit.dedupe import hashing
from diffkit.dedupe.config import DedupeConfig
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.run import dedupe
from diffkit.fakesite.site import FaceSite, SiteConfig
from diffkit.scrape.config import ScrapeConfig
from diffkit.scrape.run import scrape

N_SCRAPED = 40


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scrape of the fake site with repeats and near copies on. ``threshold=0`` lets near copies
    through the scraper's inline check, so that dedupe has clusters to find; exact repeats are refused
    by sha256 as always."""
    out = tmp_path_factory.mktemp("scrape") / "faces"
    site_config = SiteConfig(size=128, repeat_rate=0.15, near_dup_rate=0.3, seed=3)
    with FaceSite(site_config) as site:
        config = ScrapeConfig(
            n=N_SCRAPED, out=out, url=site.url, concurrency=2, rps=1000.0, threshold=0,
            progress=False, report=False, seed=0,
        )  # fmt: skip
        result = scrape(config)
    assert result.kept_total == N_SCRAPED and result.duplicates_exact > 0
    return out


@pytest.fixture
def folder(scraped: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy (copy2 keeps every mtime to the nanosecond, as a fresh scrape folder has). A copy's
    files have new ctimes, so no status is trusted (``SETTLED_NS`` 0): these tests check the sha256
    path; ``test_a_fresh_scrape_folder_is_trusted_on_its_status`` checks the other."""
    monkeypatch.setattr(hashing, "SETTLED_NS", 0)
    return Path(shutil.copytree(scraped, tmp_path / "faces"))


@contextlib.contextmanager
def counting_decodes() -> Iterator[list[str]]:
    """Names of the files dedupe's decoder opened in this process."""
    decoded: list[str] = []
    real = hashing.open_for_hash_and_thumbnail

    def counting(data: bytes, decode: str = DRAFT_DECODE) -> object:
        decoded.append(hashlib.sha256(data).hexdigest())
        return real(data, decode)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(hashing, "open_for_hash_and_thumbnail", counting)
        yield decoded


def run(directory: Path, **options: object) -> DedupeResult:
    options = {"write_report": False, "progress": False, "workers": 1, **options}
    return dedupe(DedupeConfig(directory=directory, **options))  # type: ignore[arg-type]


def outcome(result: DedupeResult) -> tuple[object, ...]:
    """Everything a run decided, for comparing runs."""
    return (
        result.clusters,
        result.cluster_distances,
        result.n_candidates,
        result.n_rejected,
        result.borderline,
        result.near_misses,
        result.nearest_histogram,
        result.similarity_histogram,
    )


def together(result: DedupeResult, root: Path, *paths: Path) -> bool:
    """Whether the files are in one cluster."""
    wanted = {path.relative_to(root).as_posix() for path in paths}
    return any(wanted <= set(cluster) for cluster in result.clusters)


def kept_files(root: Path) -> list[Path]:
    with contextlib.closing(sqlite3.connect(root / MANIFEST_NAME)) as db:
        return [root / name for (name,) in db.execute("SELECT file_name FROM images ORDER BY id")]


def test_scrape_records_exactly_what_dedupe_computes(scraped: Path) -> None:
    recorded = recorded_hashes(scraped, DRAFT_DECODE)
    assert len(recorded) == N_SCRAPED
    for name, entry in recorded.items():
        path = scraped / name
        sha, value, width, height, error, thumb = hashing.hash_file((str(path), "phash", DRAFT_DECODE))
        assert error is None
        assert (entry.sha256, entry.phash, entry.thumb, entry.width, entry.height) == (
            sha, value, thumb, width, height,
        )  # fmt: skip
        stat = path.stat()
        assert (entry.size, entry.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    assert recorded_hashes(scraped, "full") == {}  # values of another decode path are never used


def test_fresh_scrape_folder_decodes_nothing_and_warm_equals_cold(folder: Path) -> None:
    with counting_decodes() as decoded:
        warm = run(folder)
    assert decoded == [] and (warm.n_hashed, warm.n_from_scrape, warm.n_cached) == (0, N_SCRAPED, N_SCRAPED)
    assert warm.n_clusters > 0  # the near copies the site served are found
    assert not (folder / hashing.CACHE_NAME).exists() or _cache_rows(folder) == 0  # nothing was hashed

    with counting_decodes() as decoded:
        cold = run(folder, use_cache=False)  # --no-cache: every file decoded, scrape's values unused
    assert len(decoded) == N_SCRAPED and (cold.n_hashed, cold.n_from_scrape) == (N_SCRAPED, 0)
    assert outcome(cold) == outcome(warm)

    hidden = folder / MANIFEST_NAME  # no scrape data at all (a plain folder): the same clusters again
    hidden.rename(folder.parent / "manifest-aside.sqlite")
    with counting_decodes() as decoded:
        plain = run(folder)
    assert len(decoded) == N_SCRAPED and plain.n_from_scrape == 0
    assert plain.clusters == warm.clusters and plain.borderline == warm.borderline


def _cache_rows(folder: Path) -> int:
    with contextlib.closing(sqlite3.connect(folder / hashing.CACHE_NAME)) as db:
        return int(db.execute("SELECT COUNT(*) FROM hashes").fetchone()[0])


def test_file_replaced_after_the_scrape_is_hashed_again(folder: Path) -> None:
    files = kept_files(folder)
    a, b = files[0], files[1]
    a.write_bytes(b.read_bytes())  # another picture (another size): the stat alone tells
    with counting_decodes() as decoded:
        result = run(folder)
    assert len(decoded) == 1 and result.n_hashed == 1 and result.n_from_scrape == N_SCRAPED - 1
    assert together(result, folder, a, b)  # judged by its new content
    assert result.n_exact_duplicates >= 1


def test_same_size_replacement_with_forged_mtime_is_hashed_again(folder: Path) -> None:
    """Only the sha256 can tell: the replacement has the recorded size and mtime."""
    files = kept_files(folder)
    target = max(files, key=lambda p: p.stat().st_size)
    other = next(p for p in files if p != target and p.stat().st_size < target.stat().st_size)
    before = target.stat()
    # Another picture padded to the same size (bytes after a JPEG's end marker are ignored by decoders)
    target.write_bytes(other.read_bytes().ljust(before.st_size, b"\0"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with counting_decodes() as decoded:
        result = run(folder)
    assert len(decoded) == 1 and result.n_hashed == 1 and result.n_from_scrape == N_SCRAPED - 1
    assert together(result, folder, target, other)


def test_a_file_added_by_hand_is_hashed_and_joins_its_copy(folder: Path) -> None:
    """Files without a manifest row (copied in by hand) go through dedupe's own hashing and cache."""
    source = kept_files(folder)[5]
    (folder / "extra").mkdir()
    shutil.copy2(source, folder / "extra" / "copy.jpg")
    with counting_decodes() as decoded:
        first = run(folder)
    assert len(decoded) == 1 and (first.n_hashed, first.n_from_scrape) == (1, N_SCRAPED)
    assert any("extra/copy.jpg" in cluster for cluster in first.clusters)
    with counting_decodes() as decoded:
        second = run(folder)  # the hand-added file now comes from dedupe's cache
    assert decoded == [] and outcome(second) == outcome(first)


def test_move_drops_the_recorded_hashes_of_removed_files(folder: Path, tmp_path: Path) -> None:
    quarantine = tmp_path / "quarantine"
    moved = run(folder, action="move", quarantine=quarantine)
    assert moved.n_removed == moved.n_duplicates > 0
    with contextlib.closing(sqlite3.connect(folder / MANIFEST_NAME)) as db:
        kept = db.execute("SELECT COUNT(*) FROM images").fetchone()[0]
        recorded = db.execute("SELECT COUNT(*) FROM image_hashes").fetchone()[0]
        orphans = db.execute(
            "SELECT COUNT(*) FROM image_hashes WHERE sha256 NOT IN (SELECT sha256 FROM images)"
        ).fetchone()[0]
    assert (kept, recorded, orphans) == (N_SCRAPED - moved.n_removed, N_SCRAPED - moved.n_removed, 0)
    with counting_decodes() as decoded:
        again = run(folder)
    assert decoded == [] and again.n_clusters == 0 and again.n_from_scrape == kept


def test_manifest_from_before_the_table_is_migrated_and_hashed_lazily(folder: Path) -> None:
    with contextlib.closing(sqlite3.connect(folder / MANIFEST_NAME)) as db, db:
        db.execute("DROP TABLE image_hashes")  # as written by diffkit before issue 28
    with counting_decodes() as decoded:
        old = run(folder)
    assert len(decoded) == N_SCRAPED and old.n_from_scrape == 0  # hashed by dedupe, never refused
    manifest = Manifest.open(folder, DRAFT_DECODE)  # the next scrape of the folder adds the table
    try:
        assert manifest.kept_count() == N_SCRAPED
        assert manifest.db.execute("SELECT COUNT(*) FROM image_hashes").fetchone()[0] == 0
    finally:
        manifest.close()
    with counting_decodes() as decoded:
        again = run(folder)  # the old rows have no record: dedupe's own cache serves them
    assert decoded == [] and outcome(again) == outcome(old)


def test_a_touched_file_is_checked_again_by_decoding(folder: Path) -> None:
    """The record is keyed by size, mtime and sha256 together: a new mtime alone (same bytes) is a miss,
    decoded once, and then served by dedupe's own cache."""
    target = kept_files(folder)[3]
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000_000))
    with counting_decodes() as decoded:
        result = run(folder)
    assert (
        decoded == [hashlib.sha256(target.read_bytes()).hexdigest()] and result.n_from_scrape == N_SCRAPED - 1
    )


def test_against_uses_the_folder_record_and_leaves_a_scrape_reference_untouched(
    folder: Path, scraped: Path, tmp_path: Path
) -> None:
    """DIR's recorded hashes serve it; REF's manifest is never opened (a read-only SQLite open of a WAL
    database leaves -wal/-shm files behind), so REF is decoded and its listing stays the same."""
    reference = Path(shutil.copytree(scraped, tmp_path / "reference"))
    before = sorted(path.relative_to(reference).as_posix() for path in reference.rglob("*"))
    with counting_decodes() as decoded:
        result = run(folder, against=reference)
    assert len(decoded) == N_SCRAPED and result.n_hashed == 0  # REF's files only; DIR's from its record
    assert {leak["path"] for leak in result.leaks} == set(recorded_hashes(folder, DRAFT_DECODE))
    assert sorted(path.relative_to(reference).as_posix() for path in reference.rglob("*")) == before


def test_settled_is_a_status_change_within_the_second_after_the_write() -> None:
    mtime = 1_700_000_000_000_000_000
    assert hashing.settled(mtime, mtime) and hashing.settled(mtime + hashing.SETTLED_NS, mtime)
    assert not hashing.settled(mtime + hashing.SETTLED_NS + 1, mtime)  # changed later: read it
    assert not hashing.settled(mtime - 1, mtime)  # a status older than the write: not the file written


def test_a_fresh_scrape_folder_is_trusted_on_its_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 28.2 at size: a fresh scrape folder is neither decoded nor read (its files' ctimes are
    the scraper's own rename, within moments of the recorded mtime). A same-size rewrite with its mtime
    set back, made after that moment, moves the ctime: that one file is read, and hashed again."""
    monkeypatch.setattr(hashing, "SETTLED_NS", 200_000_000)  # the test's own writes come 0.3 s later
    out = tmp_path / "faces"
    with FaceSite(SiteConfig(size=96, seed=8)) as site:
        scrape(
            ScrapeConfig(n=12, out=out, url=site.url, concurrency=2, rps=1000.0, progress=False, report=False)
        )
    read: list[str] = []
    real_sha = hashing._sha256_of
    monkeypatch.setattr(hashing, "_sha256_of", lambda path: read.append(path.name) or real_sha(path))
    recorded = recorded_hashes(out, DRAFT_DECODE)

    def unsettled() -> list[str]:  # what the rule must read, from the files' own status
        return sorted(
            Path(name).name
            for name, entry in recorded.items()
            if not hashing.settled((out / name).stat().st_ctime_ns, entry.mtime_ns)
        )

    with counting_decodes() as decoded:
        first = run(out)
    assert decoded == [] and first.n_from_scrape == 12
    assert sorted(read) == unsettled() and len(read) <= 3  # normally none: only a slow fsync is read

    time.sleep(0.3)
    files = kept_files(out)
    target = max(files, key=lambda p: p.stat().st_size)
    other = next(p for p in files if p.stat().st_size < target.stat().st_size)
    before = target.stat()
    target.write_bytes(other.read_bytes().ljust(before.st_size, b"\0"))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    read.clear()
    with counting_decodes() as decoded:
        second = run(out)
    assert target.name in read and sorted(read) == unsettled()
    assert len(decoded) == 1 and second.n_hashed == 1 and together(second, out, target, other)
