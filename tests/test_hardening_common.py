"""Hardening shared by every command: containment, locks, escaping, decoding, report links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffkit.atomic import check_writable_dir
from diffkit.console import printable, shown
from diffkit.dataset.decode import UndecodableImage, open_rgb, to_8bit
from diffkit.errors import DiffkitError
from diffkit.lock import FolderInUseError, folder_lock
from diffkit.report.index import IndexConfig, build_index
from diffkit.report.model import Report
from diffkit.report.render import write_report
from diffkit.safepath import contained, is_real_file, unsafe_reason


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


# --- safepath ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "reason"),
    [
        ("/tmp/x/keep.txt", "absolute"),
        ("../x/keep.txt", ".."),
        ("images/../../x", ".."),
        ("", "empty"),
        ("images/a\x00b", "NUL"),
    ],
)
def test_unsafe_paths_are_refused(tmp_path: Path, relative: str, reason: str) -> None:
    message = unsafe_reason(tmp_path, relative)
    assert message is not None and reason in message
    assert contained(tmp_path, relative) is None


def test_symlinked_component_is_refused_and_plain_paths_pass(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "ab").symlink_to(outside, target_is_directory=True)
    (root / "images" / "cd").mkdir()
    (root / "images" / "cd" / "f.jpg").write_bytes(b"x")
    (root / "images" / "cd" / "link.jpg").symlink_to(root / "images" / "cd" / "f.jpg")
    assert "symlink images/ab" in (unsafe_reason(root, "images/ab/f.jpg") or "")
    assert "symlink" in (unsafe_reason(root, "images/cd/link.jpg") or "")
    assert contained(root, "images/cd/f.jpg") == root / "images" / "cd" / "f.jpg"
    assert contained(root, "images/new/not-yet.jpg") == root / "images" / "new" / "not-yet.jpg"
    assert is_real_file(root / "images" / "cd" / "f.jpg")
    assert not is_real_file(root / "images" / "cd" / "link.jpg")
    # The root itself may be a link: the user chose it.
    (tmp_path / "root-link").symlink_to(root, target_is_directory=True)
    assert unsafe_reason(tmp_path / "root-link", "images/cd/f.jpg") is None


# --- lock --------------------------------------------------------------------------------------------


def test_second_process_is_refused_while_the_first_holds_the_lock(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from diffkit.lock import folder_lock
                with folder_lock(Path({str(tmp_path)!r}), "scrape"):
                    print("locked", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with (
            pytest.raises(FolderInUseError, match=rf"`diffkit scrape` \(pid {holder.pid},"),
            folder_lock(tmp_path, "dedupe"),
        ):
            pass
    finally:
        holder.communicate("\n", timeout=30)
    # Released at exit (the kernel drops flocks of dead processes too): now it can be taken.
    with folder_lock(tmp_path, "dedupe"):
        pass


def test_lock_file_that_is_a_symlink_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / ".diffkit.lock").symlink_to(target)
    with pytest.raises(DiffkitError), folder_lock(folder, "scrape"):
        pass
    assert target.read_text() == "keep me"


# --- writability -------------------------------------------------------------------------------------


def test_check_writable_dir_fails_fast_under_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    with pytest.raises(DiffkitError, match="cannot write the report to"):
        check_writable_dir(blocker / "sub", "the report")
    assert check_writable_dir(tmp_path / "new" / "dir", "x").is_dir()
    assert not [p for p in (tmp_path / "new" / "dir").iterdir()]  # the probe left nothing behind


def test_report_on_unwritable_folder_is_one_line(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "index.html").mkdir()  # index.html cannot be written: a folder is in the way
    result = _cli("report", str(reports))
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["scrape", "dedupe"])
def test_unwritable_report_of_scrape_and_dedupe_is_one_line_before_any_work(
    tmp_path: Path, command: str
) -> None:
    """Issue 24.10: scrape and dedupe wrote their report last and only warned; now they fail first, as
    eval, sample and report do (the README's fault table)."""
    from diffkit.fakesite.faces import write_face_folder
    from diffkit.fakesite.site import FaceSite, SiteConfig

    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    report = ["--report", str(blocker / "r.html")]
    folder = tmp_path / "faces"
    if command == "scrape":
        with FaceSite(SiteConfig(size=32)) as site:
            result = _cli("scrape", "--n", "2", "--out", str(folder), "--url", site.url, *report)
            assert site.requests == []  # not one request
        assert not folder.exists()
    else:
        write_face_folder(folder, 3, size=32, seed=3, fmt="png")
        (folder / "copy.png").write_bytes((folder / "face-00000.png").read_bytes())
        before = sorted(p.name for p in folder.iterdir())
        result = _cli("dedupe", str(folder), "--action", "move", "--to", str(tmp_path / "q"), *report)
        assert sorted(p.name for p in folder.iterdir()) == before  # nothing hashed, cached or moved
        assert not (tmp_path / "q").exists()
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot write the report (--report) to"), lines


# --- console -----------------------------------------------------------------------------------------


def test_shown_escapes_markup_and_undecodable_bytes() -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    name = os.fsdecode(b"[bold]caf\xe9[/].png")
    console.print(f"[bold]file[/]: {shown(name)}")
    assert console.export_text().strip() == "file: [bold]caf\\xe9[/].png"
    assert printable(name) == "[bold]caf\\xe9[/].png"
    assert printable(Path("plain.png")) == "plain.png"


def test_error_with_markup_in_a_path_prints_literally(tmp_path: Path) -> None:
    missing = tmp_path / "[bold]y[/]"
    result = _cli("report", str(missing))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "[bold]y[/]" in result.stderr


# --- decoding ----------------------------------------------------------------------------------------


def _gradient16(height: int = 24, width: int = 40) -> np.ndarray:
    return (np.arange(height * width).reshape(height, width) * 65535 // (height * width - 1)).astype(
        np.uint16
    )


def test_16bit_greyscale_png_is_scaled_not_clamped(tmp_path: Path) -> None:
    values = _gradient16()
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as raw:
        assert raw.mode == "I;16"
    rgb = np.asarray(open_rgb(tmp_path / "g16.png"))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert rgb.shape == (24, 40, 3)
    assert np.abs(rgb[..., 0].astype(int) - expected).max() <= 0
    assert (rgb[..., 0] == rgb[..., 2]).all()
    assert rgb.min() == 0 and rgb.max() == 255 and 100 < rgb.mean() < 155  # not all white


def test_8bit_images_pass_through_unchanged(tmp_path: Path) -> None:
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 13, 3), dtype=np.uint8))
    assert to_8bit(image) is image
    image.save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "a.png")), np.asarray(image))
    assert np.array_equal(np.asarray(open_rgb((tmp_path / "a.png").read_bytes())), np.asarray(image))


