"""`diffkit export` against what a user's folders hold: nothing of theirs is deleted or half-replaced.

`--force` checks every target before anything moves and swaps with a rollback; a staging folder left
by an export killed with -9 is removed by the next export, and only such a folder; report files that
cannot be read are skipped and said so; class names cannot reorder or break the model card.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.errors import DiffkitError
from diffkit.export import publish
from diffkit.export.config import ExportConfig
from diffkit.export.publish import MARKER, MARKER_KIND, staging_folder
from diffkit.export.run import export
from diffkit.models.config import UNetConfig
from diffkit.models.unet import UNet
from diffkit.runs.folder import read_run_config, write_run_config
from diffkit.runs.snapshots import save_ema_snapshot
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

EXPORTED = [
    "README.md", "model_index.json", "samples.png", "scheduler", "scheduler/scheduler_config.json", "unet",
    "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
]  # fmt: skip
TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny unconditional run at 16 px, 2 steps: what matters here is the folder, not the model."""
    root = tmp_path_factory.mktemp("export-hardening")
    (root / "solid").mkdir()
    for index in range(4):
        Image.new("RGB", (16, 16), (40 * index, 90, 200)).save(root / "solid" / f"{index}.png")
    train(
        TrainConfig(
            data=root / "solid", out=root / "run", preset="tiny", resolution=16, batch_size=4, steps=2,
            seed=0, device="cpu", precision="fp32", progress=False, report=False, sample_grid=4,
            sample_steps=2, log_every_steps=1,
        )
    )  # fmt: skip
    return root / "run"


def listing(folder: Path) -> dict[str, bytes | str]:
    """Every entry under ``folder``: a file's bytes, ``"dir"``, or ``"-> target"`` for a link."""
    out: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            out[name] = f"-> {os.readlink(path)}"
        elif path.is_dir():
            out[name] = "dir"
        else:
            out[name] = path.read_bytes()
    return out


def do_export(run: Path, out: Path, force: bool = True, reports: Path | None = None) -> Any:
    config = ExportConfig(run=run, out=out, force=force, reports_dir=reports or out.parent / "no-reports")
    return export(config)


