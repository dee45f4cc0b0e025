"""The diffusion process: noise schedule, forward noising and reverse-process samplers. Knows no network."""

from diffusiongs.diffusion.samplers import (
    SAMPLERS,
    ProgressCallback,
    Sampler,
    SamplerConfig,
    make_sampler,
    respaced_timesteps,
    run_reverse_process,
)
from diffusiongs.diffusion.schedule import NoiseSchedule, NoiseScheduleConfig

__all__ = ["SAMPLERS", "NoiseSchedule", "NoiseScheduleConfig", "ProgressCallback", "Sampler", "SamplerConfig",
           "make_sampler", "respaced_timesteps", "run_reverse_process"]
