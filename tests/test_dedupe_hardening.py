"""``diffkit dedupe`` against hostile folders: symlinks, unsafe paths, kill -9 mid-move, a second run,
rich markup and undecodable bytes in names, 16-bit and float pixels.

The CLI runs as a subprocess (``python -m diffkit.cli``), so these tests also check what a user sees:
the exit code, one error line, no traceback. Only modules that existed before this hardening are
imported at module level, so every test here runs (and fails for its own reason) on the old code too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image

from diffkit.dedupe.actions import MOVE_LOG_NAME
from diffkit.dedupe.config import CACHE_NAME, DedupeConfig
from diffkit.dedupe.result import DedupeResult
from diffkit.dedupe.run import dedupe
from diffkit.fakesite.faces import draw_face, write_face_folder

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reports_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Default reports (reports/ in the working directory) land in the test's folder."""
    monkeypatch.chdir(tmp_path)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        errors="backslashreplace",
    )


def run(directory: Path, **options: object) -> DedupeResult:
    options.setdefault("write_report", False)
    options.setdefault("progress", False)
    options.setdefault("workers", 1)
    return dedupe(DedupeConfig(directory=directory, **options))  # type: ignore[arg-type]


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, lines
    return lines[0]


def digests(*folders: Path) -> Counter[str]:
    """sha256 of every non-hidden regular file (symlinks are not files of the folder)."""
    found: Counter[str] = Counter()
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                found[hashlib.sha256(path.read_bytes()).hexdigest()] += 1
    return found


def make_newer(path: Path | bytes) -> None:
    """A later file time than every other file: on equal resolution, this copy is the one removed."""
    later = time.time_ns() + 10**15
    os.utime(path, ns=(later, later))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. symlinks are never kept, moved or deleted ---------------------------------------------------


@pytest.mark.parametrize("action", ["delete", "move"])
def test_symlink_to_the_only_copy_is_skipped_and_the_file_survives(tmp_path: Path, action: str) -> None:
    folder = tmp_path / "d"
    write_face_folder(folder, 4, size=64, seed=21, fmt="png")
    (folder / "face-00002.png").rename(folder / "z.png")
    original = sha(folder / "z.png")
    os.symlink("z.png", folder / "a.png")  # sorts before z.png: the old code kept the link
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(folder / "z.png", other / "copy.png")
    os.symlink(other, folder / "linked")  # a linked folder: never searched

    args = (
        ["--action", "delete", "--yes"]
        if action == "delete"
        else ["--action", "move", "--to", str(tmp_path / "q")]
    )
    result = cli("dedupe", str(folder), *args, "--json", "--report", str(tmp_path / "r.html"))
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)

    assert sha(folder / "z.png") == original  # the only real copy is still there
    assert os.readlink(folder / "a.png") == "z.png" and (folder / "a.png").is_file()  # link untouched
    assert sha(other / "copy.png") == original
    assert data["n_removed"] == 0 and data["clusters"] == [] and data["n_images"] == 4
    assert data["n_symlinks_skipped"] == 2 and data["symlinks_skipped"] == ["a.png", "linked/"]
    assert any("2 symlink(s) skipped" in note for note in data["notes"])
    assert not (tmp_path / "q").exists() or not any((tmp_path / "q").rglob("*.png"))

    text = cli("dedupe", str(folder))
    assert text.returncode == 0 and "note: 2 symlink(s) skipped" in text.stdout, text.stdout


