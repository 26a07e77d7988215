"""`diffkit sample`: DPM-Solver++ through the CLI, the denoising animation and the HTML report."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.sample.animation import FRAME_MS, HOLD_MS, MAX_FRAMES
from diffkit.sample.report import NOISE_ROUGHNESS, roughness, too_early_note
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

RES = 8


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, faces: Path) -> Path:
    """A briefly trained tiny run: the images need not be good, only deterministic."""
    out = tmp_path_factory.mktemp("sample-report") / "run"
    train(
        TrainConfig(
            data=faces, out=out, preset="tiny", resolution=RES, batch_size=4, steps=4, seed=0, device="cpu",
            precision="fp32", progress=False, report=False, sample_grid=4, sample_steps=2,
        )
    )  # fmt: skip
    return out


def _sample(run: Path, out: Path, *options: str) -> dict:
    args = ["sample", "--run", str(run), "--out", str(out), "--device", "cpu", "--precision", "fp32"]
    result = CliRunner().invoke(app, [*args, *options, "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _pixels(folder: Path, count: int) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / f"{i:06d}.png")) for i in range(count)]).astype(int)


def test_dpmpp_same_seed_same_images_whatever_batch_size_and_n(run: Path, tmp_path: Path) -> None:
    options = ["--sampler", "dpmpp", "--steps", "6", "--seed", "5"]
    _sample(
        run, tmp_path / "a", *options, "--n", "5", "--batch-size", "5", "--report", str(tmp_path / "a.html")
    )
    _sample(
        run, tmp_path / "b", *options, "--n", "3", "--batch-size", "2", "--report", str(tmp_path / "b.html")
    )
    first, second = _pixels(tmp_path / "a", 5), _pixels(tmp_path / "b", 3)
    assert np.abs(first[:3] - second).max() <= 1  # float rounding of different batch shapes at most
    other = _sample(run, tmp_path / "c", "--sampler", "dpmpp", "--steps", "6", "--seed", "6", "--n", "3",
                    "--report", str(tmp_path / "c.html"))  # fmt: skip
    assert other["sampler"] == "dpmpp" and not np.array_equal(_pixels(tmp_path / "c", 3), second)


def _data_uris(html: str) -> list[tuple[str, bytes]]:
    found = re.findall(r'src="data:(image/[a-z]+);base64,([A-Za-z0-9+/=]+)"', html)
    return [(mime, base64.b64decode(data)) for mime, data in found]


def test_sample_report_and_gif(run: Path, tmp_path: Path) -> None:
    steps = 30  # more steps than frames: the animation shows MAX_FRAMES of them, then the result
    files = ["--gif", str(tmp_path / "denoise.gif"), "--report", str(tmp_path / "r.html")]
    options = ["--n", "6", "--steps", str(steps), "--seed", "2", "--sampler", "dpmpp", *files]
    data = _sample(run, tmp_path / "s", *options)
    assert data["report"] == str(tmp_path / "r.html") and data["animation"] == str(tmp_path / "denoise.gif")
    assert data["seconds_per_image"] == pytest.approx(data["seconds"] / 6)
    with Image.open(tmp_path / "denoise.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == MAX_FRAMES + 1
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
    assert durations == [FRAME_MS] * MAX_FRAMES + [HOLD_MS]
    html = (tmp_path / "r.html").read_text()
    sidecar = json.loads((tmp_path / "r.json").read_text())
    summary = sidecar["summary"]
    assert sidecar["command"] == "sample" and summary["sampler"] == "dpmpp" and summary["steps"] == steps
    assert summary["seed"] == 2 and summary["images"] == 6 and summary["label"] == "(unconditional)"
    assert summary["snapshot"] == data["snapshot"] and summary["seconds_per_image"] > 0
    assert [s["heading"] for s in sidecar["sections"]] == ["Samples", "Denoising"]
    assert "seconds_per_image" in html and "dpmpp" in html
    assert len(_data_uris(html)) == 2  # the grid and the animation


def test_sample_report_embeds_the_animation_playing(run: Path, tmp_path: Path) -> None:
    _sample(run, tmp_path / "s", "--n", "2", "--steps", "3", "--report", str(tmp_path / "r.html"))
    animated = [data for mime, data in _data_uris((tmp_path / "r.html").read_text()) if mime == "image/webp"]
    assert len(animated) == 1
    assert Image.open(io.BytesIO(animated[0])).n_frames == 3 + 1


def test_webp_animation_is_lossless_x_t_beside_x0_ending_on_the_samples(run: Path, tmp_path: Path) -> None:
    """The last frame holds the finished images (left and right), pixel for pixel the PNGs written."""
    _sample(run, tmp_path / "s", "--n", "3", "--steps", "4", "--gif", str(tmp_path / "a.webp"),
            "--report", str(tmp_path / "r.html"))  # fmt: skip
    pngs = _pixels(tmp_path / "s", 3)
    with Image.open(tmp_path / "a.webp") as animation:
        assert animation.n_frames == 4 + 1
        animation.seek(animation.n_frames - 1)
        last = np.asarray(animation.convert("RGB")).astype(int)
    scale, gap, header = 8, 4, 14  # 8 px images enlarged to 64 px tiles
    tile = RES * scale
    for row in range(3):
        y = header + gap + row * (tile + gap)
        for column in range(2):
            x = gap + column * (tile + gap)
            assert np.array_equal(last[y : y + tile : scale, x : x + tile : scale], pngs[row])


def test_sample_without_gif_writes_no_animation_file_and_bad_suffix_is_refused(
    run: Path, tmp_path: Path
) -> None:
    _sample(run, tmp_path / "s", "--n", "2", "--steps", "2", "--report", str(tmp_path / "r.html"))
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
        "000000.png",
        "000001.png",
        "provenance.json",
    ]
    result = CliRunner().invoke(app, ["sample", "--run", str(run), "--gif", str(tmp_path / "a.mp4")])
    assert result.exit_code == 2 and "--gif must end in .gif, .webp, .png, .apng" in result.stderr


def test_a_report_of_noise_says_too_early_to_judge(run: Path, tmp_path: Path) -> None:
    """A 4-step run draws noise: the report says so (a badge, the note, the sidecar's warning)."""
    _sample(run, tmp_path / "s", "--n", "4", "--steps", "3", "--report", str(tmp_path / "r.html"))
    sidecar = json.loads((tmp_path / "r.json").read_text())
    samples = sidecar["sections"][0]
    pixels = _pixels(tmp_path / "s", 4)
    rough = np.abs(np.diff(pixels, axis=2)).mean()  # the rule, computed here from the PNGs written
    assert rough > NOISE_ROUGHNESS
    assert samples["badges"] == ["too early to judge"]
    assert samples["text"].startswith("Too early to judge: after ")
    assert f"differ by {rough:.0f} grey levels" in samples["text"]
    assert sidecar["data"]["warnings"] == [samples["text"]]
    assert "too early to judge" in (tmp_path / "r.html").read_text()


def test_the_noise_rule_on_images_whose_answer_is_known() -> None:
    stripes = np.zeros((2, 8, 8, 3), np.uint8)
    stripes[:, :, ::2] = 255  # every neighbour differs by 255
    assert roughness(stripes) == 255.0
    note = too_early_note(stripes, 0.012)
    assert note is not None and note.startswith("Too early to judge: after 0.012 kimg of training ")
    smooth = np.tile(np.arange(0, 256, 32, dtype=np.uint8)[None, None, :, None], (2, 8, 1, 3))
    assert roughness(smooth) == 32.0 and too_early_note(smooth, 0.012) is None
    assert too_early_note(np.full((1, 8, 8, 3), 90, np.uint8), None) is None
    for step, noisy in ((40, False), (41, True), (60, True)):  # the rule's line: above 40 grey levels
        columns = np.zeros((1, 4, 4, 3), np.uint8)
        columns[:, :, 1::2] = step
        assert (too_early_note(columns, None) is not None) == noisy, step
