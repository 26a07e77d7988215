"""Hostile class labels: names that look numeric but are not, text that is not printable on one line,
and very many classes. Each is a correct result or one clear line (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.dataset.labels import MAX_FOLDER_CLASSES, read_labels
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import write_face_folder
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

FAST = dict(
    preset="tiny", resolution=16, batch_size=8, device="cpu", precision="fp32", progress=False, report=False,
    sample_every_kimg=0.0, sample_grid=4, sample_steps=2, log_every_steps=1, warmup_kimg=0.2,
)  # fmt: skip


def _metadata(folder: Path, labels: list[object]) -> list[str]:
    """A metadata.jsonl giving image i the label ``labels[i]``; returns the file names."""
    files = [f"{i}.png" for i in range(len(labels))]
    rows = [json.dumps({"file_name": f, "label": label}) for f, label in zip(files, labels, strict=True)]
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return files


def test_numbers_sort_by_value_and_look_alikes_sort_as_text(tmp_path: Path) -> None:
    """ASCII integers sort by value (checked against int() on small ones, and on numbers longer than
    int() converts); '²' and '--5' pass str.isdigit() after lstrip('-') but are text; "05" and "5"
    are two classes in a fixed order."""
    values = ["10", "-3", "0", "7", "-12", "3", "-1", "100", "-0"]
    labels = read_labels(tmp_path, _metadata(tmp_path, values))
    assert labels is not None
    assert list(labels.names) == sorted(values, key=lambda v: (int(v), v))
    huge = ["9" * 5000, "1" + "0" * 4999, "-" + "9" * 4500, "12"]
    labels = read_labels(tmp_path, _metadata(tmp_path, huge))
    assert labels is not None and labels.names == (huge[2], "12", huge[1], huge[0])
    for look_alikes in (["²", "1", "2"], ["--5", "3", "10"], ["١٢", "3"]):
        labels = read_labels(tmp_path, _metadata(tmp_path, look_alikes))
        assert labels is not None and labels.names == tuple(sorted(look_alikes)), look_alikes
    orders = set()
    for seed in range(5):  # the set's iteration order must not matter
        shuffled = ["5", "05", "005", "4"]
        random.Random(seed).shuffle(shuffled)
        labels = read_labels(tmp_path, _metadata(tmp_path, shuffled))
        assert labels is not None
        orders.add(labels.names)
    assert orders == {("4", "005", "05", "5")}


def test_superscript_labels_train(faces: Path, tmp_path: Path) -> None:
    """The '²' label that crashed `train` (int('²')) trains, as a text class."""
    data = tmp_path / "data"
    write_face_folder(data, 4, size=16, seed=3)
    files = sorted(p.name for p in data.glob("*.png"))
    rows = [{"file_name": f, "label": label} for f, label in zip(files, ["²", "2", "²", "--1"], strict=True)]
    (data / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    result = train(TrainConfig(data=data, out=tmp_path / "run", steps=1, **(FAST | {"batch_size": 4})))
    assert result.step == 1
    saved = json.loads((tmp_path / "run" / "config.json").read_text(encoding="utf-8"))["labels"]
    assert saved["classes"] == ["--1", "2", "²"] and saved["counts"] == {"--1": 1, "2": 1, "²": 2}


@pytest.mark.parametrize(
    ("label", "shown"),
    [
        ("cat\udc80", r"\udc80"),  # a lone surrogate: no UTF-8 for it
        ("cat\ud800dog", r"\ud800"),
        ("cat\ndog", r"\n"),
        ("cat\u2028dog", r"\u2028"),
        ("\u202egod", r"\u202e"),  # right-to-left override
        ("a\u2066b", r"\u2066"),  # a bidirectional isolate
        ("tab\there", r"\t"),
        ("bell\x07", r"\x07"),
    ],
)
def test_labels_that_break_a_line_are_one_clear_error(
    faces: Path, tmp_path: Path, label: str, shown: str
) -> None:
    """`diffkit train` on such a label: exit 2 and one error line naming it with the character escaped
    (the console printer used to crash on a lone surrogate; a newline split the line)."""
    data = tmp_path / "data"
    write_face_folder(data, 2, size=16, seed=0)
    files = sorted(p.name for p in data.glob("*.png"))
    rows = [json.dumps({"file_name": f, "label": name}) for f, name in zip(files, [label, "ok"], strict=True)]
    (data / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--preset", "tiny"]
    result = CliRunner().invoke(
        app, [*args, "--resolution", "16", "--steps", "1", "--dry-run", "--no-progress"]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "metadata.jsonl line 1" in lines[0] and shown in lines[0] and "--labels none" in lines[0]
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_a_class_folder_whose_name_breaks_a_line_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DiffkitError, match=r"the label 'bad\\nname' holds the control character '\\n'"):
        read_labels(tmp_path, ["good/1.png", "bad\nname/2.png"])
    with pytest.raises(DiffkitError, match=r"lone surrogate"):  # an undecodable byte in a folder name
        read_labels(tmp_path, ["good/1.png", os.fsdecode(b"bad\xff") + "/2.png"])


def test_more_image_folders_than_classes_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = [f"{i}/a.png" for i in range(MAX_FOLDER_CLASSES + 1)]
    assert read_labels(tmp_path, files) is None
    note = " ".join(capsys.readouterr().err.split())
    assert (
        f"{MAX_FOLDER_CLASSES + 1} image folders, more than {MAX_FOLDER_CLASSES}: not read as classes" in note
    )


def test_a_number_too_long_for_json_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "0.png", "label": ' + "7" * 5000 + "}\n")
    with pytest.raises(DiffkitError, match="metadata.jsonl line 1 is not JSON"):
        read_labels(tmp_path, ["0.png"])


def test_ten_thousand_classes_train_save_and_sample(tmp_path: Path) -> None:
    """10,000 distinct labels (one image each, hard links of four faces): the classes are read in order,
    two steps train, config.json and the snapshot carry every name, a class samples by name, and a
    resume on changed classes is refused in one short line."""
    from diffkit.sample.generate import generate_images

    count = 10_000
    source = tmp_path / "faces"
    write_face_folder(source, 4, size=16, seed=2)
    originals = sorted(source.glob("*.png"))
    data = tmp_path / "data"
    data.mkdir()
    for i in range(count):
        os.link(originals[i % 4], data / f"{i:05d}.png")
    names = [f"class-{i}" for i in range(count)]
    rows = [json.dumps({"file_name": f"{i:05d}.png", "label": names[i]}) for i in range(count)]
    (data / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    labels = read_labels(data, [f"{i:05d}.png" for i in range(count)])
    assert labels is not None and labels.names == tuple(sorted(names))
    assert np.array_equal(labels.indices, np.array([sorted(names).index(n) for n in names]))
    train(TrainConfig(data=data, out=tmp_path / "run", steps=2, **FAST))
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["num_classes"] == count and len(config["labels"]["classes"]) == count
    state = torch.load(tmp_path / "run" / "state-latest.pt", weights_only=True)
    assert state["model"]["label_embedding.weight"].shape[0] == count + 1  # + the null label
    images = generate_images(tmp_path / "run", 2, steps=2, device="cpu", progress=False, label="class-9999")
    assert images.shape == (2, 16, 16, 3)
    rows[-1] = json.dumps({"file_name": f"{count - 1:05d}.png", "label": "renamed"})
    (data / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(DiffkitError) as refused:  # one short line, not two lists of 10,000 names
        train(TrainConfig(data=data, out=tmp_path / "run", steps=3, resume=True, **FAST))
    message = str(refused.value)
    assert "trained with classes ['class-0', 'class-1', 'class-10'," in message and len(message) < 400
    assert message.count("(10000 classes)") == 2


def test_nested_folders_label_by_the_images_own_folder_as_hf_imagefolder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """HF's FolderBasedBuilder: label = os.path.basename(os.path.dirname(file)), and labels only when
    every file has the same path depth and there are two names or more."""
    two_levels = ["animals/cats/1.png", "animals/dogs/2.png", "plants/cats/3.png", "plants/ferns/4.png"]
    labels = read_labels(tmp_path, two_levels)
    assert labels is not None and labels.names == ("cats", "dogs", "ferns")  # not ("animals", "plants")
    assert labels.indices.tolist() == [0, 1, 0, 2] and labels.source == "folders"
    # different depths: not a labelling, and said
    assert read_labels(tmp_path, ["cats/1.png", "dogs/2.png", "dogs/big/3.png"]) is None
    note = " ".join(capsys.readouterr().err.split())
    assert "images at 2 different folder depths" in note and "Hugging Face imagefolder" in note
    # all two levels down under one top folder: the leaf folders are the classes
    one_top = read_labels(tmp_path, ["all/a/1.png", "all/b/2.png"])
    assert one_top is not None and one_top.names == ("a", "b")
    assert read_labels(tmp_path, ["x/a/1.png", "y/a/2.png"]) is None  # one name: no labelling


def test_a_two_level_tree_trains_with_the_leaf_folders_as_classes(tmp_path: Path) -> None:
    for top, leaf, seed in (("animals", "cats", 1), ("animals", "dogs", 2), ("plants", "ferns", 3)):
        write_face_folder(tmp_path / "data" / top / leaf, 3, size=16, seed=seed)
    result = train(TrainConfig(data=tmp_path / "data", out=tmp_path / "run", steps=1, **FAST))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())["labels"]
    assert saved["classes"] == ["cats", "dogs", "ferns"]
    assert saved["counts"] == {"cats": 3, "dogs": 3, "ferns": 3}
    assert result.step == 1