def test_keeper_is_a_real_file_when_a_link_sits_in_the_cluster(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write_face_folder(folder, 3, size=64, seed=22, fmt="png")
    shutil.copyfile(folder / "face-00001.png", folder / "zz-copy.png")
    make_newer(folder / "zz-copy.png")  # newer: the original is the keeper
    os.symlink("face-00001.png", folder / "a-link.png")

    result = run(folder, action="delete", yes=True)
    assert result.clusters == [["face-00001.png", "zz-copy.png"]] and result.n_removed == 1
    assert (folder / "face-00001.png").is_file() and not (folder / "face-00001.png").is_symlink()
    assert not (folder / "zz-copy.png").exists() and (folder / "a-link.png").is_symlink()


# -- 2. every write, move and delete stays inside its folder, never through a symlink --------------


def test_delete_leaves_alone_paths_through_links_and_duplicates_whose_keeper_is_gone(tmp_path: Path) -> None:
    from diffkit.dedupe.actions import Removal, delete_duplicates

    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir(), outside.mkdir()
    for name in ("x.png", "y.png"):
        (outside / name).write_bytes(b"outside " + name.encode())
    (root / "dup.png").write_bytes(b"copy")
    os.symlink(outside, root / "linkdir")

    outcome = delete_duplicates(
        root,
        [
            Removal("linkdir/x.png", "dup.png", 0),  # through a linked folder: outside the folder
            Removal("dup.png", "keeper-gone.png", 0),  # its keeper vanished since the scan: the only copy
        ],
    )
    done = outcome if isinstance(outcome, list) else [r.rel for r in outcome.done]
    assert done == []
    assert (outside / "x.png").read_bytes() == b"outside x.png" and (root / "dup.png").read_bytes() == b"copy"
    reasons = {item["path"]: item["reason"] for item in outcome.left_alone}  # type: ignore[union-attr]
    assert "symlink linkdir" in reasons["linkdir/x.png"] and "keeper" in reasons["dup.png"]


def test_move_never_goes_through_a_symlink_in_the_quarantine(tmp_path: Path) -> None:
    folder, quarantine, outside = tmp_path / "d", tmp_path / "q", tmp_path / "outside"
    write_face_folder(folder / "sub", 3, size=64, seed=23, fmt="png")
    shutil.copyfile(folder / "sub" / "face-00000.png", folder / "sub" / "zz.png")
    make_newer(folder / "sub" / "zz.png")
    quarantine.mkdir(), outside.mkdir()
    os.symlink(outside, quarantine / "sub")  # quarantine/sub/zz.png would land in outside/

    result = cli("dedupe", str(folder), "--action", "move", "--to", str(quarantine), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(outside.iterdir()) == [] and (folder / "sub" / "zz.png").is_file()
    assert data["n_removed"] == 0
    assert [item["path"] for item in data["left_alone"]] == ["sub/zz.png"]
    assert "symlink sub" in data["left_alone"][0]["reason"]


def test_move_log_cache_and_default_quarantine_are_never_written_through_links(tmp_path: Path) -> None:
    folder, outside = tmp_path / "d", tmp_path / "outside"
    write_face_folder(folder, 3, size=64, seed=24, fmt="png")
    shutil.copyfile(folder / "face-00000.png", folder / "zz.png")
    make_newer(folder / "zz.png")
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")

    # A hash cache that is a link: SQLite would create or overwrite the target.
    os.symlink(outside / "cache-target", folder / CACHE_NAME)
    result = cli("dedupe", str(folder), "--json")
    assert result.returncode == 0, result.stderr
    assert not (outside / "cache-target").exists()
    assert any("hash cache not used" in w for w in json.loads(result.stdout)["warnings"])

    # A move log that is a link: refused before anything moves.
    quarantine = tmp_path / "q"
    quarantine.mkdir()
    os.symlink(outside / "precious.txt", quarantine / MOVE_LOG_NAME)
    line = one_error_line(cli("dedupe", str(folder), "--action", "move", "--to", str(quarantine)))
    assert "move log" in line
    assert (outside / "precious.txt").read_text() == "keep me" and (folder / "zz.png").is_file()

    # The default quarantine (DIR-duplicates beside DIR) planted as a link: refused.
    os.symlink(outside, tmp_path / "d-duplicates")
    line = one_error_line(cli("dedupe", str(folder), "--action", "move"))
    assert "symlink" in line and (folder / "zz.png").is_file()
    assert sorted(p.name for p in outside.iterdir()) == ["precious.txt"]


def test_manifest_reached_through_a_link_is_not_updated(tmp_path: Path) -> None:
    from diffkit.fakesite.transforms import encode_image
    from diffkit.scrape.storage import Store
    from diffkit.scrape.validate import decode_image

    folder, elsewhere = tmp_path / "d", tmp_path / "elsewhere"
    face = draw_face(np.random.default_rng(9), 96)
    blobs = [encode_image(face, "JPEG", 90), encode_image(face, "JPEG", 70)]
    blobs += [encode_image(draw_face(np.random.default_rng(40 + k), 96)) for k in range(2)]
    store = Store(folder)
    for k, data in enumerate(blobs):
        store.add(
            decode_image(data, 10**8, None), url="http://127.0.0.1/face", fetched_at=f"2026-01-0{k + 1}"
        )
    store.close()
    elsewhere.mkdir()
    shutil.move(folder / "manifest.sqlite", elsewhere / "manifest.sqlite")
    os.symlink(elsewhere / "manifest.sqlite", folder / "manifest.sqlite")
    before = (elsewhere / "manifest.sqlite").read_bytes()

    result = run(folder, action="move", threshold=8, quarantine=tmp_path / "q")
    assert result.n_removed == 1 and result.manifest_rows_updated == 0
    assert (elsewhere / "manifest.sqlite").read_bytes() == before
    assert any("not updated" in w for w in result.warnings)


def test_metadata_that_cannot_be_rewritten_is_one_line_and_the_rows_stay_moved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dedupe rewrites metadata.jsonl through the dataset's one writer; a full disk there is one line."""
    import errno

    import diffkit.atomic
    from diffkit.errors import DiffkitError
    from diffkit.fakesite.transforms import encode_image
    from diffkit.scrape.storage import Store
    from diffkit.scrape.validate import decode_image

    folder = tmp_path / "d"
    face = draw_face(np.random.default_rng(9), 96)
    store = Store(folder)
    for k, data in enumerate([encode_image(face, "JPEG", 90), encode_image(face, "JPEG", 70)]):
        store.add(
            decode_image(data, 10**8, None), url="http://u:pw@127.0.0.1/f", fetched_at=f"2026-01-0{k + 1}"
        )
    store.write_metadata()
    store.close()
    before = (folder / "metadata.jsonl").read_bytes()

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(diffkit.atomic, "atomic_write_bytes", full)
    with pytest.raises(DiffkitError, match="metadata.jsonl could not be rewritten") as info:
        run(folder, action="delete", yes=True, threshold=8)
    assert "\n" not in str(info.value) and "diffkit scrape" in str(info.value)
    assert (folder / "metadata.jsonl").read_bytes() == before  # the old file stays whole
    with contextlib.closing(sqlite3.connect(folder / "manifest.sqlite")) as db:
        assert db.execute("SELECT COUNT(*) FROM images").fetchone()[0] == 1
        assert db.execute("SELECT COUNT(*) FROM dedupe_removed").fetchone()[0] == 1
    monkeypatch.undo()
    store = Store(folder)  # what the fix the message names (diffkit scrape) does at its end
    store.write_metadata()
    store.close()
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "pw" not in lines[0]


# -- 3. kill -9 during a move -------------------------------------------------------------------------

_KILLER = """
import os, sys
from pathlib import Path
folder, quarantine, nth, when = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
real_rename, seen = os.rename, [0]

def rename(src, dst, *args, **kwargs):  # kill -9 (os._exit: no cleanup) around the nth move
    if not str(dst).startswith(quarantine):
        return real_rename(src, dst, *args, **kwargs)
    seen[0] += 1
    if seen[0] == nth and when == "before":
        os._exit(137)
    real_rename(src, dst, *args, **kwargs)
    if seen[0] == nth:
        os._exit(137)

os.rename = rename
from diffkit.dedupe.config import DedupeConfig
from diffkit.dedupe.run import dedupe
dedupe(DedupeConfig(Path(folder), action="move", quarantine=Path(quarantine), workers=1,
                    write_report=False, progress=False))
"""


def _log(quarantine: Path) -> list[dict[str, object]]:
    """The move log's records; a line torn by a kill (not JSON) is skipped, as dedupe skips it."""
    records = []
    for line in (quarantine / MOVE_LOG_NAME).read_text().splitlines():
        with contextlib.suppress(ValueError):
            records.append(json.loads(line))
    return records


@pytest.mark.parametrize("when", ["after", "before"])
def test_kill_during_move_then_rerun_leaves_every_file_logged_or_back(tmp_path: Path, when: str) -> None:
    folder, quarantine = tmp_path / "d", tmp_path / "q"
    paths = write_face_folder(folder, 8, size=48, seed=25, fmt="png")
    for k in range(5):
        copy = folder / f"zz-copy-{k}.png"
        shutil.copyfile(paths[k], copy)
        make_newer(copy)  # newer than the originals: the copies go
    before = digests(folder)

    killed = subprocess.run(
        [sys.executable, "-c", _KILLER, str(folder), str(quarantine), "3", when],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == 137, killed.stderr
    assert len(list(quarantine.glob("*.png"))) == (3 if when == "after" else 2)

    rerun = run(folder, action="move", quarantine=quarantine)
    assert digests(folder, quarantine) == before  # nothing lost, nothing doubled
    assert sorted(p.name for p in quarantine.glob("*.png")) == [f"zz-copy-{k}.png" for k in range(5)]
    log = _log(quarantine)
    moved = [entry for entry in log if entry.get("event", "moved") == "moved"]
    # Every quarantined file has exactly one "moved" line naming it, with the keeper to undo it.
    assert sorted(Path(str(m["to"])).name for m in moved) == [f"zz-copy-{k}.png" for k in range(5)]
    assert all(Path(str(m["keeper"])).name.startswith("face-") for m in moved)
    resolved = {e["id"] for e in log if e.get("event") in ("moved", "not-moved")}
    assert {e["id"] for e in log if e.get("event") == "intent"} <= resolved  # no open intent left
    if when == "after":
        assert rerun.n_removed == 2 and any("finished 1 move" in w for w in rerun.warnings)
    else:
        assert rerun.n_removed == 3 and not rerun.warnings
    assert run(folder).clusters == []


def test_interrupted_copy_across_filesystems_is_finished(tmp_path: Path) -> None:
    """The state a kill leaves mid cross-device move: the copy is complete, the source not yet gone."""
    folder, quarantine = tmp_path / "d", tmp_path / "q"
    write_face_folder(folder, 3, size=48, seed=26, fmt="png")
    shutil.copyfile(folder / "face-00001.png", folder / "zz.png")
    make_newer(folder / "zz.png")
    quarantine.mkdir()
    shutil.copyfile(folder / "zz.png", quarantine / "zz.png")
    (quarantine / ".zz.png.tmp").write_bytes(b"partial")
    intent = {
        "event": "intent",
        "id": "x-1",
        "root": str(folder.resolve()),
        "rel": "zz.png",
        "to_rel": "zz.png",
        "from": str(folder / "zz.png"),
        "to": str(quarantine / "zz.png"),
        "keeper": str(folder / "face-00001.png"),
        "keeper_rel": "face-00001.png",
        "distance": 0,
    }
    hostile = {**intent, "id": "x-2", "rel": "../outside.png", "to_rel": "../outside.png"}
    (tmp_path / "outside.png").write_bytes(b"not yours")
    (quarantine / MOVE_LOG_NAME).write_text(json.dumps(intent) + "\n" + json.dumps(hostile) + "\n{torn")

    result = run(folder, action="move", quarantine=quarantine)
    assert not (folder / "zz.png").exists() and (quarantine / "zz.png").is_file()
    assert not (quarantine / ".zz.png.tmp").exists() and not list(quarantine.glob("zz-dup*"))
    assert (tmp_path / "outside.png").read_bytes() == b"not yours"
    assert [item["path"] for item in result.left_alone] == ["../outside.png"]
    events = [(e.get("id"), e.get("event")) for e in _log(quarantine)]
    assert ("x-1", "moved") in events and ("x-2", "not-moved") in events
    assert result.clusters == [] and result.n_removed == 0


# -- 4. one action run per folder ------------------------------------------------------------------


def test_second_concurrent_action_run_exits_2_naming_the_holder(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write_face_folder(folder, 3, size=48, seed=27, fmt="png")
    shutil.copyfile(folder / "face-00000.png", folder / "zz.png")
    holder_code = (
        "import sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path;"
        " from diffkit.lock import folder_lock\n"
        "with folder_lock(Path(sys.argv[1]).resolve(), 'dedupe'):\n"
        "    print('held', flush=True); sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", holder_code, str(folder), str(REPO)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for args in (["--action", "delete", "--yes"], ["--action", "move", "--to", str(tmp_path / "q")]):
            line = one_error_line(cli("dedupe", str(folder), *args))
            assert f"in use by `diffkit dedupe` (pid {holder.pid}" in line
        assert (folder / "zz.png").is_file() and not (tmp_path / "q").exists()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert cli("dedupe", str(folder), "--action", "delete", "--yes").returncode == 0  # lock released
    assert not (folder / "zz.png").exists() or not (folder / "face-00000.png").exists()


# -- 5. and 6. names with markup or undecodable bytes ----------------------------------------------


def test_markup_in_file_names_is_printed_as_is(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    paths = write_face_folder(folder, 3, size=48, seed=28, fmt="png")
    shutil.copyfile(paths[0], folder / "[bold]y.png")
    (folder / "[").mkdir()
    shutil.move(paths[0], folder / "[" / "]x.png")  # relative path "[/]x.png"
    os.utime(folder / "[bold]y.png", ns=(1, 1))  # older: kept
    (folder / "[red]bad.png").write_bytes(b"not an image")
    (folder / "[" / "]bad.png").write_bytes(b"not an image")  # "[/]" alone: a MarkupError in rich

    result = cli("dedupe", str(folder), "--action", "delete", "--yes", "--report", str(tmp_path / "r.html"))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "keep [bold]y.png  <-  [/]x.png (0)" in result.stdout, result.stdout
    assert "[red]bad.png: not a readable image" in result.stdout
    assert "[/]bad.png: not a readable image" in result.stdout
    assert (folder / "[bold]y.png").is_file() and not (folder / "[" / "]x.png").exists()


def test_file_names_that_are_not_utf8(tmp_path: Path) -> None:
    folder, quarantine = tmp_path / "d", tmp_path / "q"
    paths = write_face_folder(folder, 3, size=48, seed=29, fmt="png")
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.png")
    shutil.copyfile(os.fsencode(paths[1]), odd)
    make_newer(odd)  # newer: the odd name is the duplicate that moves
    shutil.copyfile(os.fsencode(paths[2]), os.path.join(os.fsencode(folder), b"\xff-other.png"))

    report = tmp_path / "r.html"
    result = cli(
        "dedupe", str(folder), "--action", "move", "--to", str(quarantine), "--json", "--report", str(report)
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout)
    assert [sorted(c) for c in data["clusters"]] == [
        sorted(["face-00001.png", "caf\\xe9.png"]),
        sorted(["face-00002.png", "\\xff-other.png"]),
    ]
    assert data["n_removed"] == 2
    assert sorted(os.listdir(os.fsencode(quarantine))) == sorted(
        [b"caf\xe9.png", b"\xff-other.png", MOVE_LOG_NAME.encode(), b".diffkit.lock"]
    )
    html = report.read_text(encoding="utf-8")
    assert "caf\\xe9.png" in html
    moved = [e for e in _log(quarantine) if e["event"] == "moved"]
    assert sorted(os.fsencode(str(e["to"])) for e in moved) == sorted(
        [
            os.path.join(os.fsencode(quarantine), b"caf\xe9.png"),
            os.path.join(os.fsencode(quarantine), b"\xff-other.png"),
        ]
    )  # the log names the exact bytes

    os.rename(os.path.join(os.fsencode(quarantine), b"caf\xe9.png"), odd)  # back, same mtime: cached
    again = cli("dedupe", str(folder))
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr
    assert "<-  caf\\xe9.png (0)" in again.stdout, again.stdout  # shown escaped in the terminal too
    assert json.loads(cli("dedupe", str(folder), "--json").stdout)["n_cached"] == 4


# -- 7. 16-bit and float pixels -------------------------------------------------------------------


def _sixteen_bit(face: Image.Image) -> Image.Image:
    grey = np.asarray(face.convert("L"), dtype=np.uint16) * 257  # 0..65535, same picture
    return Image.fromarray(grey)  # uint16: mode I;16


def test_16_bit_pngs_hash_as_their_picture_and_float_pixels_are_unreadable(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    faces = [draw_face(np.random.default_rng(60 + k), 96) for k in range(3)]
    for k, face in enumerate(faces):
        _sixteen_bit(face).save(folder / f"deep-{k}.png")
    faces[0].convert("L").save(folder / "zz-eight-bit-0.png")  # the same picture as deep-0, 8 bits
    Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32), mode="F").save(
        folder / "float.png", format="TIFF"
    )
    with Image.open(folder / "deep-1.png") as probe:
        assert probe.mode.startswith("I")

    result = run(folder, action="delete", yes=True)
    # Different 16-bit faces are different images (the old code hashed all of them as white).
    assert result.clusters == [["deep-0.png", "zz-eight-bit-0.png"]]
    assert sorted(p.name for p in folder.glob("*.png")) == [
        "deep-0.png",
        "deep-1.png",
        "deep-2.png",
        "float.png",
    ]
    assert [u["path"] for u in result.unreadable] == ["float.png"]
    assert "floating-point" in result.unreadable[0]["error"]


def test_8_bit_hashes_are_unchanged(tmp_path: Path) -> None:
    from diffkit.dedupe.hashing import hash_file

    face = draw_face(np.random.default_rng(70), 300)
    rgba = face.convert("RGBA")
    rgba.putalpha(200)
    images = {
        "rgb.png": face,
        "l.png": face.convert("L"),
        "p.png": face.convert("P"),
        "rgba.png": rgba,
        "q.jpg": face,
        "w.webp": face,
    }
    for name, image in images.items():
        image.save(tmp_path / name)
    for name in images:
        for decode in ("draft-L-256", "full"):
            with Image.open(tmp_path / name) as image:  # the decode path before to_8bit existed
                if decode == "draft-L-256" and image.format == "JPEG":
                    image.draft("L", (256, 256))
                image.load()
                expected = int.from_bytes(np.packbits(imagehash.phash(image).hash.ravel()).tobytes(), "big")
            assert hash_file((str(tmp_path / name), "phash", decode))[1] == expected, (name, decode)


def test_cache_rows_of_pngs_from_before_16_bit_decoding_are_rehashed(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write_face_folder(folder, 4, size=48, seed=30, fmt="jpg")
    _sixteen_bit(draw_face(np.random.default_rng(71), 64)).save(folder / "deep.png")
    _sixteen_bit(draw_face(np.random.default_rng(72), 64)).save(folder / "deep-2.png")
    assert run(folder).n_hashed == 6
    white = int.from_bytes(b"\x80" + b"\x00" * 7, "big") - (1 << 64)  # what the old decoder cached
    with contextlib.closing(sqlite3.connect(folder / CACHE_NAME)) as db, db:
        db.execute("UPDATE hashes SET hash = ? WHERE rel LIKE 'deep%'", (white,))
        db.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")

    result = run(folder)
    assert (result.n_hashed, result.n_cached) == (2, 4) and result.clusters == []
    with contextlib.closing(sqlite3.connect(folder / CACHE_NAME)) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("3",)
    assert run(folder).n_hashed == 0


# -- 24.8. a full quarantine disk ---------------------------------------------------------------------

# The CLI with the move log's disk full from its Nth write (or its first fsync) on: part of that line
# still lands (a torn line, as a real ENOSPC mid-write leaves), every later write to it fails too.
_FULL_DISK = """
import errno, os, sys
from diffkit.dedupe.config import MOVE_LOG_NAME
fail_at, what = int(sys.argv[1]), sys.argv[2]
real_write, real_fsync, seen = os.write, os.fsync, [0]

def is_log(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}").endswith(MOVE_LOG_NAME)
    except OSError:
        return False

def full():
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

def write(fd, data):
    if what == "write" and is_log(fd):
        seen[0] += 1
        if seen[0] == fail_at:
            real_write(fd, bytes(data)[: len(data) // 2])
        if seen[0] >= fail_at:
            raise full()
    return real_write(fd, data)

def fsync(fd):
    if what == "fsync" and is_log(fd):
        seen[0] += 1
        if seen[0] >= fail_at:
            raise full()
    return real_fsync(fd)

os.write, os.fsync = write, fsync
sys.argv = ["diffkit", *sys.argv[3:]]
from diffkit.cli import main
main()
"""


def _scraped_folder_with_copies(folder: Path, n_copies: int) -> None:
    """A scrape output: n_copies faces each kept twice (q90 first, a later q70 re-encode) and 2 unique."""
    from diffkit.fakesite.transforms import encode_image
    from diffkit.scrape.storage import Store
    from diffkit.scrape.validate import decode_image

    store = Store(folder)
    for k in range(n_copies + 2):
        face = draw_face(np.random.default_rng([31, k]), 96)
        store.add(decode_image(encode_image(face, "JPEG", 90), 10**8, None), None, f"2026-01-01T00:00:0{k}")
        if k < n_copies:
            later = decode_image(encode_image(face, "JPEG", 70), 10**8, None)
            store.add(later, None, f"2026-01-02T00:00:0{k}")
    store.write_metadata()
    store.close()


def _manifest_matches_the_disk(folder: Path) -> None:
    with contextlib.closing(sqlite3.connect(folder / "manifest.sqlite")) as db:
        rows = sorted(name for (name,) in db.execute("SELECT file_name FROM images"))
    on_disk = sorted(p.relative_to(folder).as_posix() for p in (folder / "images").rglob("*.jpg"))
    assert rows == on_disk
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["file_name"] for line in lines) == on_disk


@pytest.mark.parametrize(
    ("fail_at", "what", "moved_first"),
    [
        (1, "write", 0),  # the first intent does not fit: nothing moves
        (7, "write", 2),  # 5 intents and 1 "moved" line fit; the 2nd file moved, its "moved" line did not
        (1, "fsync", 0),  # the intents cannot be made durable: nothing moves
    ],
)
def test_full_quarantine_disk_is_one_line_and_nothing_is_lost(
    tmp_path: Path, fail_at: int, what: str, moved_first: int
) -> None:
    """Issue 24.8: a full disk under the move log was a traceback. Now one line, exit 2, every file in
    the folder or the quarantine, the manifest naming exactly the files left; the rerun finishes."""
    folder, quarantine = tmp_path / "d", tmp_path / "q"
    _scraped_folder_with_copies(folder, 5)
    before = digests(folder / "images")  # the manifest files change by design; the images may not
    args = ["dedupe", str(folder), "--action", "move", "--to", str(quarantine), "--threshold", "8"]
    failed = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(fail_at), what, *args, "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    line = one_error_line(failed)
    assert "move log" in line and "No space left on device" in line and "run again" in line
    assert digests(folder / "images", quarantine) == before  # nothing lost, nothing doubled
    assert len(list(quarantine.glob("images/*/*.jpg"))) == moved_first
    _manifest_matches_the_disk(folder)  # the moves done before the stop left the manifest too

    rerun = run(folder, action="move", quarantine=quarantine, threshold=8)
    assert rerun.clusters and digests(folder / "images", quarantine) == before
    assert len(list(quarantine.glob("images/*/*.jpg"))) == 5 and len(list(folder.glob("images/*/*.jpg"))) == 7
    _manifest_matches_the_disk(folder)
    log = _log(quarantine)
    resolved = {e["id"] for e in log if e.get("event") in ("moved", "not-moved")}
    assert {e["id"] for e in log if e.get("event") == "intent"} <= resolved  # no open intent left
    assert run(folder, threshold=8).clusters == []


def test_move_into_a_really_full_tmpfs_is_one_line_then_the_rerun_finishes(tmp_path: Path) -> None:
    """The same on a real full file system (a 256 KiB tmpfs, another device: moves are copies)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    folder, quarantine = tmp_path / "d", tmp_path / "q"
    _scraped_folder_with_copies(folder, 5)
    before = digests(folder / "images")
    quarantine.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(quarantine)])
    if mounted.returncode != 0:
        pytest.skip("mount is not allowed here")
    try:
        with (quarantine / "filler").open("wb", buffering=0) as filler, contextlib.suppress(OSError):
            while True:  # fill it to the last block
                filler.write(b"\0" * 4096)
        args = ["dedupe", str(folder), "--action", "move", "--to", str(quarantine), "-t", "8"]
        line = one_error_line(cli(*args, "--workers", "1"))
        assert "No space left on device" in line
        assert digests(folder / "images", quarantine) == before + Counter({sha(quarantine / "filler"): 1})
        _manifest_matches_the_disk(folder)
        (quarantine / "filler").unlink()  # space freed: the rerun moves every copy
        rerun = cli(*args, "--workers", "1", "--json")
        assert rerun.returncode == 0, rerun.stderr
        assert json.loads(rerun.stdout)["n_removed"] == 5
        assert digests(folder / "images", quarantine) == before
        _manifest_matches_the_disk(folder)
    finally:
        subprocess.run(["umount", str(quarantine)], check=False)
