"""Front-to-back alpha compositing of binned splats on the CPU: numba kernels with a hand-written backward.

One task per screen tile (tiles of all images in one parallel loop, so many views parallelise together). Within a
tile the splats run front to back and each one visits only the pixels of its alpha >= 1/255 box; a pixel stops at
the first splat that would take its transmittance to 1e-4 or below. Per pixel and channel f::

    F = sum_k f_k w_k,   w_k = alpha_k T_k,   T_{k+1} = T_k (1 - alpha_k),   T_0 = 1,   T = T_final

Backward, for a pixel with upstream gradients gF (per channel) and gT::

    dL/df_k     = gF w_k
    dL/dalpha_k = gF . (T_k f_k - S_k / (1 - alpha_k)) - gT T / (1 - alpha_k),   S_k = sum_{i>k} f_i w_i = F - P_k

with the prefix ``P_k = sum_{i<=k} f_i w_i``. The backward replays each tile front to back against the saved final
F, rather than back to front as 3DGS does, which divides transmittances back out (inaccurate after alphas near
0.999). Sums run in float64.
Gradients are written per (tile, splat) entry, which one task owns, so there are no races; they are summed per
splat afterwards.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.render.config import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN
from diffusiongs.render.projection import NUM_FEATURES, Splats, TileBins

# Columns of the per-splat parameter table the kernels read.
_MX, _MY, _CA, _CB, _CC, _OPACITY, _EX, _EY = range(8)
# Columns of the per-entry gradient table the backward kernel writes: d means2d (2), d conic (3), d opacity (1),
# d features (NUM_FEATURES).
_GRAD_COLUMNS = 6 + NUM_FEATURES
# The kernels take the compositing rules as an argument: numba's cache would keep constants read as globals from
# another module even after they change.
_RULES = (ALPHA_MIN, ALPHA_MAX, TRANSMITTANCE_MIN)


@numba.njit(cache=True, inline="always")
def _box(centre: float, extent: float, lo: int, hi: int) -> tuple[int, int]:
    """Pixels ``[first, last)`` of ``[lo, hi)`` whose centre (index + 0.5) lies within ``centre +- extent``."""
    # Clamp in floating point before converting: extents can be huge for Gaussians near the camera.
    first = max(float(lo), np.ceil(centre - extent - 0.5))
    last = min(float(hi), np.floor(centre + extent - 0.5) + 1.0)
    return int(first), int(max(first, last))


@numba.njit(cache=True, inline="always")
def _alpha(params: np.ndarray, g: int, px: float, py: float, rules: tuple[float, float, float]
           ) -> tuple[float, float, float, float, bool]:
    """Alpha of splat ``g`` at pixel centre (px, py), its unclamped value, the offsets, and whether it counts."""
    alpha_min, alpha_max, _ = rules
    dx = params[g, _MX] - px
    dy = params[g, _MY] - py
    sigma = 0.5 * (params[g, _CA] * dx * dx + params[g, _CC] * dy * dy) + params[g, _CB] * dx * dy
    raw = params[g, _OPACITY] * math.exp(-sigma)
    alpha = min(alpha_max, raw)
    return alpha, raw, dx, dy, sigma >= 0.0 and alpha >= alpha_min


@numba.njit(cache=True, inline="always")
def _tile_geometry(tile: int, tiles_x: int, tiles_y: int, tile_size: int, height: int,
                   width: int) -> tuple[int, int, int, int, int]:
    """Image index and pixel bounds ``[y0, y1) x [x0, x1)`` of a tile."""
    image = tile // (tiles_x * tiles_y)
    local = tile % (tiles_x * tiles_y)
    y0 = (local // tiles_x) * tile_size
    x0 = (local % tiles_x) * tile_size
    return image, y0, x0, min(y0 + tile_size, height), min(x0 + tile_size, width)


@numba.njit(parallel=True, cache=True)
def _forward_kernel(params, features, splat_ids, offsets, tile_order, tile_size, tiles_x, tiles_y, num_workers,
                    rules, out_feat, out_trans, out_stop):
    num_images, height, width, num_features = out_feat.shape
    for worker in numba.prange(num_workers):
        trans = np.empty((tile_size, tile_size))
        acc = np.empty((tile_size, tile_size, num_features))
        stop = np.empty((tile_size, tile_size), dtype=np.int64)
        # Tiles sorted by decreasing cost, dealt round-robin: every worker gets a similar share.
        for k in range(worker, len(tile_order), num_workers):
            tile = tile_order[k]
            image, y0, x0, y1, x1 = _tile_geometry(tile, tiles_x, tiles_y, tile_size, height, width)
            start, end = offsets[tile], offsets[tile + 1]
            trans[:] = 1.0
            acc[:] = 0.0
            stop[:] = end
            remaining = (y1 - y0) * (x1 - x0)
            for e in range(start, end):
                if remaining == 0:
                    break
                g = splat_ids[e]
                i_first, i_last = _box(params[g, _MY], params[g, _EY], y0, y1)
                j_first, j_last = _box(params[g, _MX], params[g, _EX], x0, x1)
                for i in range(i_first, i_last):
                    for j in range(j_first, j_last):
                        li, lj = i - y0, j - x0
                        if stop[li, lj] != end:
                            continue
                        alpha, raw, dx, dy, counts = _alpha(params, g, j + 0.5, i + 0.5, rules)
                        if not counts:
                            continue
                        t_next = trans[li, lj] * (1.0 - alpha)
                        if t_next <= rules[2]:
                            stop[li, lj] = e
                            remaining -= 1
                            continue
                        w = alpha * trans[li, lj]
                        for f in range(num_features):
                            acc[li, lj, f] += features[g, f] * w
                        trans[li, lj] = t_next
            for i in range(y0, y1):
                for j in range(x0, x1):
                    out_trans[image, i, j] = trans[i - y0, j - x0]
                    out_stop[image, i, j] = stop[i - y0, j - x0]
                    for f in range(num_features):
                        out_feat[image, i, j, f] = acc[i - y0, j - x0, f]


@numba.njit(parallel=True, cache=True)
def _backward_kernel(params, features, splat_ids, offsets, tile_order, tile_size, tiles_x, tiles_y, num_workers,
                     rules, feat, trans_final, stop, grad_feat, grad_trans, out_grads):
    num_images, height, width, num_features = feat.shape
    for worker in numba.prange(num_workers):
        trans = np.empty((tile_size, tile_size))
        prefix = np.empty((tile_size, tile_size, num_features))
        for k in range(worker, len(tile_order), num_workers):
            tile = tile_order[k]
            image, y0, x0, y1, x1 = _tile_geometry(tile, tiles_x, tiles_y, tile_size, height, width)
            trans[:] = 1.0
            prefix[:] = 0.0
            last = offsets[tile]  # no pixel of the tile composites the entries from here on
            for i in range(y0, y1):
                for j in range(x0, x1):
                    last = max(last, stop[image, i, j])
            out_grads[last:offsets[tile + 1]] = 0.0
            for e in range(offsets[tile], last):
                g = splat_ids[e]
                i_first, i_last = _box(params[g, _MY], params[g, _EY], y0, y1)
                j_first, j_last = _box(params[g, _MX], params[g, _EX], x0, x1)
                ca, cb, cc = params[g, _CA], params[g, _CB], params[g, _CC]
                d_mx = d_my = d_ca = d_cb = d_cc = d_opacity = 0.0
                for f in range(num_features):
                    out_grads[e, 6 + f] = 0.0
                for i in range(i_first, i_last):
                    for j in range(j_first, j_last):
                        li, lj = i - y0, j - x0
                        if e >= stop[image, i, j]:
                            continue
                        alpha, raw, dx, dy, counts = _alpha(params, g, j + 0.5, i + 0.5, rules)
                        if not counts:
                            continue
                        t = trans[li, lj]
                        w = alpha * t
                        d_alpha = 0.0
                        suffix_dot = 0.0
                        for f in range(num_features):
                            gf = grad_feat[image, i, j, f]
                            prefix[li, lj, f] += features[g, f] * w
                            out_grads[e, 6 + f] += gf * w
                            d_alpha += gf * t * features[g, f]
                            suffix_dot += gf * (feat[image, i, j, f] - prefix[li, lj, f])
                        one_minus = 1.0 - alpha
                        d_alpha -= (suffix_dot + grad_trans[image, i, j] * trans_final[image, i, j]) / one_minus
                        trans[li, lj] = t * one_minus
                        if raw > rules[1]:  # clamped: alpha does not depend on the parameters here
                            continue
                        vis = raw / params[g, _OPACITY]
                        d_opacity += d_alpha * vis
                        d_sigma = -d_alpha * alpha
                        d_ca += 0.5 * d_sigma * dx * dx
                        d_cb += d_sigma * dx * dy
                        d_cc += 0.5 * d_sigma * dy * dy
                        d_mx += d_sigma * (ca * dx + cb * dy)
                        d_my += d_sigma * (cb * dx + cc * dy)
                out_grads[e, 0] = d_mx
                out_grads[e, 1] = d_my
                out_grads[e, 2] = d_ca
                out_grads[e, 3] = d_cb
                out_grads[e, 4] = d_cc
                out_grads[e, 5] = d_opacity


def _kernel_inputs(splats: Splats, bins: TileBins) -> tuple:
    """The arguments both kernels start with."""
    params = torch.cat([splats.means2d, splats.conics, splats.opacities[:, None], splats.extents], -1)
    tile_order = torch.argsort(bins.counts, descending=True, stable=True)
    arrays = [params.detach().double(), splats.features.detach().double(), bins.splat_ids, bins.offsets, tile_order]
    return (*(np.ascontiguousarray(t.numpy()) for t in arrays), bins.tile_size, bins.tiles_x, bins.tiles_y,
            numba.get_num_threads(), _RULES)


class _CompositeCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, splats: Splats, bins: TileBins, num_images: int,
                height: int, width: int):
        inputs = _kernel_inputs(splats, bins)
        feat = np.zeros((num_images, height, width, NUM_FEATURES))
        trans = np.ones((num_images, height, width))
        stop = np.zeros((num_images, height, width), dtype=np.int64)
        _forward_kernel(*inputs, feat, trans, stop)
        ctx.state = (inputs, bins.splat_ids, feat, trans, stop, len(opacities))
        return torch.from_numpy(feat).float(), torch.from_numpy(trans).float()

    @staticmethod
    def backward(ctx, grad_feat, grad_trans):
        inputs, splat_ids, feat, trans, stop, num_splats = ctx.state
        entry_grads = np.empty((len(splat_ids), _GRAD_COLUMNS))
        _backward_kernel(*inputs, feat, trans, stop, np.ascontiguousarray(grad_feat.double().numpy()),
                         np.ascontiguousarray(grad_trans.double().numpy()), entry_grads)
        grads = torch.zeros(num_splats, _GRAD_COLUMNS, dtype=torch.float64)
        grads.index_add_(0, splat_ids, torch.from_numpy(entry_grads))
        grads = grads.float()
        return grads[:, 0:2], grads[:, 2:5], grads[:, 5], grads[:, 6:], None, None, None, None, None


def composite_cpu(splats: Splats, bins: TileBins, num_images: int, height: int,
                  width: int) -> tuple[Float[Tensor, "i h w 4"], Float[Tensor, "i h w"]]:
    """Accumulated features (RGB, z) and final transmittance of every pixel (CPU tensors only)."""
    return _CompositeCPU.apply(splats.means2d, splats.conics, splats.opacities, splats.features, splats, bins,
                               num_images, height, width)
