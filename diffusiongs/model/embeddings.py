"""Timestep and positional embeddings, patchify/unpatchify."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

TIMESTEP_FREQUENCY_DIM = 256
"""Width of the sinusoidal timestep features fed to the timestep MLP (DiT, official code)."""


def sinusoidal_features(values: Float[Tensor, " batch"], dim: int, max_period: float = 10_000.0) -> Tensor:
    """[cos | sin] features of ``values`` at ``dim // 2`` geometric frequencies from 1 to 1/max_period."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half)
    args = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Integer DDPM step t in [0, T) -> a width-``dim`` conditioning vector (sinusoidal 256-d -> MLP)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(TIMESTEP_FREQUENCY_DIM, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, timesteps: Int[Tensor, " batch"]) -> Float[Tensor, "batch dim"]:
        features = sinusoidal_features(timesteps, TIMESTEP_FREQUENCY_DIM)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


def patch_sincos_embedding(grid_h: int, grid_w: int, dim: int, device: torch.device) -> Float[Tensor, "tokens dim"]:
    """2D sin-cos embedding of patch positions (half the channels for rows, half for columns).

    Positions are normalised to [0, 1) across the image, so the same weights serve 256 and 512 px inputs.
    """
    rows = (torch.arange(grid_h, device=device, dtype=torch.float32) + 0.5) / grid_h
    cols = (torch.arange(grid_w, device=device, dtype=torch.float32) + 0.5) / grid_w
    row_feat = sinusoidal_features(rows * 1000.0, dim // 2)
    col_feat = sinusoidal_features(cols * 1000.0, dim - dim // 2)
    return torch.cat([row_feat[:, None].expand(grid_h, grid_w, -1), col_feat[None].expand(grid_h, grid_w, -1)],
                     dim=-1).reshape(grid_h * grid_w, dim)


def patchify(x: Float[Tensor, "b v c h w"], patch: int) -> Float[Tensor, "b v*hp*wp p*p*c"]:
    """Cut every view into patch x patch squares; each token's features are ordered (row, column, channel)."""
    b, v, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    x = x.reshape(b, v, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 1, 3, 5, 4, 6, 2)  # b v hp wp ph pw c
    return x.reshape(b, v * (h // patch) * (w // patch), patch * patch * c)


def unpatchify(tokens: Float[Tensor, "b v*hp*wp p*p*c"], views: int, h: int, w: int, patch: int
               ) -> Float[Tensor, "b v h w c"]:
    """Inverse of :func:`patchify`, returning channels last (one feature vector per pixel)."""
    b = tokens.shape[0]
    c = tokens.shape[-1] // (patch * patch)
    x = tokens.reshape(b, views, h // patch, w // patch, patch, patch, c)
    x = x.permute(0, 1, 2, 4, 3, 5, 6)  # b v hp ph wp pw c
    return x.reshape(b, views, h, w, c)
