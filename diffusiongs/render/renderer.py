"""The one rendering entry point: Gaussians + cameras -> RGB, alpha and expected depth, differentiable."""

from __future__ import annotations

import functools
import importlib.util
import warnings
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras
from diffusiongs.render.config import RenderConfig, RenderOutput
from diffusiongs.render.deferred import render_deferred
from diffusiongs.render.projection import bin_tiles, project

ResolvedBackend = Literal["gsplat", "cpu", "torch"]

_DEPTH_ALPHA_FLOOR = 1e-10
"""Expected depth divides by max(alpha, this) (gsplat's "ED"), which makes it 0 where nothing was drawn."""


@functools.cache
def _warn_fallback(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def resolve_backend(backend: str, device: torch.device) -> ResolvedBackend:
    """The backend that renders tensors on ``device`` (``auto``: gsplat on CUDA, the numba kernels on CPU; the
    pure-torch backend where those are not installed)."""
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"render backend 'cpu' needs CPU tensors, got {device}; use 'torch' or 'gsplat'")
    if backend == "gsplat" and device.type != "cuda":
        raise ValueError(f"render backend 'gsplat' needs CUDA tensors, got {device}; use 'cpu' or 'torch'")
    if backend in ("gsplat", "cpu", "torch"):
        return backend
    if backend != "auto":
        raise ValueError(f"unknown render backend {backend!r}: expected auto, gsplat, cpu or torch")
    if device.type == "cuda":
        preferred, module = "gsplat", "gsplat"
    elif device.type == "cpu":
        preferred, module = "cpu", "numba"
    else:
        return "torch"
    if importlib.util.find_spec(module) is None:
        _warn_fallback(f"render: {module} is not installed, using the slower pure-torch rasterizer")
        return "torch"
    return preferred


def _composite(gaussians: Gaussians, cameras: Cameras, background: Float[Tensor, "b v 3"], cfg: RenderConfig,
               backend: Literal["cpu", "torch"]) -> tuple[Tensor, Tensor]:
    """RGB + depth (channels last) and alpha, ``[b, v, h, w, c]``, from our projection and compositing."""
    num_batch, num_views = cameras.batch_shape
    num_images, height, width = num_batch * num_views, cameras.height, cameras.width
    splats = project(gaussians, cameras, cfg)
    bins = bin_tiles(splats, num_images, width, height, cfg.tile_size)
    if backend == "cpu":
        try:
            from diffusiongs.render.composite_cpu import composite_cpu as composite
        except ImportError as exc:
            raise ImportError("the 'cpu' render backend needs numba: pip install numba (or use backend='torch')") \
                from exc
    else:
        from diffusiongs.render.composite_torch import composite_torch as composite
    feat, trans = composite(splats, bins, num_images, height, width)
    alpha = 1.0 - trans[..., None]
    rgb = feat[..., :3] + trans[..., None] * background.reshape(num_images, 1, 1, 3)
    depth = feat[..., 3:] / alpha.clamp(min=_DEPTH_ALPHA_FLOOR)
    shape = (num_batch, num_views, height, width)
    return torch.cat([rgb, depth], -1).reshape(*shape, 4), alpha.reshape(*shape, 1)


def _render_views(gaussians: Gaussians, cameras: Cameras, background: Float[Tensor, "b v 3"], cfg: RenderConfig,
                  backend: ResolvedBackend) -> tuple[Tensor, Tensor, Tensor]:
    """(rgb, alpha, depth), each ``[b, v, c, h, w]``, for Gaussians ``[b, N]`` and cameras ``[b, v]``."""
    # The model may run under bf16 autocast; rasterization runs in float32 (reference §1.5), also when deferred
    # rendering re-renders a view inside backward.
    with torch.autocast(device_type=gaussians.device.type, enabled=False):
        if backend == "gsplat":
            from diffusiongs.render.gsplat_backend import render_gsplat
            colors, alpha = render_gsplat(gaussians, cameras, background, cfg)
        else:
            colors, alpha = _composite(gaussians, cameras, background, cfg, backend)
    colors, alpha = colors.movedim(-1, -3), alpha.movedim(-1, -3)
    return colors[:, :, :3], alpha, colors[:, :, 3:]


def _broadcast_background(background: Tensor, batch_shape: torch.Size, num_views: int) -> Float[Tensor, "b v 3"]:
    if background.shape not in ((3,), (*batch_shape, num_views, 3)):
        raise ValueError(f"render: background must be [3] or {[*batch_shape, num_views, 3]}, "
                         f"got {list(background.shape)}")
    return background.float().expand(*batch_shape, num_views, 3).reshape(-1, num_views, 3)


def render(gaussians: Gaussians, cameras: Cameras, background: Tensor,
           cfg: RenderConfig = RenderConfig()) -> RenderOutput:
    """Rasterize ``gaussians`` (batch ``[*batch]``, N each) into ``cameras`` (batch ``[*batch, view]``).

    Args:
        gaussians: activated Gaussians; colours are RGB (SH degree 0 already applied).
        cameras: OpenCV cameras; the image size is ``cameras.width`` x ``cameras.height``. Not differentiated.
        background: RGB ``[3]`` or ``[*batch, view, 3]``, seen through the final transmittance.
        cfg: backend and rasterization settings.

    Returns:
        rgb ``[*batch, view, 3, h, w]``, alpha and expected depth ``[*batch, view, 1, h, w]``, in float32 and
        differentiable w.r.t. means, quats, scales, opacities, colours and the background.
    """
    batch_shape = gaussians.batch_shape
    if cameras.batch_shape[:-1] != batch_shape or len(cameras.batch_shape) != len(batch_shape) + 1:
        raise ValueError(f"render: cameras must have batch shape {[*batch_shape, 'view']} for Gaussians of batch "
                         f"shape {list(batch_shape)}, got {list(cameras.batch_shape)}")
    num_views = cameras.batch_shape[-1]
    backend = resolve_backend(cfg.backend, gaussians.device)
    flat = gaussians.float().flatten_batch()
    flat_cameras = cameras.to(dtype=torch.float32).reshape(flat.means.shape[0], num_views)
    background = _broadcast_background(background, batch_shape, num_views)
    render_views = functools.partial(_render_views, cfg=cfg, backend=backend)
    if cfg.deferred:
        rgb, alpha, depth = render_deferred(render_views, flat, flat_cameras, background)
    else:
        rgb, alpha, depth = render_views(flat, flat_cameras, background)
    height, width = cameras.height, cameras.width
    return RenderOutput(rgb=rgb.reshape(*batch_shape, num_views, 3, height, width),
                        alpha=alpha.reshape(*batch_shape, num_views, 1, height, width),
                        depth=depth.reshape(*batch_shape, num_views, 1, height, width))
