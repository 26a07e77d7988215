"""bench_sample's measure that ranks samplers: pixel error against a many-step DPM++ reference from the
same noise, and the known-Gaussian case whose exact answer is known in closed form.

The maths is checked on purpose: the closed-form flow against an independent many-step RK4 solve of the
probability-flow ODE, the denoiser against Tweedie's formula, diffkit's samplers converging to the exact
answer at their order, the affine read-off against sampling real noise, and the pairing of each image
with its own noise and step count (a reference drawn from other noise, or a step count off by one, fails
here).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.bench_sample import (
    LEVELS,
    GaussianData,
    convergence,
    exact_model,
    gaussian_affine,
    gaussian_case,
    pixel_rmse,
    shared_noise,
    solve,
    start_abar,
    steps_within,
)
from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.samplers import make_sampler
from diffkit.sample.generate import initial_noise

SHAPE = (3, 4, 4)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _data(seed: int = 0, spread: float = 0.4, centre: float = 1.0) -> GaussianData:
    g = torch.Generator().manual_seed(seed)
    mean = centre * (torch.rand(SHAPE, generator=g, dtype=torch.float64) - 0.5)
    std = 0.05 + spread * torch.rand(SHAPE, generator=g, dtype=torch.float64)
    return GaussianData(mean, std)


def _rk4_flow(data: GaussianData, x: np.ndarray, abar_start: float, abar_end: float, n: int) -> np.ndarray:
    """The probability-flow ODE in lambda = log(alpha / sigma), y = x / sigma: dy/dlambda = e^lambda D(x)
    (DPM-Solver++'s form), integrated with classical RK4 in float64, independent of diffkit's samplers."""
    mean, std = data.mean.numpy(), data.std.numpy()

    def lam(abar: float) -> float:
        return 0.5 * math.log(abar) - 0.5 * math.log1p(-abar)

    def sigma(lam_: float) -> float:
        return 1.0 / math.sqrt(1.0 + math.exp(2 * lam_))

    def f(lam_: float, y: np.ndarray) -> np.ndarray:
        s = sigma(lam_)
        abar = 1.0 - s * s
        x_t = s * y
        a = math.sqrt(abar)
        x0 = mean + a * std**2 / (abar * std**2 + s * s) * (x_t - a * mean)  # Gaussian posterior mean
        return math.exp(lam_) * x0

    lo, hi = lam(abar_start), lam(abar_end)
    h = (hi - lo) / n
    y, lam_ = x / sigma(lo), lo
    for _ in range(n):
        k1 = f(lam_, y)
        k2 = f(lam_ + h / 2, y + h / 2 * k1)
        k3 = f(lam_ + h / 2, y + h / 2 * k2)
        k4 = f(lam_ + h, y + h * k3)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        lam_ += h
    return sigma(hi) * y


# ------------------------------------------------------------------------------- the exact answer


def test_closed_form_flow_is_the_many_step_numerical_solution_of_the_ode() -> None:
    data = _data()
    diffusion = GaussianDiffusion.create()
    abar = diffusion.schedule.alphas_cumprod
    x = torch.randn((5, *SHAPE), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for start, end in ((start_abar(diffusion), float(abar[0])), (float(abar[700]), float(abar[100]))):
        numeric = _rk4_flow(data, x.numpy(), start, end, 4000)
        exact = data.flow(x, start, end).numpy()
        assert np.abs(numeric - exact).max() * LEVELS < 1e-3, (start, end)
    # the end of the flow (abar -> 1) is the exact answer the samplers are scored against
    gain, offset = data.exact_gain_offset(start_abar(diffusion))
    near_one = _rk4_flow(data, x.numpy(), start_abar(diffusion), 1 - 1e-9, 8000)
    assert np.abs(near_one - (gain * x + offset).numpy()).max() * LEVELS < 1e-2


def test_denoiser_is_tweedies_posterior_mean() -> None:
    """E[x0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / a, with p_t = N(a mu, a^2 s^2 + sigma^2)."""
    data = _data(3)
    x_t = torch.randn((4, *SHAPE), dtype=torch.float64)
    for abar in (1e-4, 0.3, 0.9, 0.9999):
        a, var_t = math.sqrt(abar), abar * data.std.square() + 1 - abar
        score = -(x_t - a * data.mean) / var_t
        tweedie = (x_t + (1 - abar) * score) / a
        assert torch.allclose(data.denoise(x_t, torch.tensor(abar, dtype=torch.float64)), tweedie, atol=1e-9)


def test_exact_model_speaks_every_prediction_type() -> None:
    """The same exact denoiser through eps, v and EDM outputs: diffkit's samplers see the same x0."""
    data = _data(4)
    plan = {"ddim": [10], "dpmpp": [10], "ddpm": [10]}
    tables = [gaussian_case(data, GaussianDiffusion.create(prediction=p), plan) for p in ("v", "eps", "edm")]
    for rows in zip(*tables, strict=True):
        for key in ("rmse_to_exact_ode", "w2_to_data"):
            values = [row[key] for row in rows]
            assert max(values) - min(values) < 2e-3, (rows[0]["sampler"], key, values)


def test_start_abar_is_the_first_timestep_of_every_step_count() -> None:
    diffusion = GaussianDiffusion.create()
    for steps in (1, 7, 20, 999, 1000):
        sampler = make_sampler("dpmpp", diffusion)
        sampler.set_timesteps(steps)
        assert start_abar(diffusion) == float(diffusion.schedule.alphas_cumprod[int(sampler.timesteps[0])])


# --------------------------------------------------------------------------- the known-Gaussian case


def test_samplers_converge_to_the_exact_answer_at_their_order() -> None:
    data = _data()
    diffusion = GaussianDiffusion.create()
    counts = [25, 100, 400, 1000]
    rows = gaussian_case(data, diffusion, {"ddim": counts, "dpmpp": counts, "ddpm": [100, 1000]})
    error = {(r["sampler"], r["steps"]): r for r in rows}

    def gain(name: str) -> float:  # error at 25 steps over error at 400: 16 for first order, 256 for second
        return error[(name, 25)]["rmse_to_exact_ode"] / error[(name, 400)]["rmse_to_exact_ode"]

    assert 10 < gain("ddim") < 22
    assert gain("dpmpp") > 50  # above first order by far (the last, first-order step keeps it off 256)
    for steps in counts:
        assert error[("dpmpp", steps)]["rmse_to_exact_ode"] < error[("ddim", steps)]["rmse_to_exact_ode"]
    assert error[("dpmpp", 1000)]["rmse_to_exact_ode"] < 0.02  # the model case's reference, in levels
    for name in ("ddim", "dpmpp"):  # deterministic: the distribution's distance is the pathwise one
        row = error[(name, 100)]
        assert not row["stochastic"] and row["w2_to_data"] == pytest.approx(
            row["rmse_to_exact_ode"], abs=1e-3
        )
    # DDPM: another draw, far from the ODE's image, but its distribution converges to the data's
    assert error[("ddpm", 1000)]["stochastic"] and error[("ddpm", 1000)]["rmse_to_exact_ode"] > 10
    assert error[("ddpm", 1000)]["w2_to_data"] < error[("ddpm", 100)]["w2_to_data"] / 5
    assert all(r["network_calls"] == r["steps"] for r in rows)


def test_affine_read_off_is_what_sampling_real_noise_gives() -> None:
    data = _data(1)
    diffusion = GaussianDiffusion.create()
    model = exact_model(data, diffusion)
    z = torch.randn((6, *SHAPE), generator=torch.Generator().manual_seed(2))
    for name in ("ddim", "dpmpp"):
        gain, offset, var, _ = gaussian_affine(model, diffusion, name, 12, SHAPE)
        sampled, _ = solve(model, diffusion, name, 12, z, clip_sample=False)
        assert torch.all(var == 0)
        assert (sampled.double() - (gain * z.double() + offset)).abs().max() < 1e-4
    gain, offset, var, _ = gaussian_affine(model, diffusion, "ddpm", 8, SHAPE)
    many = torch.randn((20_000, *SHAPE), generator=torch.Generator().manual_seed(3))
    sampled, _ = solve(model, diffusion, "ddpm", 8, many, clip_sample=False)
    std = (gain.square() + var).sqrt()
    sampled = sampled.double()
    assert ((sampled.mean(0) - offset).abs() / std).max() < 5 / math.sqrt(20_000)
    assert ((sampled.std(0) / std) - 1).abs().max() < 5 / math.sqrt(2 * 20_000)
    # and the residual after the affine part in z is DDPM's own noise, of variance var
    residual = sampled - gain * many.double() - offset
    assert ((residual.var(0) / var) - 1).abs().max() < 5 / math.sqrt(20_000 / 2)


# ---------------------------------------------------------------------------- the trained-model case


def _inside_data() -> GaussianData:
    """Data well inside [-1, 1] (|mean| <= 0.3, std <= 0.15), so x0 clipping leaves the ODE exact."""
    return _data(5, spread=0.1, centre=0.6)


def test_reference_image_i_is_the_answer_for_noise_i() -> None:
    """The reference pairs image i with noise i: with the exact denoiser standing in for the network, it
    is the exact answer of its own noise, and far from another image's."""
    data = _inside_data()
    diffusion = GaussianDiffusion.create()
    noise = shared_noise(6, seed=0, channels=3, resolution=4)
    reference, rows, images = convergence(exact_model(data, diffusion), diffusion, noise, {"dpmpp": [100]})
    gain, offset = data.exact_gain_offset(start_abar(diffusion))
    exact = gain * noise.double() + offset
    assert pixel_rmse(reference, exact).max() < 0.05
    shuffled = pixel_rmse(reference, exact.roll(1, dims=0))  # what a pairing off by one image would give
    assert shuffled.min() > 5
    assert rows[0]["rmse_max"] < 1.0 and torch.equal(images[("dpmpp", 100)], solve(
        exact_model(data, diffusion), diffusion, "dpmpp", 100, noise)[0])  # fmt: skip


def test_each_row_is_its_step_count_against_the_reference_from_the_same_noise() -> None:
    data = _inside_data()
    diffusion = GaussianDiffusion.create()
    model = exact_model(data, diffusion)
    noise = shared_noise(4, seed=0, channels=3, resolution=4)
    plan = {"ddim": [3, 10], "dpmpp": [3, 10], "ddpm": [10]}
    reference, rows, _ = convergence(model, diffusion, noise, plan, reference_steps=200)
    for row in rows:
        assert row["network_calls"] == row["steps"]
        direct, _ = solve(model, diffusion, row["sampler"], row["steps"], noise)
        assert row["rmse_median"] == round(float(np.median(pixel_rmse(direct, reference))), 4)
        assert row["stochastic"] == (row["sampler"] == "ddpm")
    by = {(r["sampler"], r["steps"]): r["rmse_median"] for r in rows}
    assert by[("dpmpp", 10)] < by[("ddim", 10)] < by[("ddim", 3)]
    with pytest.raises(ValueError):  # DPM++ at the reference's own count would score zero by construction
        convergence(model, diffusion, noise, {"dpmpp": [200]}, reference_steps=200)


def test_shared_noise_is_diffkit_samples_noise_image_by_image() -> None:
    noise = shared_noise(5, seed=3)
    assert torch.equal(noise, initial_noise(range(5), 3, 8, 3))
    assert torch.equal(noise[4], initial_noise(range(4, 5), 3, 8, 3)[0])  # image i's noise, whatever n
    assert torch.equal(shared_noise(7, seed=3)[:5], noise)


# ------------------------------------------------------------------------------------ the bookkeeping


def test_pixel_rmse_is_in_8_bit_levels_of_the_clipped_images() -> None:
    x = torch.zeros((2, 3, 4, 4))
    assert pixel_rmse(x + 2 / 255, x) == pytest.approx([1.0, 1.0])
    y = x.clone()
    y[1] = 5.0  # shown as 1.0 (clipped): 127.5 levels from 0
    assert pixel_rmse(y, x) == pytest.approx([0.0, LEVELS])
    with pytest.raises(ValueError):
        pixel_rmse(x[:1], x)


def test_steps_within_needs_every_larger_count_within() -> None:
    rows = [{"sampler": "a", "steps": k, "e": e} for k, e in ((5, 0.9), (10, 1.4), (20, 0.8), (50, 0.3))]
    rows += [{"sampler": "b", "steps": k, "e": e} for k, e in ((5, 3.0), (10, 2.0))]
    assert steps_within(rows, "a", 1.0, "e") == 20  # 5 is within, but 10 is not again
    assert steps_within(rows, "a", 0.5, "e") == 50
    assert steps_within(rows, "a", 0.1, "e") is None
    assert steps_within(rows, "b", 1.0, "e") is None
    assert steps_within(rows, "b", 3.0, "e") == 5


def test_the_reading_traces_the_ranking_and_says_when_no_count_was_within(tmp_path: Path) -> None:
    import json

    from benchmarks.readings import sample
    from benchmarks.readings.figures import collect, load

    summary = {
        "resolution": 8, "n_images": 64, "tolerance_levels": 1.0, "reference_steps": 1000,
        "dpmpp_steps_within_tolerance": 30, "ddim_steps_within_tolerance": None,
        "gaussian_dpmpp_steps_within_tolerance": 50, "gaussian_ddim_steps_within_tolerance": 150,
        "gaussian_ddpm_steps_w2_within_tolerance": 300, "s_per_image_ddpm1000": 3.5,
        "s_per_image_dpmpp20": 0.2, "run_train_options": {"steps": 800}, "timing_rounds": 3,
        "rmse_dpmpp20_levels": 1.5,
        "rmse_ddim20_levels": 3.2, "reference_check_dpmpp200_levels": 0.004, "ddim_steps_within_5pct": 10,
        "dpmpp_steps_within_5pct": 10, "fd_ddim20_over_ddpm1000": 0.81, "fd_dpmpp20_over_ddpm1000": 0.8,
    }  # fmt: skip
    (tmp_path / "bench_sample.json").write_text(json.dumps({"summary": summary}))
    report = load("sample", tmp_path)
    text, figures = collect(sample.headline(report))
    assert "at 30 DPM++ steps and none of the counts measured DDIM steps" in text
    assert [f[3] for f in figures if f[1] == "30"] == [["summary", "dpmpp_steps_within_tolerance"]]
    prose = {name: collect(value)[0] for name, value in sample.prose(report).items()}
    assert prose["ddim_steps"] == "none of the counts measured" and prose["gaussian_ddpm_steps"] == "300"
