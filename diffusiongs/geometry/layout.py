"""The view layout: where a sample's N noisy views sit relative to its condition view (reference §4.1).

This is the one owner of that concept. Training draws its views under a layout (``data/view_selection.py``), the
layout is recorded in the model's config (``ModelConfig.view_layout``), and inference and evaluation place the noisy
views from that record with :meth:`ViewLayout.rig`, so ``train -> generate -> evaluate`` agree by construction.

Modes:

* ``"orbit"`` (the official code, and the default): the N noisy views are the condition camera turned about the
  world's up axis (z) by 360 k / (N + 1) degrees, k = 1..N (N = 3: 90, 180 and 270 degrees). Together they see the
  whole object, so the Gaussians cover 360 degrees.
* ``"constrained"`` (the paper's angle constraints): every noisy camera lies within ``theta1`` of the condition
  camera (angle between the centres, seen from the origin); novel views within ``theta2`` of every noisy view.
  With the unverified defaults (45 and 60 degrees) nothing behind the object is ever denoised or supervised: such a
  model makes the front half of an object, not a 360-degree one. Its inference rig puts the N noisy views at the
  median angle of a uniform draw within ``theta1`` (31.4 degrees for 45), at bearings evenly spread around the
  condition view, the first towards increasing azimuth.
* ``"random"`` (ablation): training draws the views uniformly at random; the inference rig is the orbit rig, the
  evenly spread representative of views drawn anywhere around the object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.geometry.camera import WORLD_UP, Cameras, transform_world
from diffusiongs.geometry.path import rotation_exp

ViewLayoutMode = Literal["orbit", "constrained", "random"]


@dataclass(frozen=True)
class ViewLayout:
    """Where the noisy views sit relative to the condition view, in training and at inference.

    The angle defaults of the constrained mode are **unverified guesses** (a third-party re-implementation's values):
    the paper's theta1/theta2/phi1/phi2 are not retrievable (reference §4.1).
    """

    mode: ViewLayoutMode = "orbit"
    """``orbit`` (official code: N + 1 azimuths evenly spaced, 360-degree objects), ``constrained`` (paper angle
    constraints: the front of the object) or ``random`` (ablation)."""
    theta1_deg: float = 45.0
    """Constrained: largest angle between the condition and a noisy camera position, seen from the origin."""
    theta2_deg: float = 60.0
    """Constrained: largest angle between any noisy and any novel camera position, seen from the origin."""
    phi1_deg: float = 60.0
    """Constrained: largest angle between the condition and a noisy camera's forward axis."""
    phi2_deg: float = 75.0
    """Constrained: largest angle between the condition and a novel camera's forward axis."""

    def rig(self, condition: Cameras, num_noisy: int) -> Cameras:
        """``[condition | N noisy]`` cameras (batch shape ``[1 + N]``) around a condition camera (batch shape ``[]``).

        Every noisy camera is the condition camera moved by a rotation about an axis through the world origin, so
        it keeps the condition camera's distance, roll relative to the object and intrinsics: for a camera on a
        model's orbit rig the noisy views are that rig's, and for a dataset's camera they match how its ground
        truth was rendered.
        """
        c2w = condition.c2w.double()
        rotations = self.rotations(c2w[:3, 3], num_noisy)
        turned = transform_world(c2w.expand(len(rotations), 4, 4), rotations, torch.zeros(3, dtype=c2w.dtype), 1.0)
        return Cameras(turned.to(condition.c2w.dtype), condition.K.expand(num_noisy + 1, 3, 3).clone(),
                       condition.width, condition.height)

    def rig_angle_deg(self) -> float:
        """Constrained mode: the angle between the condition and each noisy camera of the inference rig, the median
        angle of a point drawn uniformly (by area) within ``theta1`` of the condition: cos a = (1 + cos theta1)/2."""
        return math.degrees(math.acos((1 + math.cos(math.radians(self.theta1_deg))) / 2))

    def rotations(self, center: Float[Tensor, " 3"], num_noisy: int) -> Float[Tensor, "v 3 3"]:
        """The world rotations that take the condition camera (centre ``center``) to each view of its rig, the
        identity first (float64). In the orbit and random modes they do not depend on ``center``."""
        center = center.double()
        return torch.stack([self._rotation(center, k, num_noisy) for k in range(num_noisy + 1)])

    def _rotation(self, center: Float[Tensor, " 3"], k: int, num_noisy: int) -> Float[Tensor, "3 3"]:
        if k == 0:
            return torch.eye(3, dtype=center.dtype)
        up = torch.tensor(WORLD_UP, dtype=center.dtype)
        if self.mode in ("orbit", "random"):
            return _axis_angle_rotation(up, 2 * math.pi * k / (num_noisy + 1))
        # The point at the rig angle from the condition camera, along an evenly spread bearing on the view sphere.
        position = torch.nn.functional.normalize(center, dim=0)
        towards_azimuth = _towards_azimuth(position)
        towards_up = torch.linalg.cross(position, towards_azimuth, dim=0)
        bearing = 2 * math.pi * (k - 1) / num_noisy
        angle = math.radians(self.rig_angle_deg())
        target = math.cos(angle) * position + math.sin(angle) * (math.cos(bearing) * towards_azimuth
                                                                 + math.sin(bearing) * towards_up)
        # Reach it as an orbit camera would: turn about the up axis, then tilt about the camera's (horizontal)
        # right axis. Both keep a roll-free camera roll-free, as the training cameras are.
        turn = _axis_angle_rotation(up, _azimuth(target) - _azimuth(position))
        tilt = _axis_angle_rotation(_towards_azimuth(turn @ position), _elevation(position) - _elevation(target))
        return tilt @ turn

    def describe(self) -> str:
        """The layout in words, for logs and reports."""
        if self.mode == "constrained":
            return (f"constrained (theta1 {self.theta1_deg:g}, theta2 {self.theta2_deg:g}, phi1 {self.phi1_deg:g}, "
                    f"phi2 {self.phi2_deg:g} degrees; inference rig at {self.rig_angle_deg():.1f} degrees)")
        if self.mode == "random":
            return ("random (training draws the views at random; inference places the noisy views at 360k/(N+1) "
                    "degrees of azimuth from the condition view)")
        return "orbit (noisy views at 360k/(N+1) degrees of azimuth from the condition view)"

    def differs_from(self, other: ViewLayout) -> bool:
        """Whether two layouts place views differently (angles matter only in the constrained mode)."""
        if self.mode != other.mode:
            return True
        return self.mode == "constrained" and self != other


def _towards_azimuth(position: Float[Tensor, " 3"]) -> Float[Tensor, " 3"]:
    """The unit direction of increasing azimuth at a point of the view sphere (any horizontal one at the poles)."""
    up = torch.tensor(WORLD_UP, dtype=position.dtype)
    direction = torch.linalg.cross(up, position, dim=0)
    if direction.norm() < 1e-9:
        direction = torch.tensor([0.0, 1.0, 0.0], dtype=position.dtype)
    return torch.nn.functional.normalize(direction, dim=0)


def _axis_angle_rotation(axis: Float[Tensor, " 3"], angle: float) -> Float[Tensor, "3 3"]:
    """Rotation by ``angle`` radians about ``axis``."""
    return rotation_exp(torch.nn.functional.normalize(axis, dim=0) * angle)


def _azimuth(point: Float[Tensor, " 3"]) -> float:
    return math.atan2(float(point[1]), float(point[0]))


def _elevation(point: Float[Tensor, " 3"]) -> float:
    return math.atan2(float(point[2]), math.hypot(float(point[0]), float(point[1])))


SCENE_SELECTION = ViewLayout(mode="random")
"""How training draws a scene sample's frames: 1 + N + M distinct frames of the clip at random, as the official
scene loader does (a clip never holds an object orbit rig). A scene's noisy views at inference come from a
trajectory or camera file, not from a layout (``inference/scene.py``)."""

