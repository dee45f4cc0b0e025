"""Camera paths: poses between (and past) key poses, for fly-through videos.

Between two key poses a camera moves along the straight line between their centres and turns at a constant rate
about one axis (the geodesic between the rotations). Past either end of the keys the first or last segment's motion
continues, so a path can be extended a little beyond the cameras it was given.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor


def _hat(omega: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    zero = torch.zeros_like(omega[..., 0])
    x, y, z = omega.unbind(-1)
    return torch.stack([torch.stack([zero, -z, y], -1), torch.stack([z, zero, -x], -1),
                        torch.stack([-y, x, zero], -1)], -2)


def rotation_log(rotation: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 3"]:
    """The rotation vector (axis times angle in radians) of rotations by less than 180 degrees."""
    skew = rotation - rotation.transpose(-1, -2)
    vee = torch.stack([skew[..., 2, 1], skew[..., 0, 2], skew[..., 1, 0]], -1) / 2  # sin(angle) * axis
    cos = ((rotation.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    angle = torch.atan2(vee.norm(dim=-1), cos)
    # angle / sin(angle) -> 1 as the angle -> 0
    factor = torch.where(angle > 1e-8, angle / torch.sin(angle).clamp_min(1e-12), torch.ones_like(angle))
    return vee * factor[..., None]


def rotation_exp(omega: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3 3"]:
    """The rotation by ``|omega|`` radians about ``omega`` (Rodrigues' formula)."""
    angle = omega.norm(dim=-1)[..., None, None]
    k = _hat(omega / angle.squeeze(-1).clamp_min(1e-12))
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand_as(k)
    return eye + torch.sin(angle) * k + (1 - torch.cos(angle)) * (k @ k)


def interpolate_poses(keys: Float[Tensor, "k 4 4"], positions: Float[Tensor, " f"]) -> Float[Tensor, "f 4 4"]:
    """Camera-to-world poses at fractional ``positions`` along ``keys`` (position i is key i exactly).

    Positions below 0 or above ``k - 1`` extrapolate the first or last segment's motion. Computed in float64,
    returned in the keys' dtype.
    """
    if keys.shape[0] < 2:
        raise ValueError("interpolate_poses: at least two key poses are needed")
    poses = keys.double()
    positions = positions.double()
    start = positions.floor().clamp(0, keys.shape[0] - 2).long()
    fraction = (positions - start)[:, None]
    a, b = poses[start], poses[start + 1]
    turn = rotation_log(a[:, :3, :3].transpose(-1, -2) @ b[:, :3, :3])
    out = torch.eye(4, dtype=torch.float64).repeat(len(positions), 1, 1)
    out[:, :3, :3] = a[:, :3, :3] @ rotation_exp(fraction * turn)
    out[:, :3, 3] = a[:, :3, 3] + fraction * (b[:, :3, 3] - a[:, :3, 3])
    return out.to(keys.dtype)
