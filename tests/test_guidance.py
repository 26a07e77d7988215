"""Labels and classifier-free guidance end to end: labelled data -> training -> guided sampling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.guidance import guided_model
from diffkit.diffusion.samplers import make_sampler, run_sampler
from diffkit.fakesite.faces import draw_face
from diffkit.runs.snapshots import load_snapshot, snapshot_payload
from diffkit.sample.generate import generate_images
from diffkit.train.cache import load_image_dataset
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

RES = 8
COLOURS = {"red": (220, 40, 40), "blue": (40, 40, 220)}


def _faces_on(folder: Path, colour: tuple[int, int, int], n: int, seed: int) -> None:
    """Procedural faces with everything outside the head ellipse repainted in ``colour``."""
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:16, :16]
    background = ((xx - 7.5) / 5.5) ** 2 + ((yy - 8.5) / 7) ** 2 > 1
    for index in range(n):
        face = np.asarray(draw_face(np.random.default_rng([seed, index]), 16)).copy()
        face[background] = colour
        Image.fromarray(face).save(folder / f"{index}.png")


def _tiny(data: Path, out: Path, **options: object) -> TrainConfig:
    settings: dict[str, object] = dict(
        data=data, out=out, preset="tiny", resolution=RES, batch_size=8, steps=60, lr=2e-3,
        warmup_kimg=0.1, seed=0, device="cpu", precision="fp32", progress=False, report=False,
        sample_grid=4, sample_steps=2, log_every_steps=10, label_dropout=0.2,
    )  # fmt: skip
    return TrainConfig(**(settings | options))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Faces on red and on blue backgrounds, one subfolder per class, and a tiny run trained on them."""
    root = tmp_path_factory.mktemp("cfg")
    for offset, (name, colour) in enumerate(COLOURS.items()):
        _faces_on(root / "data" / name, colour, 8, seed=10 + offset)
    train(_tiny(root / "data", root / "run"))
    return {"data": root / "data", "run": root / "run", "root": root}


def _position_on_axis(images: np.ndarray, towards: np.ndarray, away: np.ndarray) -> np.ndarray:
    """Per image: 0 at the ``away`` mean image, 1 at the ``towards`` mean, along the line between them."""
    axis = (towards - away).ravel()
    return (images.reshape(len(images), -1).astype(float) - away.ravel()) @ axis / (axis @ axis)


def _class_means(data: Path) -> dict[str, np.ndarray]:
    cache = load_image_dataset(data, RES, progress=False)
    pixels = np.asarray(cache.images).astype(float)
    return {name: pixels[[f.startswith(name + "/") for f in cache.files]].mean(axis=0) for name in COLOURS}


def test_labels_from_subfolders_are_saved_in_the_run_config_and_snapshot(labelled: dict[str, Path]) -> None:
    config = json.loads((labelled["run"] / "config.json").read_text())
    assert config["labels"] == {
        "classes": ["blue", "red"], "source": "folders", "counts": {"blue": 8, "red": 8}, "label_dropout": 0.2
    }  # fmt: skip
    assert config["model"]["num_classes"] == 2 and config["train"]["labels"] == "auto"
    snapshot = labelled["run"] / "ema-000000.safetensors"
    assert snapshot_payload(snapshot)["labels"] == config["labels"]
    model, _, _ = load_snapshot(snapshot, torch.device("cpu"))
    assert model.label_embedding is not None and model.label_embedding.num_embeddings == 3  # + null


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_guided_samples_look_like_their_class_and_more_so_with_more_guidance(
    labelled: dict[str, Path], sampler: str
) -> None:
    """Samples of class A sit nearer A's mean image than B's; guidance 3 pushes them further towards A."""
    means = _class_means(labelled["data"])
    for wanted, other in (("red", "blue"), ("blue", "red")):
        positions = {}
        for guidance in (0.0, 3.0):
            images = generate_images(
                labelled["run"], 8, sampler=sampler, steps=20, seed=0, device="cpu", precision="fp32",
                progress=False, label=wanted, guidance=guidance,
            )  # fmt: skip
            positions[guidance] = _position_on_axis(images, means[wanted], means[other])
            distance = {name: np.sqrt(((images - m) ** 2).mean(axis=(1, 2, 3))) for name, m in means.items()}
            assert (distance[wanted] < distance[other]).all(), (wanted, guidance)
        assert (positions[0.0] > 0.5).all()
        assert positions[3.0].mean() > positions[0.0].mean() + 0.1, positions


def test_unconditional_samples_of_a_labelled_run_use_the_null_label(labelled: dict[str, Path]) -> None:
    """What `diffkit eval --run` does with a labelled run: no label, one batch, both classes appear."""
    images = generate_images(
        labelled["run"], 16, steps=20, seed=0, device="cpu", precision="fp32", progress=False
    )
    means = _class_means(labelled["data"])
    towards_red = _position_on_axis(images, means["red"], means["blue"])
    assert images.shape == (16, RES, RES, 3)
    assert (towards_red > 0.5).any() and (towards_red < 0.5).any(), towards_red.round(2)


