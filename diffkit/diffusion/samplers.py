"""Reverse-process samplers behind one diffusers-shaped interface.

    sampler.set_timesteps(50)
    for t in sampler.timesteps:
        out = model(x, t)
        x = sampler.step(out, t, x, generator).prev_sample

Both samplers work on any decreasing subset of the training timesteps ("trailing" spacing, so the first
step starts at t = T-1 where the sample really is pure noise; Lin et al. 2023 show "leading" spacing
starts from a partly-clean timestep and shifts the image statistics). ``DDPMSampler`` is ancestral
sampling with the posterior q(x_{t'} | x_t, x_0) between consecutive chosen steps; ``DDIMSampler`` is
Song et al.'s DDIM, deterministic at eta = 0 and equal in distribution to DDPM at eta = 1.
``DPMSolverPlusPlus`` is Lu et al. 2022's DPM-Solver++(2M): a second-order multistep solver of the
probability-flow ODE in data (x0) prediction, good images in 10-25 steps.

Noise is drawn from the generator's own device and then moved, so a CPU generator gives the same images
on every device up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from diffkit.diffusion.gaussian import GaussianDiffusion
from diffkit.diffusion.names import SAMPLERS, SamplerName  # noqa: F401  (re-exported)
from diffkit.errors import DiffkitError


@dataclass(frozen=True)
class SamplerOutput:
    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


def trailing_timesteps(num_train_timesteps: int, num_steps: int) -> torch.Tensor:
    if not 1 <= num_steps <= num_train_timesteps:
        raise DiffkitError(f"sampling steps must be between 1 and {num_train_timesteps}, got {num_steps}")
    ratio = num_train_timesteps / num_steps
    steps = torch.round(torch.arange(num_train_timesteps, 0, -ratio, dtype=torch.float64)).long() - 1
    return steps[:num_steps]


class _Sampler:
    def __init__(self, diffusion: GaussianDiffusion, clip_sample: bool = True) -> None:
        self.diffusion = diffusion
        self.clip_sample = clip_sample
        self.abar = diffusion.schedule.alphas_cumprod  # float64
        self.timesteps = torch.empty(0, dtype=torch.long)
        self._prev: dict[int, int] = {}

    def set_timesteps(self, num_steps: int) -> None:
        self.timesteps = trailing_timesteps(self.diffusion.num_timesteps, num_steps)
        nexts = [*self.timesteps.tolist()[1:], -1]
        self._prev = dict(zip(self.timesteps.tolist(), nexts, strict=True))

    def _abar(self, t: int) -> float:
        # abar at "t = -1" is 1: the last step lands on the clean image.
        return 1.0 if t < 0 else float(self.abar[t])

    def _predict(
        self, model_output: torch.Tensor, t: int, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        if not self._prev:
            raise RuntimeError("call set_timesteps(n) before step()")
        t = int(t)
        if t not in self._prev:
            raise ValueError(f"timestep {t} is not one of this sampler's timesteps")
        t_batch = torch.full((sample.shape[0],), t, dtype=torch.long, device=sample.device)
        x0, eps = self.diffusion.split_prediction(model_output, sample.float(), t_batch)
        if self.clip_sample:
            # Re-derive eps from the clipped x0 so the update stays consistent (lucidrains PR #84).
            x0 = x0.clamp(-1.0, 1.0)
            a = self._abar(t)
            eps = (sample.float() - a**0.5 * x0) / (1.0 - a) ** 0.5
        return x0, eps, self._prev[t]

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SamplerOutput:
        """One reverse step from timestep ``t`` to the next chosen one (the clean image after the last)."""
        x0, eps, t_prev = self._predict(model_output, t, sample)
        prev = self._update(x0, eps, sample.float(), self._abar(int(t)), t_prev, generator)
        return SamplerOutput(prev, x0)

    def _update(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        sample: torch.Tensor,
        a_t: float,
        t_prev: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        raise NotImplementedError

    @staticmethod
    def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else like.device
        return torch.randn(like.shape, generator=generator, device=device, dtype=torch.float32).to(
            like.device
        )


class DDPMSampler(_Sampler):
    """Ancestral sampling: x_{t'} ~ q(x_{t'} | x_t, x0_hat), with the posterior variance beta-tilde."""

    def _update(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        sample: torch.Tensor,
        a_t: float,
        t_prev: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        a_prev = self._abar(t_prev)
        alpha = a_t / a_prev  # product of (1 - beta) over the skipped steps
        beta = 1.0 - alpha
        coef_x0 = a_prev**0.5 * beta / (1.0 - a_t)
        coef_xt = alpha**0.5 * (1.0 - a_prev) / (1.0 - a_t)
        mean = coef_x0 * x0 + coef_xt * sample
        if t_prev < 0:
            return mean
        variance = beta * (1.0 - a_prev) / (1.0 - a_t)
        return mean + variance**0.5 * self._noise(sample, generator)


class DDIMSampler(_Sampler):
    """DDIM: x_{t'} = sqrt(abar') x0_hat + sqrt(1 - abar' - sigma^2) eps_hat + sigma z."""

    def __init__(self, diffusion: GaussianDiffusion, eta: float = 0.0, clip_sample: bool = True) -> None:
        super().__init__(diffusion, clip_sample)
        if eta < 0:
            raise DiffkitError(f"DDIM eta must be >= 0, got {eta}")
        self.eta = eta

    def _update(
        self,
        x0: torch.Tensor,
        eps: torch.Tensor,
        sample: torch.Tensor,
        a_t: float,
        t_prev: int,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        a_prev = self._abar(t_prev)
        sigma = self.eta * ((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev)) ** 0.5
        direction = max(1.0 - a_prev - sigma**2, 0.0) ** 0.5
        prev = a_prev**0.5 * x0 + direction * eps
        if sigma > 0 and t_prev >= 0:
            prev = prev + sigma * self._noise(sample, generator)
        return prev


class DPMSolverPlusPlus(_Sampler):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), deterministic.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma) and h = lambda_t -
    lambda_s, the first-order step (eq. 8, which is DDIM) is
        x_t = (sigma_t / sigma_s) x_s - alpha_t (exp(-h) - 1) x0_s
    and the multistep second-order step replaces x0_s by D = x0_s + (x0_s - x0_prev) / (2 r),
    r = h_prev / h, which reuses the previous model call (one network evaluation per step).
    The first step has no previous x0, so it is first order; the last step lands on the clean image
    (sigma = 0, lambda = inf), where the second-order term is undefined, so it is first order too
    (diffusers' ``lower_order_final``), and it returns x0 exactly.
    """

    def set_timesteps(self, num_steps: int) -> None:
        super().set_timesteps(num_steps)
        self._previous: tuple[torch.Tensor, float] | None = None  # (x0, lambda) of the previous step

    def _lambda(self, t: int) -> float:
        a = self._abar(t)
        return 0.5 * math.log(a) - 0.5 * math.log1p(-a)

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> SamplerOutput:
        x0, _, t_prev = self._predict(model_output, t, sample)
        t = int(t)
        if t == int(self.timesteps[0]):
            self._previous = None  # a new trajectory: no history
        previous, self._previous = self._previous, (x0, self._lambda(t))
        if t_prev < 0:
            return SamplerOutput(x0, x0)  # sigma_0 = 0: the ODE ends on the predicted clean image
        a_s, a_t = self._abar(t), self._abar(t_prev)
        lambda_s, lambda_t = self._lambda(t), self._lambda(t_prev)
        h = lambda_t - lambda_s
        data = x0
        if previous is not None:
            r = (lambda_s - previous[1]) / h
            data = x0 + (x0 - previous[0]) / (2.0 * r)
        ratio = ((1.0 - a_t) / (1.0 - a_s)) ** 0.5
        prev = ratio * sample.float() - a_t**0.5 * math.expm1(-h) * data
        return SamplerOutput(prev, x0)


Sampler = DDPMSampler | DDIMSampler | DPMSolverPlusPlus


def make_sampler(
    name: str, diffusion: GaussianDiffusion, eta: float = 0.0, clip_sample: bool = True
) -> Sampler:
    if name == "dpmpp":
        return DPMSolverPlusPlus(diffusion, clip_sample=clip_sample)
    if name == "ddim":
        return DDIMSampler(diffusion, eta=eta, clip_sample=clip_sample)
    if name == "ddpm":
        return DDPMSampler(diffusion, clip_sample=clip_sample)
    raise DiffkitError(f"unknown sampler {name!r}; use one of: {', '.join(SAMPLERS)}")


@torch.no_grad()
def run_sampler(
    model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sampler: Sampler,
    noise: torch.Tensor,
    num_steps: int,
    generator: torch.Generator | None = None,
    on_step: Callable[[int], None] | None = None,
    on_output: Callable[[int, torch.Tensor, SamplerOutput], None] | None = None,
) -> torch.Tensor:
    """Denoise ``noise`` (NCHW, unit Gaussian) in ``num_steps`` model calls; returns x_0 in about [-1, 1].

    ``on_output(t, x_t, output)`` sees every step's input and output (for denoising animations).
    """
    sampler.set_timesteps(num_steps)
    x = noise.float()
    for index, t in enumerate(sampler.timesteps.tolist()):
        t_batch = torch.full((x.shape[0],), float(t), device=x.device)
        x_in = sampler.diffusion.model_input(x, t_batch)  # x itself, except for EDM preconditioning
        output = sampler.step(model(x_in, t_batch), t, x, generator)
        if on_output is not None:
            on_output(t, x, output)
        x = output.prev_sample
        if on_step is not None:
            on_step(index + 1)
    return x
