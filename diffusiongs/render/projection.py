"""EWA projection of 3D Gaussians into images, culling, and tile binning, in differentiable PyTorch.

Shared by the ``cpu`` and ``torch`` backends; autograd through these functions gives the projection's backward.
The rules follow gsplat's classic mode (see :mod:`diffusiongs.render.config`):

  * camera-space centre and covariance ``Σ_c = W Σ Wᵀ`` with ``Σ = R S² Rᵀ``;
  * ``Σ' = J Σ_c Jᵀ + eps2d I``, with the Jacobian ``J`` of the pinhole projection evaluated at the centre whose
    x/z and y/z are clamped to the field of view plus a margin;
  * culled: centres outside [near, far], ``det Σ' <= 0``, opacity < 1/255, boxes entirely off-screen;
  * a splat's box half-width is ``ceil(extend sqrt(Σ'_xx))`` with ``extend = min(3.33, sqrt(2 ln(255 opacity)))``,
    the opacity-aware bound outside which alpha < 1/255.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras
from diffusiongs.render.config import ALPHA_MIN, EXTEND_MAX, FOV_CLIP_MARGIN, RenderConfig

NUM_FEATURES = 4
"""Per-splat values composited per pixel: RGB and camera z (the depth channel)."""

_BOX_SAFETY = 1e-3
"""Pixels added to the exact alpha >= 1/255 box so that float rounding never drops a pixel the alpha test keeps."""


@dataclass(frozen=True)
class Splats:
    """Gaussians projected into images: one row per (image, Gaussian) pair that survived culling.

    Images are numbered ``b * views + v``. Rows are ordered by image, then by Gaussian index.
    """

    image_ids: Int[Tensor, " m"]
    gaussian_ids: Int[Tensor, " m"]
    """Index of the Gaussian within its batch element."""
    means2d: Float[Tensor, "m 2"]
    """Projected centres in pixels (pixel (i, j) has its centre at (j + 0.5, i + 0.5))."""
    conics: Float[Tensor, "m 3"]
    """Inverse 2D covariance ``(a, b, c)`` of ``[[a, b], [b, c]]``."""
    opacities: Float[Tensor, " m"]
    features: Float[Tensor, "m 4"]
    """RGB and camera z."""
    radii: Int[Tensor, "m 2"]
    """gsplat's integer box half-widths (x, y) in pixels: they decide which tiles a splat is binned to."""
    extents: Float[Tensor, "m 2"]
    """Box half-widths (x, y) outside which alpha < 1/255 (plus a safety margin): kernels skip pixels beyond them."""

    @property
    def depths(self) -> Float[Tensor, " m"]:
        return self.features[:, 3]


@dataclass(frozen=True)
class TileBins:
    """Splats binned to screen tiles and sorted front to back within each tile.

    Tiles are numbered image-major, ``(image * tiles_y + ty) * tiles_x + tx``; tile ``t`` holds the splats
    ``splat_ids[offsets[t]:offsets[t + 1]]`` in increasing depth.
    """

    splat_ids: Int[Tensor, " e"]
    offsets: Int[Tensor, " tiles_plus_one"]
    tile_size: int
    tiles_x: int
    tiles_y: int

    @property
    def counts(self) -> Int[Tensor, " tiles"]:
        return self.offsets[1:] - self.offsets[:-1]


