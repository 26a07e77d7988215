"""Issue 28.3: a new default decode path migrates old manifests and caches; nothing is refused.

The default pHash decode became ``draft-L-64`` (libjpeg's 1/8 scale for large JPEGs). A folder scraped
on the retired ``draft-L-256`` is made here by a real scrape with that path patched in; then a scrape of
the folder on the current path (which used to stop with "scrape into a new --out folder") must migrate
it: every kept file whose bytes still have its sha256 hashed again, old values kept (and marked) where
the file is gone or changed, and dedupe must find exactly the clusters of a folder never scraped.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from diffkit.dataset import rehash
from diffkit.dataset.manifest import MANIFEST_NAME, Manifest, recorded_hashes
from diffkit.dataset.phash import DRAFT_DECODE, phash, to_unsigned64
from diffkit.dataset.verify import open_for_hash_and_thumbnail
from diffkit.dedupe.config import CACHE_NAME, DedupeConfig
from diffkit.dedupe.hashing import HashCache, hash_images, scan_folder
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.run import dedupe
from diffkit.fakesite.site import FaceSite, SiteConfig
from diffkit.scrape import storage, validate
from diffkit.scrape.config import ScrapeConfig
from diffkit.scrape.run import scrape
from diffkit.scrape.storage import Store

OLD = "draft-L-256"
N_OLD = 30


def _scrape(out: Path, n: int, seed: int = 0) -> None:
    # 256 px faces: the retired path decodes them whole, the current one at 1/4 scale (other values).
    # threshold=0 lets most of the site's near copies in, so that dedupe has clusters to find; one request
    # at a time, so that which ones (the same picture at distance 0 is refused) does not depend on timing.
    site_config = SiteConfig(size=256, repeat_rate=0.1, near_dup_rate=0.5, seed=5)
    with FaceSite(site_config) as site:
        config = ScrapeConfig(
            n=n, out=out, url=site.url, concurrency=1, rps=1000.0, threshold=0,
            progress=False, report=False, seed=seed,
        )  # fmt: skip
        assert scrape(config).kept_total == n


@pytest.fixture(scope="module")
def old_scrape(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder as an earlier diffkit scraped it: every value on the retired decode path."""
    out = tmp_path_factory.mktemp("old") / "faces"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validate, "HASH_DECODE", OLD)
        patch.setattr(storage, "HASH_DECODE", OLD)
        _scrape(out, N_OLD)
    assert _meta(out)["hash_decode"] == OLD and len(recorded_hashes(out, OLD)) == N_OLD
    return out


@pytest.fixture
def folder(old_scrape: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(old_scrape, tmp_path / "faces"))  # copy2: every mtime kept


def _meta(root: Path) -> dict[str, str]:
    with contextlib.closing(sqlite3.connect(root / MANIFEST_NAME)) as db:
        return dict(db.execute("SELECT key, value FROM meta").fetchall())


def _rows(root: Path, sql: str) -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(root / MANIFEST_NAME)) as db:
        return db.execute(sql).fetchall()


def _kept(root: Path) -> dict[str, Path]:
    return {str(sha): root / str(name) for sha, name in _rows(root, "SELECT sha256, file_name FROM images")}


def run(directory: Path, **options: object) -> DedupeResult:
    options = {"write_report": False, "progress": False, "workers": 1, **options}
    return dedupe(DedupeConfig(directory=directory, **options))  # type: ignore[arg-type]


def clusters(result: DedupeResult) -> set[frozenset[str]]:
    """The groups found, whichever file each kept (keepers follow fetch times, which a plain copy lacks)."""
    return {frozenset(cluster) for cluster in result.clusters}


def fresh_copy(root: Path, target: Path) -> Path:
    """The same images with no manifest and no cache: what a fresh run sees."""
    shutil.copytree(root / "images", target / "images")
    return target


