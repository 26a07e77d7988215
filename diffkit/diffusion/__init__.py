"""Diffusion maths: noise schedules, the Gaussian forward process and loss, reverse-process samplers."""

from diffkit.diffusion.gaussian import PREDICTIONS, GaussianDiffusion, PredictionName, min_snr_weight
from diffkit.diffusion.guidance import guide, guided_model
from diffkit.diffusion.samplers import (
    SAMPLERS,
    DDIMSampler,
    DDPMSampler,
    DPMSolverPlusPlus,
    Sampler,
    SamplerName,
    SamplerOutput,
    make_sampler,
    run_sampler,
    trailing_timesteps,
)
from diffkit.diffusion.schedules import SCHEDULES, NoiseSchedule, ScheduleName, make_schedule

__all__ = [
    "PREDICTIONS",
    "SAMPLERS",
    "SCHEDULES",
    "DDIMSampler",
    "DDPMSampler",
    "DPMSolverPlusPlus",
    "GaussianDiffusion",
    "NoiseSchedule",
    "PredictionName",
    "Sampler",
    "SamplerName",
    "SamplerOutput",
    "ScheduleName",
    "guide",
    "guided_model",
    "make_sampler",
    "make_schedule",
    "min_snr_weight",
    "run_sampler",
    "trailing_timesteps",
]
