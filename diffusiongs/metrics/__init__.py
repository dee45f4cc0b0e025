"""Evaluation metrics and the perceptual loss: PSNR/SSIM, LPIPS-VGG, Chamfer distance and F-score."""

import importlib
from typing import TYPE_CHECKING

from diffusiongs.metrics.geometry import (
    FScore,
    chamfer_distance,
    f_score,
    nearest_neighbor_distances,
    sample_surface_points,
)
from diffusiongs.metrics.image import psnr, ssim
from diffusiongs.metrics.weights import UnsafePickleError, WeightsNotFoundError, find_lpips_weights

if TYPE_CHECKING:
    from diffusiongs.metrics.lpips import LPIPS, LPIPSConfig, export_lpips_safetensors, load_lpips

# Loaded on first use: importing diffusiongs.metrics.lpips here would make `python -m diffusiongs.metrics.lpips`
# execute that module a second time (runpy warns about it).
_FROM_LPIPS = ("LPIPS", "LPIPSConfig", "export_lpips_safetensors", "load_lpips")


def __getattr__(name: str):
    if name in _FROM_LPIPS:
        return getattr(importlib.import_module("diffusiongs.metrics.lpips"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FScore",
    "LPIPS",
    "LPIPSConfig",
    "UnsafePickleError",
    "WeightsNotFoundError",
    "chamfer_distance",
    "export_lpips_safetensors",
    "f_score",
    "find_lpips_weights",
    "load_lpips",
    "nearest_neighbor_distances",
    "psnr",
    "sample_surface_points",
    "ssim",
]