def within_timeout(call: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
    """``call()`` in a daemon thread: its result, or a failed test (not a hung suite) if it blocks."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout} s: blocked on a file?"
    if "error" in box:
        raise box["error"]
    return box["value"]


def hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# --- --force: check every target, then swap -------------------------------------------------------


def test_force_with_unet_a_file_changes_nothing(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    do_export(run, out)
    (out / "unet").rename(tmp_path / "moved-unet")
    (out / "unet").write_bytes(b"my notes, not a folder")
    (out / "model_index.json").write_text('{"mine": 1}')
    before = listing(out)
    result = CliRunner().invoke(app, ["export", str(run), str(out), "--force", "--reports", str(tmp_path)])
    assert result.exit_code == 2
    assert f"{out / 'unet'} is a file; the export writes a folder there" in result.output
    assert "nothing was changed" in result.output and "Traceback" not in result.output
    assert listing(out) == before  # model_index.json and scheduler/ were not replaced first
    assert hidden(tmp_path) == []


@pytest.mark.parametrize("name", ["model_index.json", "README.md"])
def test_force_never_deletes_a_users_folder_named_like_an_exported_file(
    run: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    (out / name / "thesis.tex").write_text("three years of work")
    before = listing(out)
    with pytest.raises(DiffkitError, match=f"{name} is a folder; the export writes a file there"):
        do_export(run, out)
    assert listing(out) == before == {name: "dir", f"{name}/thesis.tex": b"three years of work"}
    assert hidden(tmp_path) == []


def test_force_refuses_a_unet_folder_holding_foreign_files(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    do_export(run, out)
    (out / "unet" / "finetuned.safetensors").write_bytes(b"weights of my own")
    (out / "scheduler" / "notes").mkdir()
    before = listing(out)
    with pytest.raises(DiffkitError) as error:
        do_export(run, out)
    assert f"{out / 'scheduler'} holds what the export does not write (notes)" in str(error.value)
    assert f"{out / 'unet'} holds what the export does not write (finetuned.safetensors)" in str(error.value)
    assert listing(out) == before


def test_force_replaces_an_earlier_export_and_keeps_the_rest(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    do_export(run, out)
    first = listing(out)
    (out / "README.md").write_text("edited by hand")
    (out / "notes.txt").write_text("mine")
    (out / "samples").mkdir()
    (out / "samples" / "0.png").write_bytes(b"png")
    target = tmp_path / "elsewhere.json"
    target.write_text("not to be touched")
    (out / "model_index.json").unlink()
    (out / "model_index.json").symlink_to(target)
    do_export(run, out)
    after = listing(out)
    assert sorted(after) == sorted([*EXPORTED, "notes.txt", "samples", "samples/0.png"])
    assert {name: after[name] for name in EXPORTED} == {name: first[name] for name in EXPORTED}
    assert after["notes.txt"] == b"mine" and after["samples/0.png"] == b"png"
    assert target.read_text() == "not to be touched"  # the link was replaced, not what it points to
    assert hidden(tmp_path) == []


def test_a_failed_swap_puts_out_back_as_it_was(run: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    do_export(run, out)
    (out / "README.md").write_text("the old card")
    before = listing(out)
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        # Once, as the new unet/ goes in: model_index.json and scheduler/ were swapped by now.
        if Path(src).parent.name == "new" and Path(dst) == out / "unet":
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(publish.os, "rename", rename)
    with pytest.raises(DiffkitError, match="No space left on device.*it was left as it was"):
        do_export(run, out)
    assert listing(out) == before
    assert hidden(tmp_path) == []


def test_a_swap_that_cannot_be_undone_keeps_the_old_files(run: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    do_export(run, out)
    (out / "README.md").write_text("the old card")
    old_index = (out / "model_index.json").read_bytes()
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        placing_unet = Path(src).parent.name == "new" and Path(dst) == out / "unet"
        if placing_unet or (Path(src).parent.name == "old" and Path(dst) == out / "model_index.json"):
            raise OSError(5, "Input/output error")
        real_rename(src, dst)

    monkeypatch.setattr(publish.os, "rename", rename)
    with pytest.raises(DiffkitError, match="nor put all the old ones back: they are in") as error:
        do_export(run, out)
    monkeypatch.undo()
    [staging] = hidden(tmp_path)
    kept = tmp_path / staging / "old"
    assert str(kept) in str(error.value)
    assert (kept / "model_index.json").read_bytes() == old_index  # the file that could not go back
    assert not (tmp_path / staging / MARKER).exists()  # unmarked: never cleaned as a stale export
    do_export(run, tmp_path / "second")
    assert hidden(tmp_path) == [staging]


# --- a staging folder left by kill -9 -------------------------------------------------------------

KILL_AT_SWAP = """
import os, signal, sys
from pathlib import Path
from diffkit.export import publish
from diffkit.export.config import ExportConfig
from diffkit.export.run import export

real = publish._stage
def stage_then_die(new, contents):
    real(new, contents)
    os.kill(os.getpid(), signal.SIGKILL)  # the export is written, not yet moved into OUT
publish._stage = stage_then_die
export(ExportConfig(run=Path(sys.argv[1]), out=Path(sys.argv[2]), reports_dir=Path(sys.argv[3])))
"""


def test_the_next_export_removes_a_staging_folder_left_by_kill_9(run: Path, tmp_path: Path) -> None:
    parent = tmp_path / "exports"
    parent.mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AT_SWAP, str(run), str(parent / "faces"), str(tmp_path / "none")],
        capture_output=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [stale] = hidden(parent)
    assert stale.startswith(".faces.export-") and not (parent / "faces").exists()
    assert json.loads((parent / stale / MARKER).read_text())["kind"] == MARKER_KIND
    assert sorted(listing(parent / stale / "new")) == EXPORTED

    # Beside it: a folder of the same name pattern that is the user's (no marker), one whose marker
    # is not an export's, and the staging folder of an export running now (its lock is held).
    (parent / ".data.export-abcd1234").mkdir()
    (parent / ".data.export-abcd1234" / "keep.txt").write_text("mine")
    (parent / ".odd.export-efgh5678").mkdir()
    (parent / ".odd.export-efgh5678" / MARKER).write_text('{"kind": "something else"}')
    with staging_folder(parent / "live") as live:
        result = do_export(run, parent / "faces", force=False)
        assert hidden(parent) == sorted([".data.export-abcd1234", ".odd.export-efgh5678", live.name])
    assert result.removed_staging == [stale] and result.to_dict()["removed_staging"] == [stale]
    assert sorted(listing(parent / "faces")) == EXPORTED
    assert hidden(parent) == [".data.export-abcd1234", ".odd.export-efgh5678"]
    assert (parent / ".data.export-abcd1234" / "keep.txt").read_text() == "mine"
    assert "removed_staging" not in do_export(run, parent / "again", force=False).to_dict()


# --- reports beside the run: a pipe is skipped, never read ----------------------------------------


def test_export_skips_a_named_pipe_among_the_reports(run: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    os.mkfifo(reports / "eval-x.json")
    (reports / "eval-x.html").write_text("<html></html>")
    (reports / "eval-y.json").write_text("[" * 100_000 + "]" * 100_000)
    (reports / "eval-y.html").write_text("<html></html>")
    result = within_timeout(lambda: do_export(run, tmp_path / "out", force=False, reports=reports))
    assert result.to_dict()["skipped_reports"] == [
        {"file": "eval-x.json", "reason": "a named pipe"},
        {"file": "eval-y.json", "reason": "JSON nested deeper than 100 levels"},
    ]
    assert result.metrics_report is None
    assert sorted(listing(tmp_path / "out")) == EXPORTED


# --- class names in the model card ----------------------------------------------------------------


def test_class_names_with_line_breaks_and_bidi_overrides_stay_literal_in_the_card(
    run: Path, tmp_path: Path
) -> None:
    classes = ["cat\ndog", "evil\u202egnp.exe", "tab\x1b[31mred", "a|b"]
    payload = read_run_config(run)
    payload["model"]["num_classes"] = len(classes)
    payload["labels"] = {
        "classes": classes, "source": "folders", "counts": dict.fromkeys(classes, 1), "label_dropout": 0.1
    }  # fmt: skip
    conditional = tmp_path / "run"
    conditional.mkdir()
    write_run_config(conditional, payload)
    save_ema_snapshot(
        conditional, UNet(UNetConfig.from_dict(payload["model"])), nimg=8, step=2, config=payload
    )
    out = tmp_path / "out\u202e"
    do_export(conditional, out, force=False)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "\u202e" not in card and "\x1b" not in card
    table = card.split("| class | name |\n|---|---|\n")[1].split("\n\n")[0].splitlines()
    assert table == [
        "| 0 | cat dog |",
        "| 1 | evil\\\\u202egnp.exe |",
        "| 2 | tab\\\\x1b\\[31mred |",
        "| 3 | a\\|b |",
    ]
    assert 'UNet2DModel.from_pretrained("out\\u202e", subfolder="unet")' in card
    assert "- classes (folders): cat dog (1), evil\\\\u202egnp.exe (1)," in card
    assert torch.tensor(0).item() == 0  # torch stays importable after the export (no state leaked)
