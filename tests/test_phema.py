"""Post-hoc EMA (Karras et al. 2024): the profile maths against independent integrals and a directly run EMA,
then training's stored profiles, their exact resume and ``diffkit phema``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from typer.testing import CliRunner

from diffkit.cli import app
from diffkit.errors import DiffkitError
from diffkit.fakesite.faces import write_face_folder
from diffkit.train.config import TrainConfig
from diffkit.train.phema import (
    PowerEMA,
    StoredProfile,
    gamma_to_sigma_rel,
    profile_dot,
    reconstruct,
    sigma_rel_to_gamma,
    solve_coefficients,
)
from diffkit.train.run import train

FAST = dict(
    preset="tiny", resolution=16, batch_size=8, device="cpu", precision="fp32", progress=False, report=False,
    sample_every_kimg=0.0, sample_grid=4, sample_steps=3, log_every_steps=1, warmup_kimg=0.2,
)  # fmt: skip


def test_sigma_rel_and_gamma_are_edm2s_pairs() -> None:
    """EDM2 (section 3.1): sigma_rel 0.05 and 0.10 are the exponents 16.97 and 6.94."""
    assert round(sigma_rel_to_gamma(0.05), 2) == 16.97 and round(sigma_rel_to_gamma(0.10), 2) == 6.94
    for sigma_rel in (0.01, 0.05, 0.072, 0.15, 0.28):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-9)
    for bad in (0.0, -0.1, 0.29):
        with pytest.raises(DiffkitError, match="--sigma-rel must be in"):
            sigma_rel_to_gamma(bad)


def test_profile_inner_products_equal_numerical_integrals() -> None:
    """The closed form against a trapezoid integral of p_a p_b, with p(tau) = (g + 1) tau^g / t^(g + 1)
    on [0, t]."""
    tau = np.linspace(0.0, 1000.0, 2_000_001)

    def profile(t: float, gamma: float) -> np.ndarray:
        return np.where(tau <= t, (gamma + 1) * tau**gamma / t ** (gamma + 1), 0.0)

    for t_a, g_a, t_b, g_b in ((400, 16.97, 1000, 6.94), (1000, 6.94, 1000, 16.97), (900, 3.0, 250, 10.0)):
        numeric = np.trapezoid(profile(t_a, g_a) * profile(t_b, g_b), tau)
        assert profile_dot(t_a, g_a, t_b, g_b) == pytest.approx(numeric, rel=1e-4)
        assert profile_dot(t_a, g_a, t_b, g_b) == pytest.approx(profile_dot(t_b, g_b, t_a, g_a), rel=1e-12)


def _trajectory_run(steps: int, every: int, sigma_rels: tuple[float, ...]) -> tuple[list, dict, PowerEMA]:
    """A small module whose weights follow a smooth drift plus noise; PowerEMA over it, stored every
    ``every`` steps (the first two sigma_rels), as training stores them."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 5)
    averages = PowerEMA(model, sigma_rels)
    stored: list[StoredProfile] = []
    tensors: dict[Path, dict[str, torch.Tensor]] = {}
    drift = torch.randn(5, 6)
    with torch.no_grad():
        for t in range(1, steps + 1):
            model.weight.copy_(drift * np.sin(t / 300) + 0.3 * torch.randn(5, 6) + t / steps)
            model.bias.copy_(torch.randn(5) * 0.1)
            averages.update(model, t)
            if t % every == 0:
                for sigma_rel, average in list(zip(sigma_rels, averages.models, strict=True))[:2]:
                    path = Path(f"{sigma_rel}-{t}")
                    tensors[path] = {k: v.clone() for k, v in average.state_dict().items()}
                    stored.append(StoredProfile(path, sigma_rel, t, t * 8))
    return stored, tensors, averages


def test_reconstruction_matches_a_directly_run_ema_and_is_exact_for_a_stored_profile() -> None:
    """sigma_rel 0.07 rebuilt from stored 0.05/0.10 profiles against a 0.07 EMA run alongside: the gap is a
    small share of the 0.05-vs-0.10 gap (the lever's range). A stored profile comes back exactly."""
    stored, tensors, averages = _trajectory_run(4000, 400, (0.05, 0.10, 0.07))
    rebuilt = reconstruct(stored, 0.07, 4000, tensors.__getitem__)
    direct = averages.models[2].weight.double()
    spread = (averages.models[0].weight.double() - averages.models[1].weight.double()).norm()
    error = (rebuilt.state["weight"].double() - direct).norm()
    assert len(rebuilt.used) == 20 and rebuilt.fit.relative_error < 0.05
    assert error < 0.05 * spread, (error, spread)
    # a target that is one of the stored profiles: its coefficient 1, the others 0, the same weights
    same = reconstruct(stored, 0.10, 4000, tensors.__getitem__)
    assert same.fit.relative_error < 1e-6
    assert torch.allclose(same.state["weight"], averages.models[1].weight, atol=1e-5)
    # only profiles taken at or before the target time are used
    earlier = reconstruct(stored, 0.07, 2000, tensors.__getitem__)
    assert max(p.step for p in earlier.used) == 2000 and len(earlier.used) == 10
    with pytest.raises(DiffkitError, match="no post-hoc EMA snapshot at or before step 100"):
        reconstruct(stored, 0.07, 100, tensors.__getitem__)


