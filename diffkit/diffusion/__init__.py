"""Diffusion maths: noise schedules, the Gaussian forward process and loss, reverse-process samplers."""

from diffkit.lazy import attach

__getattr__, __dir__, __all__ = attach(
    __name__,
    {
        "PREDICTIONS": "names",
        "GaussianDiffusion": "gaussian",
        "PredictionName": "names",
        "min_snr_weight": "gaussian",
        "guide": "guidance",
        "guided_model": "guidance",
        "SAMPLERS": "names",
        "DDIMSampler": "samplers",
        "DDPMSampler": "samplers",
        "DPMSolverPlusPlus": "samplers",
        "Sampler": "samplers",
        "SamplerName": "names",
        "SamplerOutput": "samplers",
        "make_sampler": "samplers",
        "run_sampler": "samplers",
        "trailing_timesteps": "samplers",
        "SCHEDULES": "names",
        "NoiseSchedule": "schedules",
        "ScheduleName": "names",
        "make_schedule": "schedules",
        "TIMESTEP_SAMPLINGS": "names",
        "TimestepSamplingName": "names",
    },
)
