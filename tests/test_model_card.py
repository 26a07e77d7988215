"""The exported model card (issue 25, model card): licence, sample grid, finished or not, starting noise.

The card is read with huggingface_hub's own ``ModelCard`` parser (it comes with diffusers); the noise
snippet is executed as a user would paste it, and compared with the noise ``diffkit sample`` starts from.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import diffkit.sample.generate as generate_module
from diffkit.cli import app
from diffkit.export.config import ExportConfig
from diffkit.export.run import export
from diffkit.fakesite.site import FaceSite, SiteConfig
from diffkit.runs.folder import list_grids, read_run_config
from diffkit.runs.snapshots import load_snapshot, save_ema_snapshot
from diffkit.sample.generate import generate_images
from diffkit.train.config import TrainConfig
from diffkit.train.run import train

huggingface_hub = pytest.importorskip("huggingface_hub")  # with diffusers, in the `test` extra

RES, SEED, STEPS = 16, 3, 20
TOLERANCE = 2.0  # 0..255 image units, as tests/test_export.py


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A scrape of the local fake site (host 127.0.0.1), and a tiny run trained on it."""
    root = tmp_path_factory.mktemp("model-card")
    data = root / "data"
    with FaceSite(SiteConfig(size=32)) as site:
        url = site.url
        result = CliRunner().invoke(
            app,
            ["scrape", "--n", "8", "--out", str(data), "--url", url, "--rps", "200", "--concurrency", "2",
             "--no-progress", "--report", str(root / "scrape.html"), "--json"],
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    train(
        TrainConfig(
            data=data, out=root / "run", preset="tiny", resolution=RES, batch_size=4, steps=4, seed=0,
            device="cpu", precision="fp32", progress=False, report=False, sample_grid=4, sample_steps=2,
        )
    )  # fmt: skip
    return {"root": root, "url": url, "run": root / "run", "scrape_report": root / "scrape.json"}


def _card(out: Path) -> tuple[str, object]:
    text = (out / "README.md").read_text(encoding="utf-8")
    return text, huggingface_hub.ModelCard(text)


def test_the_scrape_caveat_names_the_host_scraped(scraped: dict) -> None:
    sidecar = json.loads(Path(scraped["scrape_report"]).read_text())
    caveat = next(s["text"] for s in sidecar["sections"] if s["heading"] == "Caveats")
    assert caveat.startswith("127.0.0.1 publishes no licence for its images")
    assert "thispersondoesnotexist" not in caveat


def test_license_unknown_names_the_scraped_sites_terms(scraped: dict, tmp_path: Path) -> None:
    run = Path(scraped["run"])
    out = tmp_path / "out"
    export(ExportConfig(run=run, out=out, reports_dir=tmp_path / "none"))
    text, card = _card(out)
    assert card.data.license == "unknown" and card.data.library_name == "diffusers"
    license_part = text.split("## License\n", 1)[1].split("\n## ", 1)[0]
    assert "`unknown`: no licence was given (`diffkit export --license ID` sets one)" in license_part
    assert f"scraped from `127.0.0.1` (`{scraped['url']}`)" in license_part
    assert "read `http://127.0.0.1/`'s terms" in license_part


def test_license_flag_sets_the_front_matter(scraped: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["export", str(scraped["run"]), str(out), "--license", "cc-by-4.0", "--reports", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    text, card = _card(out)
    assert card.data.license == "cc-by-4.0" and "Released as `cc-by-4.0`" in text
    bad = CliRunner().invoke(app, ["export", str(scraped["run"]), str(tmp_path / "o2"), "--license", "a: b"])
    assert bad.exit_code == 2 and "--license must be a licence id" in bad.output


def test_the_card_shows_the_runs_sample_grid_copied_byte_for_byte(scraped: dict, tmp_path: Path) -> None:
    run = Path(scraped["run"])
    out = tmp_path / "out"
    export(ExportConfig(run=run, out=out, reports_dir=tmp_path / "none"))
    nimg, grid = list_grids(run)[-1]
    assert (out / "samples.png").read_bytes() == grid.read_bytes()
    text, _ = _card(out)
    assert f"![EMA samples at {nimg / 1000:.4g} kimg](samples.png)" in text


def test_an_interrupted_snapshot_says_so(scraped: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(Path(scraped["run"]), run)
    payload = read_run_config(run)
    planned = payload["plan"]["total_nimg"]
    model, _, _ = load_snapshot(sorted(run.glob("ema-*.safetensors"))[-1], torch.device("cpu"))
    for old in run.glob("ema-*.safetensors"):
        old.unlink()
    save_ema_snapshot(run, model, nimg=planned // 2, step=2, config=payload)
    export(ExportConfig(run=run, out=tmp_path / "out", reports_dir=tmp_path / "none"))
    text, _ = _card(tmp_path / "out")
    kimg = f"{planned / 2000:.4g}"
    assert f"- finished: no, interrupted or stopped early: this snapshot is at {kimg} of the " in text
    assert "kimg planned (50%)" in text
    done, _ = _card(_export_plain(Path(scraped["run"]), tmp_path / "done"))
    assert f"- finished: yes, all {planned / 1000:.4g} kimg planned" in done


def _export_plain(run: Path, out: Path) -> Path:
    export(ExportConfig(run=run, out=out, reports_dir=out.parent / "none"))
    return out


def _code_blocks(text: str, heading: str) -> list[str]:
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def test_the_cards_noise_is_the_noise_diffkit_sample_starts_from(
    scraped: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The snippet, run as pasted, draws the noise that reached diffkit's sampler (recorded there), for
    several seeds and across batch boundaries; its DDIM loop then gives diffkit's DDIM images."""
    run = Path(scraped["run"])
    out = _export_plain(run, tmp_path / "exported")
    text, _ = _card(out)
    noise_code, loop_code = _code_blocks(text, "Starting noise")
    namespace: dict[str, object] = {}
    exec(noise_code, namespace)  # noqa: S102 - the card's own code, as a user pastes it
    diffkit_noise = namespace["diffkit_noise"]

    seen: list[torch.Tensor] = []
    original = generate_module.run_sampler

    def spy(network, sampler, noise, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(noise.detach().cpu().clone())
        return original(network, sampler, noise, *args, **kwargs)

    monkeypatch.setattr(generate_module, "run_sampler", spy)
    for seed in (0, SEED, 12345):
        seen.clear()
        generate_images(run, 5, sampler="ddim", steps=2, seed=seed, batch_size=2, device="cpu",
                        precision="fp32", progress=False)  # fmt: skip
        assert torch.equal(torch.cat(seen), diffkit_noise(seed, 5, 3, RES))  # type: ignore[operator]
    monkeypatch.undo()

    monkeypatch.chdir(out.parent)  # the card loads the folder by its name, as from the Hub
    exec(noise_code + "\n" + loop_code, namespace)  # noqa: S102
    theirs = (namespace["images"] * 255).permute(0, 2, 3, 1).double().numpy()  # type: ignore[union-attr]
    ours = generate_images(run, 4, sampler="ddim", steps=STEPS, seed=0, device="cpu", precision="fp32",
                           progress=False).astype(np.float64)  # fmt: skip
    assert np.abs(theirs - ours).max() <= TOLERANCE


def test_a_run_without_a_grid_leaves_no_old_grid_beside_its_card(scraped: dict, tmp_path: Path) -> None:
    """--force over an export that had samples.png: the new card shows none, and the old picture is gone."""
    out = _export_plain(Path(scraped["run"]), tmp_path / "out")
    assert (out / "samples.png").is_file()
    run = tmp_path / "run"
    shutil.copytree(Path(scraped["run"]), run)
    for _, grid in list_grids(run):
        grid.unlink()
    export(ExportConfig(run=run, out=out, reports_dir=tmp_path / "none", force=True))
    text, _ = _card(out)
    assert not (out / "samples.png").exists()
    assert "The run wrote no sample grid while training, so none is shown." in text
    assert "](samples.png)" not in text
