"""Front-to-back alpha compositing of binned splats in plain PyTorch (the ``torch`` backend).

Works on any device and differentiates through autograd. Tiles are processed in chunks (tiles with similar list
lengths together, to keep padding small), each chunk as dense ``[tiles, splats, pixels]`` tensors. When a graph is
needed each chunk is checkpointed, so that memory holds one chunk's intermediates at a time.
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from diffusiongs.render.config import ALPHA_MAX, ALPHA_MIN, TRANSMITTANCE_MIN
from diffusiongs.render.projection import NUM_FEATURES, Splats, TileBins, gather_rows

CHUNK_ELEMENTS = 1 << 22
"""Budget for one chunk's ``tiles x splats x pixels`` tensors (each intermediate is this many floats)."""


def _composite_chunk(means2d: Float[Tensor, "m 2"], conics: Float[Tensor, "m 3"], opacities: Float[Tensor, " m"],
                     features: Float[Tensor, "m f"], ids: Int[Tensor, "t k"], valid: Bool[Tensor, "t k"],
                     pixels: Float[Tensor, "t p 2"]) -> tuple[Float[Tensor, "t p f"], Float[Tensor, "t p"]]:
    """Composite the depth-sorted lists ``ids`` (padding where not ``valid``) at the pixel centres ``pixels``."""
    delta = gather_rows(means2d, ids)[:, :, None, :] - pixels[:, None, :, :]  # [t, k, p, 2]
    dx, dy = delta.unbind(-1)
    a, b, c = (x[..., None] for x in gather_rows(conics, ids).unbind(-1))
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = (gather_rows(opacities, ids)[..., None] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    accepted = valid[..., None] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    alpha = torch.where(accepted, alpha, 0.0)
    with torch.no_grad():
        # Transmittance only falls, so "would the running transmittance stay above the floor" marks a prefix:
        # exactly the Gaussians a sequential renderer composites before it stops.
        contributes = accepted & (torch.cumprod(1 - alpha, dim=1) > TRANSMITTANCE_MIN)
    alpha = torch.where(contributes, alpha, 0.0)
    trans_after = torch.cumprod(1 - alpha, dim=1)
    trans_before = torch.cat([torch.ones_like(trans_after[:, :1]), trans_after[:, :-1]], dim=1)
    weights = alpha * trans_before
    return torch.einsum("tkp,tkf->tpf", weights, gather_rows(features, ids)), trans_after[:, -1]


def _tile_pixel_centres(tiles: Int[Tensor, " t"], bins: TileBins) -> Float[Tensor, "t p 2"]:
    ts = bins.tile_size
    within = torch.arange(ts, device=tiles.device, dtype=torch.float32) + 0.5
    gy, gx = torch.meshgrid(within, within, indexing="ij")
    local = tiles % (bins.tiles_x * bins.tiles_y)
    origin = torch.stack([local % bins.tiles_x, local // bins.tiles_x], -1).float() * ts
    return origin[:, None, :] + torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)[None]


def _chunks(counts: list[int], pixels_per_tile: int) -> list[tuple[int, int]]:
    """Split tiles sorted by decreasing count into ranges whose padded size fits :data:`CHUNK_ELEMENTS`."""
    ranges, start = [], 0
    while start < len(counts) and counts[start] > 0:
        n = max(1, CHUNK_ELEMENTS // (counts[start] * pixels_per_tile))
        end = min(start + n, len(counts))
        ranges.append((start, end))
        start = end
    return ranges


def composite_torch(splats: Splats, bins: TileBins, num_images: int, height: int,
                    width: int) -> tuple[Float[Tensor, "i h w 4"], Float[Tensor, "i h w"]]:
    """Accumulated features (RGB, z) and final transmittance of every pixel."""
    ts = bins.tile_size
    num_tiles = num_images * bins.tiles_y * bins.tiles_x
    device = splats.means2d.device
    counts = bins.counts
    order = torch.argsort(counts, descending=True, stable=True)
    sorted_counts = counts[order].tolist()
    needs_graph = torch.is_grad_enabled() and any(
        t.requires_grad for t in (splats.means2d, splats.conics, splats.opacities, splats.features))

    feat_tiles = splats.features.new_zeros(num_tiles, ts * ts, NUM_FEATURES)
    trans_tiles = splats.features.new_ones(num_tiles, ts * ts)
    chunks = _chunks(sorted_counts, ts * ts)
    if needs_graph and not chunks:
        # Nothing is drawn: keep the outputs on the graph (with zero gradients), as the other backends do, so
        # that a loss on them can still be backpropagated.
        feat_tiles = feat_tiles + 0.0 * splats.features.sum()
    for start, end in chunks:
        tiles = order[start:end]
        k = torch.arange(sorted_counts[start], device=device)
        slots = bins.offsets[tiles][:, None] + k
        valid = k < counts[tiles][:, None]
        ids = bins.splat_ids[torch.where(valid, slots, 0)]
        args = (splats.means2d, splats.conics, splats.opacities, splats.features, ids, valid,
                _tile_pixel_centres(tiles, bins))
        if needs_graph:
            feat, trans = checkpoint(_composite_chunk, *args, use_reentrant=False)
        else:
            feat, trans = _composite_chunk(*args)
        feat_tiles = feat_tiles.index_copy(0, tiles, feat)
        trans_tiles = trans_tiles.index_copy(0, tiles, trans)

    def untile(x: Tensor) -> Tensor:
        x = x.reshape(num_images, bins.tiles_y, bins.tiles_x, ts, ts, *x.shape[2:]).transpose(2, 3)
        return x.reshape(num_images, bins.tiles_y * ts, bins.tiles_x * ts, *x.shape[5:])[:, :height, :width]

    return untile(feat_tiles), untile(trans_tiles)
