"""Noise schedules (beta_t and alpha-bar_t), computed in float64.

The products of ``1 - beta`` over a thousand steps lose digits in float32 (alpha-bar near the end of the
cosine schedule is ~1e-9), so everything here is float64; callers gather per-timestep values and cast
them to the sample's dtype only at the point of use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffkit.diffusion.names import SCHEDULES, ScheduleName  # noqa: F401  (re-exported)
from diffkit.errors import DiffkitError

# Improved DDPM (Nichol & Dhariwal 2021): betas are clipped so the last step is not a pure-noise step
# with beta = 1, which would make the reverse process divide by zero.
COSINE_OFFSET = 0.008
COSINE_MAX_BETA = 0.999


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete variance-preserving schedule with ``num_timesteps`` steps ``t = 0 .. T-1``."""

    name: str
    betas: torch.Tensor  # float64 [T]

    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha-bar_t = prod_{s<=t} (1 - beta_s): the signal fraction of x_t."""
        return torch.cumprod(self.alphas, dim=0)

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha-bar / (1 - alpha-bar), decreasing in t."""
        abar = self.alphas_cumprod
        return abar / (1.0 - abar)


def linear_betas(num_timesteps: int) -> torch.Tensor:
    """DDPM's linear betas 1e-4 .. 0.02 for T = 1000, rescaled by 1000/T so other T keep the same shape."""
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=torch.float64)


def cosine_betas(num_timesteps: int, offset: float = COSINE_OFFSET) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule: alpha-bar(t) = cos^2((t/T + s) / (1 + s) * pi/2), normalised."""
    steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = torch.cos((steps + offset) / (1.0 + offset) * math.pi / 2.0) ** 2
    abar = f / f[0]
    betas = 1.0 - abar[1:] / abar[:-1]
    return betas.clamp(min=0.0, max=COSINE_MAX_BETA)


def make_schedule(name: str, num_timesteps: int = 1000) -> NoiseSchedule:
    if num_timesteps < 2:
        raise DiffkitError(f"the number of diffusion timesteps must be at least 2, got {num_timesteps}")
    if name == "linear":
        return NoiseSchedule(name, linear_betas(num_timesteps))
    if name == "cosine":
        return NoiseSchedule(name, cosine_betas(num_timesteps))
    raise DiffkitError(f"unknown noise schedule {name!r}; use one of: {', '.join(SCHEDULES)}")