def test_guidance_is_one_batched_forward_and_the_cfg_formula() -> None:
    calls: list[tuple[int, list[int]]] = []

    def model(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        calls.append((len(x), labels.tolist()))
        return x * 0 + labels.view(-1, 1, 1, 1).float()  # "conditional" output = the label value

    guided = guided_model(model, label=1, guidance=3.0, null_label=5)
    out = guided(torch.zeros(2, 3, 4, 4), torch.zeros(2))
    assert calls == [(4, [1, 1, 5, 5])]  # cond and uncond halves in one forward pass
    assert torch.equal(out, torch.full((2, 3, 4, 4), 5 + 4 * (1 - 5.0)))  # u + (1 + w)(c - u)
    calls.clear()
    guided_model(model, label=1, guidance=0.0, null_label=5)(torch.zeros(2, 3, 4, 4), torch.zeros(2))
    assert calls == [(2, [1, 1])]  # w = 0: the conditional model alone


@pytest.mark.parametrize("prediction", ["v", "eps"])
@pytest.mark.parametrize("sampler_name", ["ddim", "ddpm", "dpmpp"])
def test_every_sampler_follows_guided_oracles_for_eps_and_v(prediction: str, sampler_name: str) -> None:
    """With oracles for x0 = A (label 0) and x0 = B (null), the guided model's x0 is B + (1 + w)(A - B),
    exactly, whether the network predicts eps or v; every sampler must land there."""
    diffusion = GaussianDiffusion.create("cosine", prediction)
    generator = torch.Generator().manual_seed(3)
    targets = torch.rand(2, 1, 3, 4, 4, generator=generator) * 0.4 - 0.2  # [A, B]
    abar = diffusion.schedule.alphas_cumprod.float()

    def oracle(x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x0 = targets[(labels == 1).long()].squeeze(1)  # label 0 -> A, null label 1 -> B
        a = abar[t.long()].view(-1, 1, 1, 1)
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0

    noise = torch.randn(3, 3, 4, 4, generator=generator)
    sampler = make_sampler(sampler_name, diffusion, clip_sample=False)
    result = run_sampler(guided_model(oracle, 0, 2.0, 1), sampler, noise, 20, generator)
    expected = targets[1] + 3.0 * (targets[0] - targets[1])
    assert torch.allclose(result, expected.expand_as(result), atol=1e-4)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "diffkit.cli", *args], capture_output=True, text=True, timeout=300
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr, lines
    return lines[0]


def test_label_errors_are_one_line(labelled: dict[str, Path], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    train(_tiny(labelled["data"], plain, steps=1, labels="none"))  # the same folders, unconditional
    assert "labels" not in json.loads((plain / "config.json").read_text())
    common = ["--n", "1", "--steps", "1", "--device", "cpu", "--out", str(tmp_path / "s")]
    line = _one_error_line(_cli("sample", "--run", str(plain), "--label", "red", *common))
    assert "--label red: this run was trained without labels" in line
    line = _one_error_line(_cli("sample", "--run", str(labelled["run"]), "--label", "green", *common))
    assert "--label green is not a class of this run; its classes: blue, red" in line
    line = _one_error_line(_cli("sample", "--run", str(labelled["run"]), "--guidance", "2", *common))
    assert "--guidance needs --label NAME" in line
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_label_column_in_metadata_jsonl(tmp_path: Path) -> None:
    from diffkit.dataset.labels import read_labels
    from diffkit.errors import DiffkitError

    _faces_on(tmp_path / "d" / "images", (0, 200, 0), 3, seed=1)
    rows = [{"file_name": f"images/{i}.png", "label": [7, 10, 7][i]} for i in range(3)]
    (tmp_path / "d" / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = [f"images/{i}.png" for i in range(3)]
    labels = read_labels(tmp_path / "d", files)
    assert labels is not None and labels.names == ("7", "10") and labels.indices.tolist() == [0, 1, 0]
    assert labels.source == "metadata.jsonl"
    assert read_labels(tmp_path / "d", files, "none") is None
    with pytest.raises(DiffkitError, match=r"no label for 1 of the 4 images \(first: images/x.png\)"):
        read_labels(tmp_path / "d", [*files, "images/x.png"])
    # A scrape output without a label column: its images/<xx>/ folders are not classes.
    (tmp_path / "d" / "metadata.jsonl").write_text('{"file_name": "images/0.png"}\n')
    assert read_labels(tmp_path / "d", ["images/aa/1.png", "images/bb/2.png"]) is None