def test_float_pixels_are_refused_with_a_reason(tmp_path: Path) -> None:
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(tmp_path / "f.tiff")
    with pytest.raises(UndecodableImage, match="floating-point"):
        open_rgb(tmp_path / "f.tiff")


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "t.png")
    pixels = np.asarray(open_rgb(tmp_path / "t.png"))
    assert pixels[0, 0].tolist() == [10, 20, 30] and pixels[1, 1].tolist() == [255, 255, 255]


# --- report links ------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")


def test_index_links_are_relative_file_links_only(tmp_path: Path) -> None:
    for name in ["javascript:alert(1)", "a#b?c", "data:text", "ok"]:
        write_report(Report(title=name, command="eval", summary={"fid": 1.0}), tmp_path / f"{name}.html")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.json"
    outside.write_text(json.dumps({"schema": "diffkit.report/1", "title": "elsewhere"}))
    (tmp_path / "linked.json").symlink_to(outside)
    result = build_index(IndexConfig(reports_dir=tmp_path))
    links = _Links()
    links.feed(result.index.read_text(encoding="utf-8"))
    assert result.n_reports == 4
    assert sorted(links.hrefs) == sorted(
        ["./javascript%3Aalert%281%29.html", "./a%23b%3Fc.html", "./data%3Atext.html", "./ok.html"]
    )
    assert all(href.startswith("./") and ":" not in href and "#" not in href for href in links.hrefs)
    assert '<a href=""' not in result.index.read_text(encoding="utf-8")  # no empty footer link


def test_report_with_undecodable_file_name_is_written(tmp_path: Path) -> None:
    name = os.fsdecode(b"caf\xe9")
    paths = write_report(Report(title=name, command="dedupe", summary={"file": name}), tmp_path / "r.html")
    assert "caf\\xe9" in paths.html.read_text(encoding="utf-8")
    assert json.loads(paths.json.read_text(encoding="utf-8"))["title"] == name


def test_a_lone_surrogate_from_json_is_written_out_and_prints() -> None:
    """JSON's "\\ud800" gives a lone surrogate that is no file-name byte: it is written out as \\ud800
    (a surrogate escape of a byte stays \\xNN), and the console prints the result without an error."""
    import io

    from rich.console import Console

    label = json.loads('"cat\\ud800dog"')
    assert printable(label) == "cat\\ud800dog"
    assert printable("caf\udce9 \ud83d") == "caf\\xe9 \\ud83d"
    buffer = io.StringIO()
    Console(file=buffer, width=80).print(shown(label))
    assert buffer.getvalue() == "cat\\ud800dog\n"