def assert_migrated(root: Path, stale: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Every kept image (but ``stale``) holds exactly what the current path computes for its file."""
    assert _meta(root)["hash_decode"] == DRAFT_DECODE
    recorded = {entry.sha256: entry for entry in recorded_hashes(root, DRAFT_DECODE).values()}
    stored = {sha: to_unsigned64(int(v)) for sha, v in _rows(root, "SELECT sha256, phash FROM images")}
    for sha, path in _kept(root).items():
        if sha in stale:
            assert sha not in recorded
            continue
        data = path.read_bytes()
        assert stored[sha] == recorded[sha].phash == phash(data, DRAFT_DECODE)
        assert recorded[sha].thumb == open_for_hash_and_thumbnail(data, DRAFT_DECODE)[1]
        assert (recorded[sha].size, recorded[sha].mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns)


# -- the manifest ------------------------------------------------------------------------------------
def test_scrape_on_an_old_manifest_migrates_it_and_goes_on(folder: Path) -> None:
    old = {sha: to_unsigned64(int(v)) for sha, v in _rows(folder, "SELECT sha256, phash FROM images")}
    assert any(old[sha] != phash(path.read_bytes(), DRAFT_DECODE) for sha, path in _kept(folder).items())
    _scrape(folder, N_OLD + 10, seed=1)  # used to stop: "holds pHashes computed with 'draft-L-256'"
    assert len(_kept(folder)) == N_OLD + 10
    assert_migrated(folder)
    assert _rows(folder, "SELECT COUNT(*) FROM stale_phash") == [(0,)]


def test_migrated_manifest_gives_dedupe_the_clusters_of_a_fresh_run(folder: Path, tmp_path: Path) -> None:
    unmigrated = run(folder)  # dedupe alone never migrates: old-path records are not used, files hashed
    assert (unmigrated.n_hashed, unmigrated.n_from_scrape) == (N_OLD, 0)
    (folder / CACHE_NAME).unlink()
    manifest = Manifest.open(folder, DRAFT_DECODE, progress=False)
    assert manifest.migrated == N_OLD and manifest.stale_shas() == []
    manifest.close()
    assert_migrated(folder)
    migrated = run(folder)
    assert (migrated.n_hashed, migrated.n_from_scrape) == (0, N_OLD)  # nothing decoded: the record serves
    fresh = run(fresh_copy(folder, tmp_path / "fresh"))
    assert migrated.n_clusters > 0
    assert clusters(migrated) == clusters(unmigrated) == clusters(fresh)


def test_a_file_changed_since_keeps_its_old_value_and_dedupe_hashes_it(folder: Path, tmp_path: Path) -> None:
    kept = list(_kept(folder).items())
    (changed_sha, changed), (_, other) = kept[3], kept[4]
    old_value = _rows(folder, f"SELECT phash FROM images WHERE sha256 = '{changed_sha}'")
    changed.write_bytes(other.read_bytes())  # another picture under this row's name: never trusted
    manifest = Manifest.open(folder, DRAFT_DECODE, progress=False)
    assert manifest.migrated == N_OLD - 1 and manifest.stale_shas() == [changed_sha]
    assert changed_sha not in dict(manifest.known_hashes(current_only=True))
    assert changed_sha in dict(manifest.known_hashes())  # still a known sha256, with its old value
    manifest.close()
    assert _rows(folder, f"SELECT phash FROM images WHERE sha256 = '{changed_sha}'") == old_value
    assert_migrated(folder, stale={changed_sha})
    result = run(folder)
    assert (result.n_hashed, result.n_from_scrape) == (1, N_OLD - 1)  # the changed file, by dedupe itself
    assert clusters(result) == clusters(run(fresh_copy(folder, tmp_path / "fresh")))


def test_a_killed_migration_resumes_where_it_stopped(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rehash, "BATCH", 4)
    real, calls = rehash._rehash, []

    def dies_on_the_tenth(task: tuple[str, Path, str]) -> rehash.Rehashed | None:
        calls.append(task)
        if len(calls) == 10:
            raise KeyboardInterrupt  # Ctrl-C during the third batch
        return real(task)

    monkeypatch.setattr(rehash, "_rehash", dies_on_the_tenth)
    with pytest.raises(KeyboardInterrupt):
        Manifest.open(folder, DRAFT_DECODE, progress=False)
    assert _meta(folder)["hash_decode"] == DRAFT_DECODE  # marked and renamed in one commit
    assert _rows(folder, "SELECT COUNT(*) FROM stale_phash") == [(N_OLD - 8,)]  # two batches committed
    monkeypatch.setattr(rehash, "_rehash", real)
    manifest = Manifest.open(folder, DRAFT_DECODE, progress=False)
    assert manifest.migrated == N_OLD - 8 and manifest.stale_shas() == []
    manifest.close()
    assert_migrated(folder)


def test_removed_duplicates_migrate_from_the_quarantine_or_keep_their_old_value(
    folder: Path, tmp_path: Path
) -> None:
    moved = run(folder, action="move", quarantine=tmp_path / "q")
    assert moved.n_removed > 0
    (folder / CACHE_NAME).unlink()
    lost_sha, lost_to = _rows(folder, "SELECT sha256, moved_to FROM dedupe_removed ORDER BY sha256")[0]
    Path(str(lost_to)).unlink()  # a quarantined file deleted by hand: nothing to hash it from
    manifest = Manifest.open(folder, DRAFT_DECODE, progress=False)
    assert manifest.stale_shas() == [lost_sha] and manifest.migrated == N_OLD - 1
    current = dict(manifest.known_hashes(current_only=True))
    assert lost_sha not in current and len(current) == N_OLD - 1
    manifest.close()
    for sha, to, value in _rows(folder, "SELECT sha256, moved_to, phash FROM dedupe_removed"):
        if sha != lost_sha:
            assert to_unsigned64(int(value)) == phash(Path(str(to)).read_bytes(), DRAFT_DECODE)  # type: ignore[arg-type]
    assert_migrated(folder)
    old_value = _rows(folder, f"SELECT phash FROM dedupe_removed WHERE sha256 = '{lost_sha}'")
    again = Manifest.open(folder, DRAFT_DECODE, progress=False)  # the lost file's mark stays, unchanged
    assert again.stale_shas() == [lost_sha] and again.migrated == 0 and again.db.total_changes == 0
    again.close()
    assert _rows(folder, f"SELECT phash FROM dedupe_removed WHERE sha256 = '{lost_sha}'") == old_value


def test_store_index_after_migration_holds_only_current_values(folder: Path) -> None:
    store = Store(folder)  # what scrape opens: migrates here
    try:
        store.reconcile(max_pixels=10**8, threshold=12)
        for sha, path in _kept(folder).items():
            assert store.index.nearest_distance(phash(path.read_bytes(), DRAFT_DECODE)) == 0, sha
    finally:
        store.close()


def test_store_never_compares_an_unmigrated_value_but_still_knows_its_content(
    folder: Path, tmp_path: Path
) -> None:
    """A removed duplicate whose file is gone keeps its old-path pHash: scrape's inline check must not
    compare it (a few bits off on another path), yet its sha256 stays known (never fetched again)."""
    assert run(folder, action="move", quarantine=tmp_path / "q").n_removed > 0
    (folder / CACHE_NAME).unlink()
    lost_sha, lost_to = _rows(folder, "SELECT sha256, moved_to FROM dedupe_removed ORDER BY sha256")[0]
    Path(str(lost_to)).unlink()
    manifest = Manifest.open(folder, DRAFT_DECODE, progress=False)
    current = manifest.known_hashes(current_only=True)
    manifest.close()
    store = Store(folder)
    try:
        store.reconcile(max_pixels=10**8, threshold=12)
        assert len(store.index) == len(current)  # the old value is not among the compared pHashes
        assert lost_sha in store.index.sha256
    finally:
        store.close()


# -- dedupe's cache ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _cache(root: Path) -> Iterator[HashCache]:
    cache = HashCache(root)
    try:
        yield cache
    finally:
        cache.close()


def test_old_dedupe_cache_is_replaced_and_gives_the_clusters_of_a_fresh_run(
    folder: Path, tmp_path: Path
) -> None:
    (folder / MANIFEST_NAME).unlink()  # a plain folder: only the cache holds hashes
    files = scan_folder(folder).files
    with _cache(folder) as cache:  # what an earlier diffkit's dedupe cached
        hash_images(files, "phash", OLD, 1, cache)
        assert len(cache.load("phash", OLD)) == N_OLD
    first = run(folder)
    assert first.n_hashed == N_OLD  # old rows are never read as current values: every file hashed again
    with _cache(folder) as cache:
        assert cache.load("phash", OLD) == {} and len(cache.load("phash", DRAFT_DECODE)) == N_OLD
        assert cache.load("phash", DRAFT_DECODE)[files[0].rel].hash == phash(files[0].path, DRAFT_DECODE)
    assert clusters(first) == clusters(run(fresh_copy(folder, tmp_path / "fresh")))
    assert first.n_clusters > 0

    changed = files[2].path
    changed.write_bytes(files[5].path.read_bytes())  # changed since: hashed again, never the cached value
    second = run(folder)
    assert second.n_hashed == 1
    assert any({files[2].rel, files[5].rel} <= set(cluster) for cluster in second.clusters)
