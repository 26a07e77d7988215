"""The names of the diffusion choices (schedules, prediction targets, samplers), without torch.

The CLI lists them in ``--help`` and the configs validate against them; keeping them apart from the
maths lets ``diffkit --help`` start without importing torch. The maths modules import them from here.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["PREDICTIONS", "SAMPLERS", "SCHEDULES", "PredictionName", "SamplerName", "ScheduleName"]


class ScheduleName(str, Enum):
    """``--schedule`` choices (Typer lists them; configs also accept the plain strings)."""

    cosine = "cosine"
    linear = "linear"


class PredictionName(str, Enum):
    """``--prediction`` choices: the network predicts the noise (eps) or the velocity (v)."""

    v = "v"
    eps = "eps"


class SamplerName(str, Enum):
    """``--sampler`` choices (Typer lists them; configs also accept the plain strings)."""

    ddim = "ddim"
    ddpm = "ddpm"
    dpmpp = "dpmpp"


SCHEDULES = tuple(name.value for name in ScheduleName)
PREDICTIONS = tuple(name.value for name in PredictionName)
SAMPLERS = tuple(name.value for name in SamplerName)
