"""Gaussians: the container, the raw 14-channel layout, the decoder from raw maps, and PLY I/O."""

from diffusiongs.gaussians.container import SH_C0, Gaussians, quaternion_product
from diffusiongs.gaussians.decode import (
    DECODE_PRESETS,
    GaussianDecodeConfig,
    decode_free_gaussians,
    decode_pixel_gaussians,
)
from diffusiongs.gaussians.layout import GAUSSIAN_CHANNELS, GAUSSIAN_LAYOUT
from diffusiongs.gaussians.ply import Y_UP_ROTATION, PlyFormatError, UpAxis, load_ply, save_ply

__all__ = [
    "DECODE_PRESETS", "GAUSSIAN_CHANNELS", "GAUSSIAN_LAYOUT", "SH_C0", "Y_UP_ROTATION", "GaussianDecodeConfig",
    "Gaussians", "PlyFormatError", "UpAxis", "decode_free_gaussians", "decode_pixel_gaussians", "load_ply",
    "quaternion_product", "save_ply",
]