def test_solve_coefficients_tolerates_duplicate_profiles() -> None:
    """Two snapshots with the same profile make the Gram matrix singular; the fit stays exact."""
    gamma = sigma_rel_to_gamma(0.1)
    fit = solve_coefficients(np.array([100, 100, 200]), np.array([gamma, gamma, gamma]), 200, gamma)
    assert np.isfinite(fit.coefficients).all() and fit.relative_error < 1e-6


@pytest.fixture(scope="module")
def faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("faces")
    write_face_folder(folder, 24, size=16, seed=0)
    return folder


def test_training_stores_profiles_resumes_exactly_and_phema_rebuilds_an_ema(
    faces: Path, tmp_path: Path
) -> None:
    """--phema-every-kimg: both profiles are stored at every crossing and at the end; a resumed run stores
    the same tensors as one run straight through; `diffkit phema` writes a snapshot that sample loads."""
    from diffkit.sample.generate import generate_images

    options = FAST | {"phema_every_kimg": 0.016}  # every 2 steps of 8 images
    train(TrainConfig(data=faces, out=tmp_path / "whole", steps=5, **options))
    train(TrainConfig(data=faces, out=tmp_path / "split", steps=3, **options))
    train(TrainConfig(data=faces, out=tmp_path / "split", steps=5, resume=True, **options))

    def names(run: str) -> list[str]:
        return sorted(p.name for p in (tmp_path / run / "phema").iterdir())

    def expected(*nimgs: int) -> list[str]:
        return sorted(f"pema-{s}-{n:09d}.safetensors" for n in nimgs for s in ("0.050", "0.100"))

    assert names("whole") == expected(16, 32, 40)  # the crossings, then the end
    assert names("split") == expected(16, 24, 32, 40)  # and where the first part stopped
    for name in names("whole"):
        a, b = (load_file(tmp_path / run / "phema" / name) for run in ("whole", "split"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    result = CliRunner().invoke(app, ["phema", str(tmp_path / "whole"), "--sigma-rel", "0.07", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["step"] == 5 and info["kimg"] == 0.04 and len(info["sources"]) == 6
    assert abs(sum(s["coefficient"] for s in info["sources"]) - 1.0) < 0.05  # an average of averages
    snapshot = Path(info["snapshot"])
    assert snapshot == tmp_path / "whole" / "phema" / "posthoc-0.070-000000040.safetensors"
    images = generate_images(tmp_path / "whole", 2, steps=3, device="cpu", progress=False, snapshot=snapshot)
    assert images.shape == (2, 16, 16, 3)
    earlier = CliRunner().invoke(
        app, ["phema", str(tmp_path / "whole"), "--sigma-rel", "0.1", "--kimg", "0.03"]
    )
    assert earlier.exit_code == 0 and "at step 2 (0.016 kimg)" in earlier.stdout, earlier.output
    damaged = sorted((tmp_path / "split" / "phema").glob("pema-0.100-*.safetensors"))[0]
    with safe_open(str(damaged), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(damaged)
    next(iter(tensors.values())).fill_(float("nan"))  # a diverged average: whole file, readable header
    damaged.write_bytes(save(tensors, metadata=metadata))
    broken = CliRunner().invoke(app, ["phema", str(tmp_path / "split"), "--sigma-rel", "0.07"])
    assert isinstance(broken.exception, SystemExit) and broken.exit_code == DiffkitError.exit_code
    assert damaged.name in broken.output and "NaN" in broken.output
    plain = tmp_path / "plain"
    train(TrainConfig(data=faces, out=plain, steps=1, **FAST))
    refused = CliRunner().invoke(app, ["phema", str(plain), "--sigma-rel", "0.07"])
    assert refused.exit_code != 0 and "train with --phema-every-kimg" in refused.output
    assert not (plain / "phema").exists()
    with pytest.raises(DiffkitError, match="--phema-every-kimg must be >= 0"):
        TrainConfig(phema_every_kimg=-1.0)


@pytest.mark.parametrize("value", ["1e-300", "5e-324", "0.0009", "0", "-0.1", "0.29", "nan", "inf", "1e308"])
def test_sigma_rel_out_of_range_is_one_line_before_any_file_is_read(tmp_path: Path, value: str) -> None:
    """`phema --sigma-rel 1e-300` raised OverflowError (sigma_rel ** -2); every value outside
    [0.001, 0.28] is one error line and exit 2, checked where the option is parsed."""
    result = CliRunner().invoke(app, ["phema", str(tmp_path / "no-such-run"), "--sigma-rel", value])
    assert result.exit_code == DiffkitError.exit_code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --sigma-rel must be in [0.001, 0.28]"), lines
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert gamma_to_sigma_rel(sigma_rel_to_gamma(0.001)) == pytest.approx(0.001)  # the bound itself works
    bad_kimg = CliRunner().invoke(app, ["phema", str(tmp_path), "--sigma-rel", "0.1", "--kimg", "nan"])
    assert bad_kimg.exit_code == DiffkitError.exit_code and "--kimg must be" in bad_kimg.stderr