def quat_to_rotmat(quats: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices of (w, x, y, z) quaternions, normalised first (as gsplat does)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariances(quats: Float[Tensor, "*batch 4"], scales: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """World-space covariances ``R S² Rᵀ``."""
    m = quat_to_rotmat(quats) * scales[..., None, :]
    return m @ m.transpose(-1, -2)


def _ewa_jacobian(mean_c: Float[Tensor, "m 3"], K: Float[Tensor, "m 3 3"], width: int,
                  height: int) -> Float[Tensor, "m 2 3"]:
    """Jacobian of the pinhole projection at each centre, with x/z and y/z clamped as gsplat does."""
    x, y, z = mean_c.unbind(-1)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    margin_x = FOV_CLIP_MARGIN * 0.5 * width / fx
    margin_y = FOV_CLIP_MARGIN * 0.5 * height / fy
    tx = z * torch.minimum(torch.maximum(x / z, -(cx / fx + margin_x)), (width - cx) / fx + margin_x)
    ty = z * torch.minimum(torch.maximum(y / z, -(cy / fy + margin_y)), (height - cy) / fy + margin_y)
    zeros = torch.zeros_like(z)
    return torch.stack([fx / z, zeros, -fx * tx / (z * z), zeros, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)


def gather_rows(x: Float[Tensor, "rows ..."], index: Int[Tensor, "..."]) -> Float[Tensor, "..."]:
    """``x[index]`` whose backward gives the same bits on every run on the CPU.

    Rows gathered more than once (a Gaussian seen by several views, a splat in several tiles) get their gradients
    summed; advanced indexing sums them with atomic adds in an order that changes from run to run, while
    ``index_select``'s backward adds them in index order, which exact resumption of training runs needs.
    """
    return x.index_select(0, index.reshape(-1)).view(*index.shape, *x.shape[1:])


def project(gaussians: Gaussians, cameras: Cameras, cfg: RenderConfig) -> Splats:
    """Project ``gaussians`` (batch ``[b]``, N each) into ``cameras`` (batch ``[b, views]``) and cull.

    Differentiable w.r.t. the Gaussians; the cameras are treated as constants.
    """
    num_batch, num_views = cameras.batch_shape
    w2c = cameras.w2c().detach()
    K = cameras.K.detach()
    rot, trans = w2c[..., :3, :3], w2c[..., :3, 3]

    # Cheap culls first (depth range, opacity) on every (batch, view, Gaussian) triple, so that the rest of the
    # projection runs on candidates only and never divides by a depth near zero.
    mean_c_all = torch.einsum("bvij,bnj->bvni", rot, gaussians.means) + trans[:, :, None, :]
    with torch.no_grad():
        z_all = mean_c_all[..., 2]
        keep = (z_all >= cfg.near_plane) & (z_all <= cfg.far_plane) & (gaussians.opacities[:, None, :] >= ALPHA_MIN)
        b, v, n = keep.nonzero(as_tuple=True)

    mean_c = mean_c_all[b, v, n]
    rot_bv = rot[b, v]
    K_bv = K[b, v]
    pair = b * gaussians.num_gaussians + n  # row of (b, n) in the batch's Gaussians laid end to end
    cov_w = gather_rows(covariances(gaussians.quats, gaussians.scales).flatten(0, 1), pair)
    cov_c = rot_bv @ cov_w @ rot_bv.transpose(-1, -2)
    J = _ewa_jacobian(mean_c, K_bv, cameras.width, cameras.height)
    cov2d = J @ cov_c @ J.transpose(-1, -2)
    sxx = cov2d[:, 0, 0] + cfg.eps2d
    syy = cov2d[:, 1, 1] + cfg.eps2d
    sxy = cov2d[:, 0, 1]
    det = sxx * syy - sxy * sxy
    means2d = mean_c[:, :2] / mean_c[:, 2:] * K_bv[:, [0, 1], [0, 1]] + K_bv[:, [0, 1], [2, 2]]
    opacities = gather_rows(gaussians.opacities.flatten(), pair)

    with torch.no_grad():
        log_ratio = torch.log(opacities * (1.0 / ALPHA_MIN))  # alpha >= 1/255 exactly where sigma <= log_ratio
        extend = torch.sqrt(2.0 * log_ratio).clamp(max=EXTEND_MAX)
        sigma_xy = torch.stack([sxx, syy], -1).clamp(min=0).sqrt()
        radii = torch.ceil(extend[:, None] * sigma_xy)
        size = means2d.new_tensor([cameras.width, cameras.height])
        on_screen = ((means2d + radii > 0) & (means2d - radii < size)).all(-1)
        valid = (det > 0) & (radii > 0).any(-1) & on_screen
        extents = torch.sqrt(2.0 * log_ratio)[:, None] * sigma_xy + _BOX_SAFETY
        rows = valid.nonzero(as_tuple=True)[0]

    safe_det = det[rows]
    conics = torch.stack([syy[rows] / safe_det, -sxy[rows] / safe_det, sxx[rows] / safe_det], -1)
    features = torch.cat([gather_rows(gaussians.colors.flatten(0, 1), pair[rows]), mean_c[rows, 2:]], -1)
    return Splats(image_ids=b[rows] * num_views + v[rows], gaussian_ids=n[rows], means2d=means2d[rows], conics=conics,
                  opacities=opacities[rows], features=features, radii=radii[rows].to(torch.int32),
                  extents=extents[rows])


@torch.no_grad()
def bin_tiles(splats: Splats, num_images: int, width: int, height: int, tile_size: int) -> TileBins:
    """Bin splats to the tiles their gsplat box overlaps and sort each tile's list by depth (stable: ties keep
    Gaussian order, as gsplat's radix sort does)."""
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    device = splats.means2d.device
    centre = splats.means2d / tile_size
    half = splats.radii / tile_size
    limit = torch.tensor([tiles_x, tiles_y], device=device)
    lo = torch.minimum(torch.floor(centre - half).clamp(min=0).long(), limit)
    hi = torch.minimum(torch.ceil(centre + half).clamp(min=0).long(), limit)
    span = hi - lo
    counts = span[:, 0] * span[:, 1]

    splat_ids = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    first = torch.cumsum(counts, 0) - counts
    local = torch.arange(len(splat_ids), device=device) - first[splat_ids]
    tx = lo[splat_ids, 0] + local % span[splat_ids, 0]
    ty = lo[splat_ids, 1] + local // span[splat_ids, 0]
    tile = (splats.image_ids[splat_ids] * tiles_y + ty) * tiles_x + tx
    # Positive float32 depths sort like their bit patterns read as integers (gsplat's key layout).
    depth_bits = splats.depths.detach().float().contiguous().view(torch.int32).long()[splat_ids]
    order = torch.sort((tile << 32) | depth_bits, stable=True).indices
    num_tiles = num_images * tiles_y * tiles_x
    per_tile = torch.bincount(tile, minlength=num_tiles)
    offsets = torch.cat([per_tile.new_zeros(1), torch.cumsum(per_tile, 0)])
    return TileBins(splat_ids=splat_ids[order], offsets=offsets, tile_size=tile_size, tiles_x=tiles_x,
                    tiles_y=tiles_y)
