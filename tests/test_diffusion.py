"""Diffusion maths: schedules, the closed-form forward process, prediction targets, min-SNR, samplers."""

from __future__ import annotations

import math

import pytest
import torch

from diffkit.diffusion.gaussian import GaussianDiffusion, min_snr_weight
from diffkit.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlus,
    make_sampler,
    run_sampler,
    trailing_timesteps,
)
from diffkit.diffusion.schedules import make_schedule
from diffkit.errors import DiffkitError

SCHEDULE_NAMES = ["linear", "cosine"]


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_closed_form_forward_matches_iterated_chain_in_distribution(name: str) -> None:
    """q(x_t | x_0) in one shot vs t applications of q(x_t | x_{t-1}) = N(sqrt(1-beta_t) x, beta_t)."""
    # T = 250 keeps the 250 chained steps cheap; the schedules are rescaled to T by construction.
    diffusion = GaussianDiffusion.create(name, num_timesteps=250)
    betas = diffusion.schedule.betas.tolist()
    samples = 20_000
    generator = torch.Generator().manual_seed(1)
    x0 = torch.tensor([0.8, -0.5, 0.0], dtype=torch.float64).repeat(samples, 1)  # three pixel values
    checkpoints = {0, 9, 99, 249}
    x = x0.clone()
    iterated = {}
    noise = torch.empty_like(x)
    for t in range(diffusion.num_timesteps):
        noise.normal_(generator=generator)
        x.mul_(math.sqrt(1.0 - betas[t])).add_(noise, alpha=math.sqrt(betas[t]))
        if t in checkpoints:
            iterated[t] = x.clone()
    for t, chain in iterated.items():
        t_batch = torch.full((samples,), t, dtype=torch.long)
        x0_f32 = x0.float()
        closed = diffusion.q_sample(x0_f32, t_batch, torch.randn(x0_f32.shape, generator=generator)).double()
        abar = float(diffusion.schedule.alphas_cumprod[t])
        mean, var = math.sqrt(abar) * x0[0], torch.full((3,), 1.0 - abar, dtype=torch.float64)
        for sample in (chain, closed):
            # 5 standard errors: mean SE = sqrt(var / n); variance SE = var * sqrt(2 / (n - 1)) (Gaussian).
            assert torch.all((sample.mean(0) - mean).abs() < 5 * (var / samples).sqrt()), (name, t)
            assert torch.all((sample.var(0) - var).abs() < 5 * var * math.sqrt(2 / (samples - 1))), (name, t)
        # And the two samples against each other (two-sample SE of the difference of means).
        assert torch.all((chain.mean(0) - closed.mean(0)).abs() < 5 * (2 * var / samples).sqrt())


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_schedule_properties(name: str) -> None:
    schedule = make_schedule(name)
    abar = schedule.alphas_cumprod
    assert schedule.betas.dtype == torch.float64 and abar.dtype == torch.float64
    assert schedule.num_timesteps == 1000
    assert torch.all(schedule.betas > 0) and torch.all(schedule.betas < 1)
    assert torch.all(abar[1:] < abar[:-1])  # strictly decreasing signal
    assert torch.all(schedule.snr[1:] < schedule.snr[:-1])
    if name == "linear":
        assert schedule.betas[0].item() == pytest.approx(1e-4) and schedule.betas[-1].item() == pytest.approx(
            0.02
        )
        assert torch.allclose(
            make_schedule("linear", 500).betas[[0, -1]], torch.tensor([2e-4, 0.04], dtype=torch.float64)
        )
    else:
        # Nichol & Dhariwal: abar(t) = f(t)/f(0), f(t) = cos^2((t/T + s)/(1 + s) * pi/2), s = 0.008.
        def f(step: float) -> float:
            return math.cos((step / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2

        for t in (0, 100, 500, 900):
            assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-12)
        assert abar[0].item() > 0.9999 and abar[-1].item() < 1e-8
        assert schedule.betas.max().item() == pytest.approx(0.999)  # the clip at the pure-noise end


def test_unknown_schedule_and_prediction_are_user_errors() -> None:
    with pytest.raises(DiffkitError, match="schedule"):
        make_schedule("sigmoidal")
    with pytest.raises(DiffkitError, match="prediction"):
        GaussianDiffusion.create(prediction="x")


@pytest.mark.parametrize("prediction", ["v", "eps", "edm"])
def test_prediction_targets_convert_back_to_x0_and_eps(prediction: str) -> None:
    diffusion = GaussianDiffusion.create("cosine", prediction)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.rand(64, 3, 4, 4, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    t = torch.randint(0, 900, (64,), generator=generator)  # eps-prediction divides by sqrt(abar): avoid t ~ T
    x_t = diffusion.q_sample(x0, t, eps)
    x0_hat, eps_hat = diffusion.split_prediction(diffusion.target(x0, eps, t), x_t, t)
    assert torch.allclose(x0_hat, x0, atol=2e-4)
    assert torch.allclose(eps_hat, eps, atol=2e-4)
    if prediction == "v":  # v = sqrt(abar) eps - sqrt(1 - abar) x0, checked against its definition
        abar = diffusion.schedule.alphas_cumprod[t].float().view(-1, 1, 1, 1)
        assert torch.allclose(
            diffusion.target(x0, eps, t), abar.sqrt() * eps - (1 - abar).sqrt() * x0, atol=1e-6
        )


@pytest.mark.parametrize("prediction", ["v", "eps", "edm"])
def test_min_snr_weight_turns_every_objective_into_clipped_snr_times_x0_error(prediction: str) -> None:
    """Hang et al.: weight * |target error|^2 == min(snr, 5) * |x0 error|^2 for any network output."""
    diffusion = GaussianDiffusion.create("cosine", prediction, min_snr_gamma=5.0)
    generator = torch.Generator().manual_seed(3)
    t = torch.tensor([0, 50, 200, 400, 600, 800])
    x0 = torch.rand(6, 3, 2, 2, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    x_t = diffusion.q_sample(x0, t, eps)
    output = diffusion.target(x0, eps, t) + 0.1 * torch.randn(x0.shape, generator=generator)
    target_error = (output - diffusion.target(x0, eps, t)).square().flatten(1).sum(1).double()
    x0_error = (diffusion.split_prediction(output, x_t, t)[0] - x0).square().flatten(1).sum(1).double()
    snr = diffusion.schedule.snr[t]
    weighted = diffusion.loss_weight(t).double() * target_error
    assert torch.allclose(weighted, snr.clamp(max=5.0) * x0_error, rtol=2e-3)
    # edm: c_out^2 = 0.25 / (1 + 0.25 snr), from EDM's c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
    denominators = {"v": snr + 1.0, "eps": snr, "edm": (1.0 + 0.25 * snr) / 0.25}
    expected = snr.clamp(max=5.0) / denominators[prediction]
    assert torch.allclose(min_snr_weight(snr, prediction, 5.0), expected)
    assert torch.equal(min_snr_weight(snr, prediction, None), torch.ones_like(snr))


def test_loss_is_deterministic_given_the_generator_and_zero_for_a_perfect_model() -> None:
    diffusion = GaussianDiffusion.create("cosine", "v")
    x0 = torch.rand(8, 3, 4, 4) * 2 - 1
    conv = torch.nn.Conv2d(3, 3, 1)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return conv(x)

    first = diffusion.loss(model, x0, torch.Generator().manual_seed(5))
    again = diffusion.loss(model, x0, torch.Generator().manual_seed(5))
    assert first.item() == again.item() and first.item() > 0
    generator = torch.Generator().manual_seed(9)
    t, noise = diffusion.sample_training_inputs(x0, torch.Generator().manual_seed(9))

    def oracle(x_t: torch.Tensor, t_float: torch.Tensor) -> torch.Tensor:
        return diffusion.target(x0, noise, t_float.long())

    assert diffusion.loss(oracle, x0, generator).item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("prediction", ["v", "eps", "edm"])
def test_loss_is_the_min_snr_weighted_mean_of_the_per_sample_errors(prediction: str) -> None:
    """loss() applies loss_weight(t) to each sample's MSE before averaging (not a plain mean)."""
    diffusion = GaussianDiffusion.create("cosine", prediction, min_snr_gamma=5.0)
    generator = torch.Generator().manual_seed(11)
    t = torch.tensor([3, 50, 150, 250])  # snr > gamma at each: no weight is 1, even for eps
    x0 = torch.rand(4, 3, 4, 4, generator=generator) * 2 - 1
    noise = torch.randn(x0.shape, generator=generator)
    output = torch.randn(x0.shape, generator=generator)  # the network's (fixed) answer
    seen: list[torch.Tensor] = []

    def model(x_in: torch.Tensor, t_float: torch.Tensor) -> torch.Tensor:
        seen.append(t_float)
        return output

    loss = diffusion.loss(model, x0, inputs=(t, noise))
    assert torch.equal(seen[0], t.float())
    snr = diffusion.schedule.snr[t]
    denominators = {"v": snr + 1.0, "eps": snr, "edm": (1.0 + 0.25 * snr) / 0.25}
    weight = snr.clamp(max=5.0) / denominators[prediction]
    assert (weight - 1.0).abs().min() > 0.05  # every one of these timesteps is reweighted
    abar = diffusion.schedule.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    targets = {
        "v": lambda: abar.sqrt() * noise - (1 - abar).sqrt() * x0,
        "eps": lambda: noise.double(),
        "edm": lambda: diffusion.target(x0, noise, t).double(),  # checked against Karras below
    }
    target = targets[prediction]()
    per_sample = (output.double() - target).square().mean(dim=(1, 2, 3))
    expected = (weight * per_sample).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(per_sample.mean().item() - expected.item()) > 0.05 * expected.item()


def test_trailing_timesteps() -> None:
    assert trailing_timesteps(1000, 4).tolist() == [999, 749, 499, 249]
    assert trailing_timesteps(1000, 1000).tolist() == list(range(999, -1, -1))
    assert len(set(trailing_timesteps(1000, 7).tolist())) == 7
    with pytest.raises(DiffkitError):
        trailing_timesteps(1000, 0)


def _toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return 0.5 * x + 0.001 * t.view(-1, 1, 1, 1)


@pytest.mark.parametrize("sampler_cls", [DDPMSampler, DDIMSampler])
def test_sampler_shapes_and_determinism(sampler_cls: type) -> None:
    diffusion = GaussianDiffusion.create("cosine", "v")
    noise = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    kwargs = {"eta": 1.0} if sampler_cls is DDIMSampler else {}

    def draw(seed: int) -> torch.Tensor:
        sampler = sampler_cls(diffusion, **kwargs)
        return run_sampler(_toy_model, sampler, noise, 10, torch.Generator().manual_seed(seed))

    a, b, c = draw(1), draw(1), draw(2)
    assert a.shape == noise.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    sampler = sampler_cls(diffusion, **kwargs)
    sampler.set_timesteps(10)
    assert sampler.timesteps.tolist()[0] == 999 and len(sampler.timesteps) == 10
    out = sampler.step(
        _toy_model(noise, torch.full((3,), 999.0)), 999, noise, torch.Generator().manual_seed(0)
    )
    assert out.prev_sample.shape == noise.shape and out.pred_original_sample.shape == noise.shape
    assert out.pred_original_sample.abs().max() <= 1.0  # clipped x0 prediction
    # Deterministic DDIM ignores the generator entirely.
    ddim = [
        run_sampler(_toy_model, DDIMSampler(diffusion), noise, 10, torch.Generator().manual_seed(s))
        for s in (1, 2)
    ]
    assert torch.equal(ddim[0], ddim[1])


@pytest.mark.parametrize("prediction", ["v", "eps", "edm"])
@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
@pytest.mark.parametrize("sampler_name", ["ddim", "ddpm", "dpmpp"])
def test_samplers_recover_x0_from_an_oracle_model(prediction: str, schedule: str, sampler_name: str) -> None:
    diffusion = GaussianDiffusion.create(schedule, prediction)
    generator = torch.Generator().manual_seed(4)
    x0 = torch.rand(4, 3, 8, 8, generator=generator) * 1.8 - 0.9
    abar = diffusion.schedule.alphas_cumprod.double()

    def oracle(x_in: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t.long()].view(-1, 1, 1, 1)
        # edm: the network sees c_in x_t / sqrt(abar) = x_t / sqrt(sigma^2 + 0.25) / sqrt(abar) (EDM's form)
        sigma = ((1 - a) / a).sqrt()
        scale = (sigma.square() + 0.25).sqrt() * a.sqrt() if prediction == "edm" else 1.0
        x_t = x_in.double() * scale
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        if prediction == "edm":  # F = (x0 - c_skip x~) / c_out with x~ = x_t / sqrt(abar)
            c_skip, c_out = 0.25 / (sigma.square() + 0.25), sigma * 0.5 / (sigma.square() + 0.25).sqrt()
            return ((x0 - c_skip * x_t / a.sqrt()) / c_out).float()
        return (eps if prediction == "eps" else a.sqrt() * eps - (1 - a).sqrt() * x0).float()

    noise = torch.randn(x0.shape, generator=generator)
    sampler = make_sampler(sampler_name, diffusion)
    result = run_sampler(oracle, sampler, noise, 20, generator)
    assert torch.allclose(result, x0, atol=1e-4)


def _gaussian_oracle(diffusion: GaussianDiffusion, mu: torch.Tensor, s: float):
    """The exact eps-prediction for data x0 ~ N(mu, s^2 I): E[x0 | x_t] is linear in x_t."""
    abar = diffusion.schedule.alphas_cumprod

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t.long()].view(-1, 1, 1, 1).to(torch.float64)
        x = x_t.to(torch.float64)
        x0 = mu + a.sqrt() * s**2 / (a * s**2 + 1 - a) * (x - a.sqrt() * mu)
        return ((x - a.sqrt() * x0) / (1 - a).sqrt()).float()

    return model


def _exact_ode_endpoint(diffusion: GaussianDiffusion, noise: torch.Tensor, mu: torch.Tensor, s: float):
    """For Gaussian data the probability-flow ODE keeps (x_t - a_t mu) / std_t constant, so its exact
    solution from x_T (t = T-1) is mu + s * (x_T - a_T mu) / sqrt(a_T^2 s^2 + sigma_T^2)."""
    a = float(diffusion.schedule.alphas_cumprod[-1])
    x = noise.to(torch.float64)
    return mu + s * (x - a**0.5 * mu) / (a * s**2 + 1 - a) ** 0.5


@pytest.mark.parametrize("schedule", SCHEDULE_NAMES)
def test_dpmpp_solves_the_gaussian_ode_closer_than_ddim_at_the_same_steps(schedule: str) -> None:
    diffusion = GaussianDiffusion.create(schedule, "eps")
    generator = torch.Generator().manual_seed(3)
    mu = (torch.rand(1, 3, 6, 6, generator=generator, dtype=torch.float64) - 0.5) * 0.6
    s = 0.35
    noise = torch.randn(8, 3, 6, 6, generator=generator)
    model = _gaussian_oracle(diffusion, mu, s)
    exact = _exact_ode_endpoint(diffusion, noise, mu, s)

    def error(name: str, steps: int) -> float:
        sampler = make_sampler(name, diffusion, clip_sample=False)
        result = run_sampler(model, sampler, noise, steps)
        return float((result.double() - exact).abs().max())

    # Measured (max abs error, linear / cosine): 20 steps DPM++ 0.139 / 0.023 vs DDIM 0.249 / 0.133;
    # 50 steps 0.011 / 0.0012 vs 0.105 / 0.055: second order against first order.
    assert error("dpmpp", 20) < 0.6 * error("ddim", 20)
    assert error("dpmpp", 50) < 0.2 * error("ddim", 50)
    assert error("dpmpp", 200) < 1e-3 and error("ddim", 200) < 3e-2  # both converge to the exact ODE


def test_dpmpp_restarts_cleanly_and_is_deterministic() -> None:
    diffusion = GaussianDiffusion.create("cosine", "v")
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    sampler = make_sampler("dpmpp", diffusion)
    first = run_sampler(_toy_model, sampler, noise, 12)
    second = run_sampler(_toy_model, sampler, noise, 12)  # the same object reused: no stale history
    fresh = run_sampler(_toy_model, make_sampler("dpmpp", diffusion), noise, 12)
    assert torch.equal(first, second) and torch.equal(first, fresh)
    # Each image is denoised on its own: a batch gives the same images as its halves.
    halves = torch.cat(
        [run_sampler(_toy_model, make_sampler("dpmpp", diffusion), n, 12) for n in noise.split(1)]
    )
    assert torch.allclose(halves, first, atol=1e-6)


def _drive(sampler: DPMSolverPlusPlus, noise: torch.Tensor, start: int = 0) -> torch.Tensor:
    """The diffusers-style loop written out (no run_sampler): ``step`` from ``timesteps[start]`` on."""
    x = noise
    for t in sampler.timesteps.tolist()[start:]:
        x = sampler.step(_toy_model(x, torch.full((x.shape[0],), float(t))), t, x).prev_sample
    return x


def test_dpmpp_step_forgets_the_previous_trajectory_at_the_first_timestep() -> None:
    """Bug caught: DPM-Solver++ ``step`` keeps the last trajectory's x0 history when a new loop starts
    (run_sampler calls set_timesteps, which also clears it, so the runner-level test cannot see this).

    Driven through set_timesteps + step directly, every loop must equal a fresh sampler's: a second
    set_timesteps loop, a second pass over the same timesteps without set_timesteps, and a loop that
    starts part-way (as an image-to-image run does) right after set_timesteps."""
    diffusion = GaussianDiffusion.create("cosine", "v")
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    other = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))

    def fresh(x: torch.Tensor, start: int = 0) -> torch.Tensor:
        sampler = DPMSolverPlusPlus(diffusion)
        sampler.set_timesteps(12)
        return _drive(sampler, x, start)

    sampler = DPMSolverPlusPlus(diffusion)
    sampler.set_timesteps(12)
    assert torch.equal(_drive(sampler, noise), fresh(noise))
    sampler.set_timesteps(12)  # a new set_timesteps loop on another starting point
    assert torch.equal(_drive(sampler, other), fresh(other))
    assert torch.equal(_drive(sampler, noise), fresh(noise))  # again, without set_timesteps
    _drive(sampler, other)
    sampler.set_timesteps(12)
    assert torch.equal(_drive(sampler, noise, start=4), fresh(noise, start=4))
    # the history matters at all: a second-order step differs from a first-order one
    assert not torch.equal(fresh(noise), _first_order_only(diffusion, noise))


