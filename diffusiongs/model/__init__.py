"""The denoiser network (DiT with adaLN and two Gaussian decoders). Knows no schedules, Gaussians or renderers."""

from diffusiongs.model.denoiser import Denoiser, DenoiserConfig, DenoiserOutput

__all__ = ["Denoiser", "DenoiserConfig", "DenoiserOutput"]
