"""Camera normalisation: the world frames of docs/conventions.md, per domain.

* Objects: centred and scaled into [-1, 1]^3 (readers find the object's box and apply
  :func:`~diffusiongs.geometry.camera.transform_world`).
* Scenes: re-centred on the mean camera and scaled so that camera translations are at most 1/1.35, the
  RealEstate10K protocol of the official code (reference §5.3). The resulting world frame is the mean camera's
  OpenCV frame: x right, y down, z forward.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.geometry.camera import transform_world

SCENE_SCALE_FACTOR = 1.35
"""Translations are divided by 1.35 x their largest absolute coordinate (official RealEstate10K loader)."""


def condition_azimuth_frame(c2w: Float[Tensor, "view 4 4"]) -> Float[Tensor, "view 4 4"]:
    """Objects: rotate the world about its up axis (z) so that the first (condition) camera sits at azimuth 0, i.e.
    on the +x side of the object. The official loader makes azimuths relative to the condition view in the same
    way; inference then places the input view at azimuth 0 of its camera rig."""
    x, y = float(c2w[0, 0, 3]), float(c2w[0, 1, 3])
    if math.hypot(x, y) < 1e-9:  # a camera straight above or below: no azimuth to remove
        return c2w
    angle = -math.atan2(y, x)
    rotation = torch.tensor([[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]], dtype=c2w.dtype)
    return transform_world(c2w, rotation, torch.zeros(3, dtype=c2w.dtype), 1.0)


def scene_world_transform(c2w: Float[Tensor, "view 4 4"], scale_factor: float = SCENE_SCALE_FACTOR
                          ) -> tuple[Float[Tensor, "3 3"], Float[Tensor, " 3"], float]:
    """The similarity transform of :func:`normalize_scene_cameras` as ``(rotation, translation, scale)`` for
    :func:`~diffusiongs.geometry.camera.transform_world` (float64), so that more cameras (a fly-through path) can
    be moved into the same frame."""
    c2w = c2w.double()
    center = c2w[:, :3, 3].mean(0)
    forward = torch.nn.functional.normalize(c2w[:, :3, 2].mean(0), dim=0)
    right = torch.nn.functional.normalize(torch.linalg.cross(c2w[:, :3, 1].mean(0), forward, dim=0), dim=0)
    down = torch.linalg.cross(forward, right, dim=0)
    mean_rotation = torch.stack([right, down, forward], dim=1)
    rotation, translation = mean_rotation.T, -mean_rotation.T @ center
    extent = float(((rotation @ c2w[:, :3, 3:])[..., 0] + translation).abs().max())
    return rotation, translation, 1.0 / (scale_factor * extent) if extent > 0 else 1.0


def normalize_scene_cameras(c2w: Float[Tensor, "view 4 4"], scale_factor: float = SCENE_SCALE_FACTOR
                            ) -> tuple[Float[Tensor, "view 4 4"], float]:
    """Re-centre on the mean camera and rescale; returns the cameras and the scale applied to world lengths
    (depths must be multiplied by it).

    The mean camera sits at the mean centre, looks along the mean forward axis, and has its down axis
    re-orthogonalised from the mean down axis.
    """
    rotation, translation, scale = scene_world_transform(c2w, scale_factor)
    return transform_world(c2w.double(), rotation, translation, scale).float(), scale


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation taking direction ``a`` to direction ``b`` (Rodrigues)."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        # Opposite directions: a half turn about any axis perpendicular to a.
        helper = np.eye(3)[np.argmin(np.abs(a))]
        axis = np.cross(a, helper)
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    k = axis / sin
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + sin * cross + (1 - cos) * cross @ cross