def _first_order_only(diffusion: GaussianDiffusion, noise: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++ with its history cleared before every step: first order throughout (DDIM-like)."""
    sampler = DPMSolverPlusPlus(diffusion)
    sampler.set_timesteps(12)
    x = noise
    for t in sampler.timesteps.tolist():
        sampler._previous = None
        x = sampler.step(_toy_model(x, torch.full((x.shape[0],), float(t))), t, x).prev_sample
    return x


def test_ddim_with_eta_one_is_the_ddpm_posterior_step() -> None:
    """DDIM at eta = 1 has the DDPM posterior mean and variance; with the same noise they agree."""
    diffusion = GaussianDiffusion.create("linear", "eps")
    generator = torch.Generator().manual_seed(7)
    sample = torch.randn(2, 3, 4, 4, generator=generator)
    output = 0.3 * torch.randn(sample.shape, generator=generator)
    ddpm, ddim = DDPMSampler(diffusion), DDIMSampler(diffusion, eta=1.0)
    for sampler in (ddpm, ddim):
        sampler.set_timesteps(25)
    for t in (999, 519, 39):
        a = ddpm.step(output, t, sample, torch.Generator().manual_seed(11)).prev_sample
        b = ddim.step(output, t, sample, torch.Generator().manual_seed(11)).prev_sample
        assert torch.allclose(a, b, atol=1e-5), t


def _nearest_log_sigma_step(
    schedule_abar: torch.Tensor, log_sigma: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent float64 reference: the timestep whose ln sigma_t is nearest, and the margin to the
    runner-up (a near-tie may round either way in float32)."""
    table = (0.5 * ((1.0 - schedule_abar) / schedule_abar).log()).double()
    distance = (table[None, :] - log_sigma.double()[:, None]).abs()
    best = distance.argmin(dim=1)
    two = distance.topk(2, dim=1, largest=False).values
    return best, two[:, 1] - two[:, 0]


def test_lognormal_timesteps_are_edm_noise_levels_rounded_to_the_nearest_step() -> None:
    diffusion = GaussianDiffusion.create("cosine", "v", 1000, 5.0, "lognormal")
    draws = diffusion.draw_timesteps(20_000, torch.Generator().manual_seed(3), torch.device("cpu"))
    # The same standard-normal draws, scaled as in EDM (Karras et al. 2022, Table 1).
    z = torch.randn(20_000, generator=torch.Generator().manual_seed(3))
    expected, margin = _nearest_log_sigma_step(diffusion.schedule.alphas_cumprod, -1.2 + 1.2 * z)
    differ = draws != expected
    assert int(differ.sum()) <= 2 and bool((margin[differ] < 1e-4).all())
    # Both ends of the schedule receive the draws beyond them; the median is EDM's exp(-1.2) level.
    assert int(draws.min()) == 0 and draws.max() < 1000
    log_sigma = 0.5 * ((1.0 - diffusion.schedule.alphas_cumprod) / diffusion.schedule.alphas_cumprod).log()
    assert abs(float(log_sigma[draws.median()]) - (-1.2)) < 0.05


def test_uniform_timesteps_are_unchanged_and_an_unknown_sampling_is_a_user_error() -> None:
    diffusion = GaussianDiffusion.create("cosine", "v", 1000)
    assert diffusion.timestep_sampling == "uniform"
    draws = diffusion.draw_timesteps(64, torch.Generator().manual_seed(1), torch.device("cpu"))
    assert torch.equal(draws, torch.randint(0, 1000, (64,), generator=torch.Generator().manual_seed(1)))
    with pytest.raises(DiffkitError, match="unknown timestep sampling 'logit'"):
        GaussianDiffusion.create("cosine", "v", 1000, 5.0, "logit")


def test_edm_preconditioning_matches_karras_table_1_and_is_v_at_sigma_data_one() -> None:
    """prediction="edm" against EDM's own sigma-form formulas in float64 (Karras et al. 2022, Table 1):
    x~ = x_t / sqrt(abar), sigma = sqrt((1 - abar) / abar); the network sees c_in x~, D = c_skip x~ + c_out F,
    the target is (x0 - c_skip x~) / c_out, and the unweighted loss is EDM's lambda(sigma) c_out^2 = 1. The
    loss feeds the network c_in x~. At sigma_data = 1 it is v-prediction with F = -v."""
    diffusion = GaussianDiffusion.create("cosine", "edm", min_snr_gamma=None)
    assert diffusion.sigma_data == 0.5
    generator = torch.Generator().manual_seed(11)
    t = torch.tensor([0, 1, 10, 250, 500, 750, 990, 999])
    x0 = torch.rand(8, 3, 4, 4, generator=generator) * 2 - 1
    eps = torch.randn(x0.shape, generator=generator)
    out = torch.randn(x0.shape, generator=generator)
    abar = diffusion.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)  # float64
    sigma, sd = ((1 - abar) / abar).sqrt(), 0.5
    x_tilde = x0.double() + sigma * eps.double()
    x_t = diffusion.q_sample(x0, t, eps)
    c_in = 1 / (sigma.square() + sd**2).sqrt()
    c_skip = sd**2 / (sigma.square() + sd**2)
    c_out = sigma * sd / (sigma.square() + sd**2).sqrt()
    assert torch.allclose(diffusion.model_input(x_t, t).double(), c_in * x_tilde, rtol=1e-4, atol=1e-5)
    assert torch.allclose(
        diffusion.split_prediction(out, x_t, t)[0].double(),
        c_skip * x_tilde + c_out * out.double(),
        atol=1e-4,
    )
    target = diffusion.target(x0, eps, t).double()
    assert torch.allclose(target[1:], ((x0.double() - c_skip * x_tilde) / c_out)[1:], rtol=1e-3, atol=1e-3)
    assert torch.equal(diffusion.loss_weight(t), torch.ones(8))
    seen: list[torch.Tensor] = []

    def spy(x_in: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        seen.append(x_in)
        return torch.zeros_like(x_in)

    diffusion.loss(spy, x0, inputs=(t, eps))
    assert torch.allclose(seen[0].double(), c_in * x_tilde, rtol=1e-4, atol=1e-5)
    # sigma_data = 1: the input is x_t itself and F = -v gives v-prediction's x0 and eps
    unit = GaussianDiffusion.create("cosine", "edm", sigma_data=1.0)
    v = GaussianDiffusion.create("cosine", "v")
    assert torch.allclose(unit.model_input(x_t, t), x_t, atol=1e-6)
    pairs = zip(unit.split_prediction(-out, x_t, t), v.split_prediction(out, x_t, t), strict=True)
    for mine, theirs in pairs:
        assert torch.allclose(mine[1:], theirs[1:], atol=1e-4)
    assert torch.allclose(unit.target(x0, eps, t)[1:], -v.target(x0, eps, t)[1:], atol=1e-4)
