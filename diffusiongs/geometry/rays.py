"""Per-pixel rays and the ray embeddings the denoiser sees (the paper's RPPC section).

A ray is (o, d) with o the camera centre and d a unit direction. Two 6-channel embeddings:
  * Plücker coordinates   r = (o x d, d);
  * RPPC (reference-point Plücker coordinates)   r = (o - (o.d) d, d), whose first half is the point of
    the ray closest to the world origin. It does not change when o slides along the ray, and it encodes
    where the ray passes relative to the object, which o x d does not.
"""

from __future__ import annotations

from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.geometry.camera import Cameras

RayEmbedding = Literal["rppc", "plucker"]


def pixel_rays(cameras: Cameras) -> tuple[Float[Tensor, "*batch h w 3"], Float[Tensor, "*batch h w 3"]]:
    """Origins and unit directions of the rays through every pixel centre, in world coordinates."""
    dtype, device = cameras.c2w.dtype, cameras.device
    ys = torch.arange(cameras.height, dtype=dtype, device=device) + 0.5
    xs = torch.arange(cameras.width, dtype=dtype, device=device) + 0.5
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")  # [h, w]
    K = cameras.K[..., None, None, :, :]
    x_cam = (grid_x - K[..., 0, 2]) / K[..., 0, 0]
    y_cam = (grid_y - K[..., 1, 2]) / K[..., 1, 1]
    d_cam = torch.stack([x_cam, y_cam, torch.ones_like(x_cam)], dim=-1)  # [*batch, h, w, 3]
    rot = cameras.c2w[..., None, None, :3, :3]
    directions = torch.nn.functional.normalize((rot @ d_cam[..., None])[..., 0], dim=-1)
    origins = cameras.centers[..., None, None, :].expand_as(directions)
    return origins, directions


def plucker(origins: Float[Tensor, "*batch 3"], directions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 6"]:
    """Plücker coordinates (o x d, d)."""
    return torch.cat([torch.linalg.cross(origins, directions, dim=-1), directions], dim=-1)


def reference_depth(origins: Float[Tensor, "*batch 3"],
                    directions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch"]:
    """t_ref = -(o.d): the ray parameter of the point closest to the origin (d must be unit)."""
    return -(origins * directions).sum(-1)


def reference_point(origins: Float[Tensor, "*batch 3"],
                    directions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """o - (o.d) d = o + t_ref d: the point of the ray closest to the world origin."""
    return origins + reference_depth(origins, directions)[..., None] * directions


def rppc(origins: Float[Tensor, "*batch 3"], directions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 6"]:
    """Reference-point Plücker coordinates (o - (o.d) d, d), the paper's RPPC."""
    return torch.cat([reference_point(origins, directions), directions], dim=-1)


def embed_rays(origins: Float[Tensor, "*batch 3"], directions: Float[Tensor, "*batch 3"],
               kind: RayEmbedding) -> Float[Tensor, "*batch 6"]:
    """The 6-channel embedding of ``kind`` of each ray."""
    return rppc(origins, directions) if kind == "rppc" else plucker(origins, directions)


def ray_embedding(cameras: Cameras, kind: RayEmbedding) -> Float[Tensor, "*batch 6 h w"]:
    """The 6-channel per-pixel ray embedding of ``kind`` for every pixel, channels first."""
    return embed_rays(*pixel_rays(cameras), kind).movedim(-1, -3)
