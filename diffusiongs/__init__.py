"""DiffusionGS: single-stage image-to-3D generation with Gaussian splatting baked into the diffusion denoiser."""

__version__ = "0.1.0"
