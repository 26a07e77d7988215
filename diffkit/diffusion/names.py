"""The names of the diffusion choices (schedules, prediction targets, samplers), without torch.

The CLI lists them in ``--help`` and the configs validate against them; keeping them apart from the
maths lets ``diffkit --help`` start without importing torch. The maths modules import them from here.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "TIMESTEP_SAMPLINGS",
    "PredictionName",
    "SamplerName",
    "ScheduleName",
    "TimestepSamplingName",
]


class ScheduleName(str, Enum):
    """``--schedule`` choices (Typer lists them; configs also accept the plain strings)."""

    cosine = "cosine"
    linear = "linear"


class PredictionName(str, Enum):
    """``--prediction`` choices: the network predicts the noise (eps), the velocity (v), or EDM's
    preconditioned output (edm: c_skip/c_out/c_in with sigma_data 0.5; v is the same at sigma_data 1)."""

    v = "v"
    eps = "eps"
    edm = "edm"


class SamplerName(str, Enum):
    """``--sampler`` choices (Typer lists them; configs also accept the plain strings)."""

    ddim = "ddim"
    ddpm = "ddpm"
    dpmpp = "dpmpp"


class TimestepSamplingName(str, Enum):
    """``--timestep-sampling`` choices: how training draws each image's timestep.

    ``uniform`` over 0..T-1 (Ho et al. 2020); ``lognormal``: the EDM noise-level distribution
    (Karras et al. 2022, Table 1: ln sigma ~ N(-1.2, 1.2^2)) mapped to the nearest timestep.
    """

    uniform = "uniform"
    lognormal = "lognormal"


SCHEDULES = tuple(name.value for name in ScheduleName)
PREDICTIONS = tuple(name.value for name in PredictionName)
SAMPLERS = tuple(name.value for name in SamplerName)
TIMESTEP_SAMPLINGS = tuple(name.value for name in TimestepSamplingName)
