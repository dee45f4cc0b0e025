"""The one definition of the 14-channel per-pixel Gaussian map the denoiser predicts (reference §1.4).

    channel  0..2   position (the decoder turns them into a depth along the pixel's ray)
    channel  3..5   colour (SH degree-0 coefficient)
    channel  6..8   scale (log-space, before the bias and cap)
    channel  9..12  rotation quaternion (w, x, y, z), not normalised
    channel 13      opacity (logit, before the bias)

Everything else reads named fields through :data:`GAUSSIAN_LAYOUT`; no other file slices raw maps by number.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor


class GaussianChannelLayout:
    """Named channel ranges of a raw Gaussian map (channels on the last axis)."""

    position = slice(0, 3)
    color = slice(3, 6)
    scale = slice(6, 9)
    rotation = slice(9, 13)
    opacity = slice(13, 14)

    @property
    def num_channels(self) -> int:
        return self.opacity.stop

    def split(self, raw: Float[Tensor, "*batch 14"]) -> RawGaussianFields:
        if raw.shape[-1] != self.num_channels:
            raise ValueError(f"raw Gaussian map has {raw.shape[-1]} channels, expected {self.num_channels}")
        return RawGaussianFields(position=raw[..., self.position], color=raw[..., self.color],
                                 scale=raw[..., self.scale], rotation=raw[..., self.rotation],
                                 opacity=raw[..., self.opacity])


@dataclass(frozen=True)
class RawGaussianFields:
    """The raw (pre-activation) fields of a Gaussian map, channels last."""

    position: Float[Tensor, "*batch 3"]
    color: Float[Tensor, "*batch 3"]
    scale: Float[Tensor, "*batch 3"]
    rotation: Float[Tensor, "*batch 4"]
    opacity: Float[Tensor, "*batch 1"]


GAUSSIAN_LAYOUT = GaussianChannelLayout()
GAUSSIAN_CHANNELS = GAUSSIAN_LAYOUT.num_channels
