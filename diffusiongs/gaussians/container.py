"""The typed container of activated 3D Gaussians that the renderer, exporter and losses share."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from jaxtyping import Bool, Float
from torch import Tensor

SH_C0 = 0.28209479177387814
"""The degree-0 real spherical harmonic, 1 / (2 sqrt(pi)): colour = SH_C0 * f_dc + 0.5."""


@dataclass(frozen=True)
class Gaussians:
    """3D Gaussians with activated (render-ready) parameters; any leading batch shape, N Gaussians.

    Attributes:
        means: centres in world coordinates, ``[*batch, N, 3]``.
        quats: unit rotation quaternions (w, x, y, z), ``[*batch, N, 4]``.
        scales: standard deviations along the rotated axes (> 0, world units), ``[*batch, N, 3]``.
        opacities: in (0, 1), ``[*batch, N]``.
        colors: view-independent RGB (>= 0, 1 = white), ``[*batch, N, 3]``.
    """

    means: Float[Tensor, "*batch n 3"]
    quats: Float[Tensor, "*batch n 4"]
    scales: Float[Tensor, "*batch n 3"]
    opacities: Float[Tensor, "*batch n"]
    colors: Float[Tensor, "*batch n 3"]

    def __post_init__(self) -> None:
        lead = self.means.shape[:-1]
        expected = {"means": 3, "quats": 4, "scales": 3, "colors": 3}
        for name, width in expected.items():
            value = getattr(self, name)
            if value.shape != (*lead, width):
                raise ValueError(f"Gaussians.{name}: expected shape {(*lead, width)}, got {tuple(value.shape)}")
        if self.opacities.shape != lead:
            raise ValueError(f"Gaussians.opacities: expected shape {tuple(lead)}, got {tuple(self.opacities.shape)}")

    @property
    def batch_shape(self) -> torch.Size:
        return self.means.shape[:-2]

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[-2]

    @property
    def device(self) -> torch.device:
        return self.means.device

    def _map(self, fn) -> Gaussians:
        return replace(self, **{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Gaussians:
        return self._map(lambda t: t.to(device=device, dtype=dtype))

    def detach(self) -> Gaussians:
        return self._map(lambda t: t.detach())

    def float(self) -> Gaussians:
        return self._map(lambda t: t.float())

    def __getitem__(self, index) -> Gaussians:
        """Index the batch dimensions (not the Gaussians)."""
        return self._map(lambda t: t[index])

    def select(self, mask: Bool[Tensor, " n"]) -> Gaussians:
        """Keep the Gaussians where ``mask`` is true (unbatched Gaussians only)."""
        if self.batch_shape:
            raise ValueError("Gaussians.select works on one unbatched set; index the batch first")
        return self._map(lambda t: t[mask])

    def flatten_batch(self) -> Gaussians:
        """Merge the batch dimensions: ``[*batch, N, c] -> [prod(batch), N, c]``."""
        lead = self.batch_shape.numel()
        return self._map(lambda t: t.reshape(lead, *t.shape[len(self.batch_shape):]))

    @staticmethod
    def cat(parts: list[Gaussians]) -> Gaussians:
        """Concatenate sets along the Gaussian axis (the batch shapes must agree)."""
        return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts],
                                              dim=-1 if f.name == "opacities" else -2)
                            for f in fields(Gaussians)})
