"""Differentiable Gaussian rasterization: :func:`render` (Gaussians + cameras -> RGB, alpha, expected depth).

Backends (``RenderConfig.backend``): ``gsplat`` on CUDA, ``cpu`` (numba kernels) and ``torch`` (pure PyTorch, any
device), all with gsplat's classic-mode rules (:mod:`diffusiongs.render.config`). ``RenderConfig.deferred`` turns on
deferred backpropagation (reference §1.5).
"""

from diffusiongs.render.config import RenderConfig, RenderOutput
from diffusiongs.render.renderer import render

__all__ = ["RenderConfig", "RenderOutput", "render"]
