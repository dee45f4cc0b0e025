"""Raw 14-channel maps + pixel rays -> activated Gaussians (the paper's pixel-aligned Gaussians, reference §1.4).

Every pixel's Gaussian sits on that pixel's ray, mu = o + u d, with the depth u chosen by the network through
w = sigmoid(mean of the three position channels):
  * ``interval`` (paper):            u = w u_near + (1 - w) u_far;
  * ``reference_window`` (official): u = t_ref + window (2w - 1), t_ref = -(o.d) the RPPC reference depth.
The other fields share one set of activations (official code; reference §1.4):
  colour  c = max(SH_C0 f + 0.5, 0)     scale  s = exp(min(raw + LOG_SCALE_BIAS, LOG_SCALE_MAX))
  rotation q = raw / |raw|              opacity a = sigmoid(raw + OPACITY_BIAS)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.gaussians.container import SH_C0, Gaussians
from diffusiongs.gaussians.layout import GAUSSIAN_LAYOUT, RawGaussianFields
from diffusiongs.geometry.rays import reference_depth


@dataclass(frozen=True)
class GaussianDecodeConfig:
    """How a raw Gaussian map becomes Gaussians. Named presets: :data:`DECODE_PRESETS`."""

    depth: Literal["interval", "reference_window"] = "interval"
    """Depth parameterisation along the ray (see the module docstring)."""
    near: float = 0.1
    """``interval``: the depth u at w = 1."""
    far: float = 4.2
    """``interval``: the depth u at w = 0."""
    window: float = 1.8
    """``reference_window``: half-width of the depth window around the RPPC reference depth."""
    clip_box: float | None = 1.0
    """Clamp centres into [-clip_box, clip_box]^3 (objects live in [-1, 1]^3); None leaves them free (scenes)."""
    log_scale_bias: float = -2.3
    """Added to the raw log-scale: a raw 0 gives exp(-2.3) = 0.10 world units."""
    log_scale_max: float = -1.2
    """Cap on the log-scale: no Gaussian is larger than exp(-1.2) = 0.30 world units."""
    opacity_bias: float = -2.0
    """Added to the raw opacity logit: a raw 0 gives sigmoid(-2) = 0.12, so early renders are not opaque."""


DECODE_PRESETS: dict[str, GaussianDecodeConfig] = {
    # The paper: u in [0.1, 4.2] for objects, centres clipped into [-1, 1]^3; u in [0, 500] for scenes.
    "object": GaussianDecodeConfig(depth="interval", near=0.1, far=4.2, clip_box=1.0),
    "scene": GaussianDecodeConfig(depth="interval", near=0.0, far=500.0, clip_box=None),
    # The released checkpoints: +-1.8 around the reference depth, never clipped (objects); u = 500 sigmoid(raw)
    # (scenes), which is the interval form with near = 500, far = 0.
    "object_official": GaussianDecodeConfig(depth="reference_window", window=1.8, clip_box=None),
    "scene_official": GaussianDecodeConfig(depth="interval", near=500.0, far=0.0, clip_box=None),
}


def _activate_appearance(fields: RawGaussianFields, cfg: GaussianDecodeConfig, means: Tensor) -> Gaussians:
    log_scale = torch.clamp(fields.scale + cfg.log_scale_bias, max=cfg.log_scale_max)
    return Gaussians(
        means=means,
        quats=torch.nn.functional.normalize(fields.rotation, dim=-1),
        scales=torch.exp(log_scale),
        opacities=torch.sigmoid(fields.opacity[..., 0] + cfg.opacity_bias),
        colors=torch.clamp(SH_C0 * fields.color + 0.5, min=0.0),
    )


def ray_depth(raw_position: Float[Tensor, "*batch 3"], origins: Float[Tensor, "*batch 3"],
              directions: Float[Tensor, "*batch 3"], cfg: GaussianDecodeConfig) -> Float[Tensor, "*batch"]:
    """The depth u along each ray chosen by the raw position channels."""
    w = torch.sigmoid(raw_position.mean(-1))
    if cfg.depth == "interval":
        return w * cfg.near + (1.0 - w) * cfg.far
    return reference_depth(origins, directions) + cfg.window * (2.0 * w - 1.0)


def decode_pixel_gaussians(raw: Float[Tensor, "*batch n 14"], origins: Float[Tensor, "*batch n 3"],
                           directions: Float[Tensor, "*batch n 3"], cfg: GaussianDecodeConfig) -> Gaussians:
    """Pixel-aligned Gaussians: one per ray, placed at depth :func:`ray_depth` along it.

    Args:
        raw: raw maps with the channels of :data:`GAUSSIAN_LAYOUT` last (computed in float32).
        origins, directions: the rays of the same pixels (directions unit length).
    """
    fields = GAUSSIAN_LAYOUT.split(raw.float())
    depth = ray_depth(fields.position, origins, directions, cfg)
    means = origins + depth[..., None] * directions
    if cfg.clip_box is not None:
        means = means.clamp(-cfg.clip_box, cfg.clip_box)
    return _activate_appearance(fields, cfg, means)


def decode_free_gaussians(raw: Float[Tensor, "*batch g 14"], cfg: GaussianDecodeConfig) -> Gaussians:
    """Gaussians not tied to a pixel (the official model's global tokens): the position channels are the centre."""
    fields = GAUSSIAN_LAYOUT.split(raw.float())
    return _activate_appearance(fields, cfg, fields.position)
