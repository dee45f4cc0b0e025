"""The typed container of activated 3D Gaussians that the renderer, exporter and losses share."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from jaxtyping import Bool, Float
from torch import Tensor

SH_C0 = 0.28209479177387814
"""The degree-0 real spherical harmonic, 1 / (2 sqrt(pi)): colour = SH_C0 * f_dc + 0.5."""


def quaternion_product(a: Float[Tensor, "*batch 4"], b: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 4"]:
    """The Hamilton product ``a ⊗ b`` of (w, x, y, z) quaternions: the rotation ``b`` followed by ``a``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


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

    def clone(self) -> Gaussians:
        return self._map(lambda t: t.clone())

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

    def rotated(self, rotation: Float[Tensor, "4"]) -> Gaussians:
        """The same Gaussians rotated about the world origin by the unit quaternion ``rotation`` (w, x, y, z):
        centres ``mu -> R mu``, orientations ``q -> r ⊗ q`` (so covariances become ``R Sigma R^T``). Colours are
        view-independent (SH degree 0), so they do not change."""
        r = rotation.to(self.means)
        w, u = r[0], r[1:]
        # Rodrigues in quaternion form: R v = v + 2 w (u x v) + 2 u x (u x v).
        uv = torch.linalg.cross(u.expand_as(self.means), self.means)
        means = self.means + 2 * w * uv + 2 * torch.linalg.cross(u.expand_as(uv), uv)
        return replace(self, means=means, quats=quaternion_product(r.expand_as(self.quats), self.quats))

    @staticmethod
    def cat(parts: list[Gaussians]) -> Gaussians:
        """Concatenate sets along the Gaussian axis (the batch shapes must agree)."""
        return Gaussians(**{f.name: torch.cat([getattr(p, f.name) for p in parts],
                                              dim=-1 if f.name == "opacities" else -2)
                            for f in fields(Gaussians)})
