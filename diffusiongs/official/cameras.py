"""The cameras the official object model was trained and sampled with, and how they relate to our ``OrbitRig``.

The official object inference places the condition view and the 3 noisy views on ``camera_template.pt``
(``gen_c2w[:, 0]`` and ``gen_c2w[:, 1:4]``, OpenCV camera-to-world, with ``gen_fxfycxcys`` in pixels). Its training
cameras (reference §5.2) come from kiui orbit cameras in a y-up OpenGL world, converted to OpenCV cameras and then
mapped into the official z-up world by swapping the y and z rows. That swap is a reflection: the official cameras'
rotations have determinant -1 (right x down = -forward), so no proper ``OrbitRig`` camera equals them.

Instead of feeding the model such cameras, the converter folds a fixed orthogonal map A (official = A ours) into the
converted weights (``diffusiongs.official.frames``): our model, given our proper ``OrbitRig`` cameras, then computes
exactly the official function of the cameras A·rig, and returns the Gaussians mapped back by A^-1 into our
right-handed world. :func:`fit_camera_template` finds A and the rig for a template;
:func:`builtin_camera_template` rebuilds the training-time template when the official file is not at hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.errors import InputError
from diffusiongs.geometry import Cameras, OrbitRig, look_at
from diffusiongs.official.safe_load import read_torch_file

GOBJAVERSE_FOCAL_RATIO = 1422.222 / 1024
"""fx = fy = ratio x image side: the fixed intrinsics of the G-Objaverse renders the object model was trained on."""
OFFICIAL_RADIUS = 3.0
"""Distance of the training cameras from the object centre (``norm_radius``)."""
BUILTIN_ELEVATION_DEG = 17.5
"""Elevation of the built-in template: the middle of the G-Objaverse ring (5-30 degrees) that two thirds of the
official training rigs were drawn from; the other third came from a ring at -5..5 degrees."""
OFFICIAL_TEMPLATE_RESOLUTION = 512
"""The image side the released object model (and its template's intrinsics) works at."""
TEMPLATE_VIEWS = 4
"""The official pipeline uses the template's first 4 cameras: the condition view and 3 noisy views."""
C2W_KEYS = ("gen_c2w", "c2ws", "c2w")
INTRINSICS_KEYS = ("gen_fxfycxcys", "fxfycxcys", "fxfycxcy")
RIGID_ATOL = 1e-3
"""How far a template matrix may be from a rigid transform (bottom row, orthonormal rotation): float32 storage
slack, not a fitting tolerance."""

_GL_FROM_OFFICIAL_AXES = (0, 2, 1)
"""The official world is the y-up OpenGL world with its y and z rows swapped (``rt_matrix``); swapping back is the
same permutation."""


@dataclass(frozen=True)
class TemplateFit:
    """How an official camera template is reproduced from our side.

    Attributes:
        rig: the proper orbit rig in our world (condition view at azimuth 0).
        official_from_ours: A, orthogonal ``[3, 3]``: template camera i = A · rig camera i (possibly a reflection).
        max_deviation_deg: the largest deviation of a template camera from its rig counterpart, in degrees
            (orientation, or centre offset as an arc seen from the origin).
    """

    rig: OrbitRig
    official_from_ours: Float[Tensor, "3 3"]
    max_deviation_deg: float


def gobjaverse_intrinsics(resolution: int, views: int) -> Float[Tensor, "views 3 3"]:
    """The G-Objaverse pinhole intrinsics at ``resolution`` (centred principal point)."""
    f = GOBJAVERSE_FOCAL_RATIO * resolution
    K = torch.tensor([[f, 0.0, resolution / 2], [0.0, f, resolution / 2], [0.0, 0.0, 1.0]])
    return K.expand(views, 3, 3).clone()


def builtin_camera_template(resolution: int = OFFICIAL_TEMPLATE_RESOLUTION,
                            elevation_deg: float = BUILTIN_ELEVATION_DEG) -> Cameras:
    """The official object rig rebuilt from the training conventions (reference §5.2), in the official world.

    Views 90 degrees apart at ``elevation_deg`` and radius 3, azimuths relative to the condition view (kiui's
    azimuth 0 = +z of the y-up OpenGL world), OpenCV cameras looking at the origin, then the official y/z row swap.
    """
    el = math.radians(elevation_deg)
    azimuth = torch.arange(TEMPLATE_VIEWS, dtype=torch.float64) * (math.pi / 2)
    eye_gl = OFFICIAL_RADIUS * torch.stack([math.cos(el) * torch.sin(azimuth), torch.full_like(azimuth, math.sin(el)),
                                            math.cos(el) * torch.cos(azimuth)], dim=-1)
    c2w_gl = look_at(eye_gl, up=(0.0, 1.0, 0.0))  # OpenCV cameras in the y-up world
    c2w = c2w_gl[:, list(_GL_FROM_OFFICIAL_AXES) + [3]]
    return Cameras(c2w.float(), gobjaverse_intrinsics(resolution, TEMPLATE_VIEWS), resolution, resolution)


def _pick(obj: object, keys: tuple[str, ...]) -> Tensor | None:
    for key in keys:
        if isinstance(obj, dict) and key in obj:
            return obj[key]
    return None


def _as_views(value: object, trailing: tuple[int, ...], what: str, path: Path) -> Tensor:
    """``[1, ..., 1, V, *trailing]`` -> ``[V, *trailing]`` float64, refusing anything else."""
    if not isinstance(value, Tensor) or not value.is_floating_point():
        raise InputError(f"{path}: {what} must be a floating-point tensor, got {type(value).__name__}")
    lead = value.shape[:-len(trailing) - 1]
    if value.dim() < len(trailing) + 1 or tuple(value.shape[-len(trailing):]) != trailing or math.prod(lead) != 1:
        shape = "x".join(map(str, trailing))
        raise InputError(f"{path}: {what} must have shape [views, {shape}] (optionally with a leading batch of 1), "
                         f"got {list(value.shape)}")
    value = value.reshape(-1, *trailing).double()
    if not torch.isfinite(value).all():
        raise InputError(f"{path}: {what} holds non-finite values")
    if value.shape[0] < TEMPLATE_VIEWS:
        raise InputError(f"{path}: {what} has {value.shape[0]} views; the official pipeline needs {TEMPLATE_VIEWS}")
    return value


def _template_intrinsics(obj: object, views: int, path: Path) -> tuple[Tensor, int]:
    """Pixel intrinsics ``[views, 3, 3]`` and the image side (twice the principal point) of a template."""
    raw = _pick(obj, INTRINSICS_KEYS)
    if raw is None:
        return gobjaverse_intrinsics(OFFICIAL_TEMPLATE_RESOLUTION, views).double(), OFFICIAL_TEMPLATE_RESOLUTION
    fxfycxcy = _as_views(raw, (4,), "the intrinsics (fx, fy, cx, cy)", path)
    if fxfycxcy.shape[0] != views or (fxfycxcy <= 0).any():
        raise InputError(f"{path}: intrinsics must be positive and given for each of the {views} views")
    K = torch.zeros(views, 3, 3, dtype=torch.float64)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = fxfycxcy.unbind(-1)
    K[:, 2, 2] = 1.0
    return K, max(1, round(2 * fxfycxcy[0, 2].item()))


def load_camera_template(path: str | Path) -> Cameras:
    """Read ``camera_template.pt`` (without running code from it) as official-world cameras ``[views]``.

    Accepts a c2w tensor ``[views, 4, 4]`` (a leading batch of 1 allowed) or a dict holding one under
    ``gen_c2w``/``c2ws``/``c2w``, with optional ``[views, 4]`` pixel intrinsics (fx, fy, cx, cy) under
    ``gen_fxfycxcys``/``fxfycxcys``/``fxfycxcy``; without them the G-Objaverse intrinsics at 512 px are used.
    """
    path = Path(path)
    obj = read_torch_file(path)
    c2w = obj if isinstance(obj, Tensor) else _pick(obj, C2W_KEYS)
    if c2w is None:
        found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise InputError(f"{path}: no camera-to-world tensor (looked for {', '.join(C2W_KEYS)}; found {found})")
    c2w = _as_views(c2w, (4, 4), "the camera-to-world tensor", path)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=c2w.dtype)
    if not torch.allclose(c2w[:, 3], bottom.expand_as(c2w[:, 3]), atol=RIGID_ATOL):
        raise InputError(f"{path}: camera-to-world matrices must end with the row [0, 0, 0, 1]")
    rot = c2w[:, :3, :3]
    if not torch.allclose(rot.transpose(-1, -2) @ rot, torch.eye(3, dtype=rot.dtype).expand_as(rot), atol=RIGID_ATOL):
        raise InputError(f"{path}: camera rotations are not orthonormal (not rigid camera-to-world matrices)")
    K, size = _template_intrinsics(obj, c2w.shape[0], path)
    return Cameras(c2w.float(), K.float(), size, size)


def _rotation_angle_deg(a: Tensor, b: Tensor) -> Tensor:
    """Angle of the rotation between two orthonormal frames of the same handedness (b = a R)."""
    rel = a.transpose(-1, -2) @ b
    cos = ((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def _single_fov_deg(template: Cameras, tolerance: float, source: str) -> float:
    """The one horizontal field of view shared by all views, refusing non-square pixels or off-centre points."""
    K = template.K.double()
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    consistent = ((fx - fx[0]).abs().max() <= tolerance * fx[0] and (fy - fx).abs().max() <= tolerance * fx[0]
                  and (cx - cx[0]).abs().max() <= tolerance * cx[0] and (cy - cx).abs().max() <= tolerance * cx[0])
    if not consistent:
        raise InputError(f"{source}: the views must share one pinhole camera with square pixels and a centred "
                         f"principal point, got fx {fx.tolist()}, fy {fy.tolist()}, cx {cx.tolist()}, cy {cy.tolist()}")
    return math.degrees(2 * math.atan(cx[0].item() / fx[0].item()))


def _worst_deviation_deg(c2w: Tensor, expected: Tensor, radius: float) -> float:
    """Largest deviation between template cameras and expected ones, view 0 to view 0 and the others matched
    greedily as a set: orientation angle, or centre offset over the radius (the arc it spans, in degrees)."""

    def deviation(i: int, j: int) -> float:
        offset = math.degrees((c2w[i, :3, 3] - expected[j, :3, 3]).norm().item() / radius)
        return max(offset, _rotation_angle_deg(c2w[i, :3, :3], expected[j, :3, :3]).item())

    worst = deviation(0, 0)
    unmatched = set(range(1, len(c2w)))
    for i in range(1, len(c2w)):
        j = min(unmatched, key=lambda k: deviation(i, k))
        unmatched.remove(j)
        worst = max(worst, deviation(i, j))
    return worst


def fit_camera_template(template: Cameras, tolerance_deg: float = 0.5, source: str = "camera template"
                        ) -> TemplateFit:
    """The ``OrbitRig`` and world map A that reproduce a template's first 4 cameras (official = A · ours).

    A is the rotation about z taking our condition camera (azimuth 0) to the template's, composed with a
    reflection when the template's cameras are left-handed. The noisy views may come in any order (the network
    treats them as a set). Refused when a camera deviates from the fitted rig by more than ``tolerance_deg``
    (orientation, or centre offset as an arc seen from the origin); ``source`` names the template in errors.
    """
    views = template[:TEMPLATE_VIEWS]
    c2w = views.c2w.double()
    centers = c2w[:, :3, 3]
    handedness = torch.linalg.det(c2w[:, :3, :3]).sign()
    if not (handedness == handedness[0]).all():
        raise InputError(f"{source}: the cameras mix right- and left-handed rotations")
    radii = centers.norm(dim=-1)
    if not (radii > 0).all():
        raise InputError(f"{source}: a camera sits at the world origin; the template must orbit the object")
    elevation = torch.rad2deg(torch.asin((centers[:, 2] / radii).clamp(-1.0, 1.0)))
    # Rounded so that config.json reads 3.0 rather than 2.9999998 (float32 templates); 1e-6 changes no pixel.
    rig = OrbitRig(radius=round(radii.mean().item(), 6), elevation_deg=round(elevation.mean().item(), 6),
                   fov_deg=round(_single_fov_deg(views, 1e-3, source), 6))
    alpha = torch.atan2(centers[0, 1], centers[0, 0]).item()
    rotate_z = torch.tensor([[math.cos(alpha), -math.sin(alpha), 0.0], [math.sin(alpha), math.cos(alpha), 0.0],
                             [0.0, 0.0, 1.0]], dtype=torch.float64)
    official_from_ours = rotate_z @ torch.diag(torch.tensor([1.0, handedness[0].item(), 1.0], dtype=torch.float64))
    world = torch.eye(4, dtype=torch.float64)
    world[:3, :3] = official_from_ours
    expected = world @ rig.cameras(TEMPLATE_VIEWS, views.width).c2w.double()
    worst = _worst_deviation_deg(c2w, expected, rig.radius)
    if not worst <= tolerance_deg:  # also refuses NaN
        raise InputError(f"{source}: its cameras deviate by up to {worst:.2f} degrees from an orbit of "
                         f"{TEMPLATE_VIEWS} views 90 degrees apart at one elevation (radius {rig.radius:.3f}, "
                         f"elevation {rig.elevation_deg:.2f}); a model config can only hold such an orbit "
                         f"(allowed deviation {tolerance_deg} degrees)")
    return TemplateFit(rig=rig, official_from_ours=official_from_ours, max_deviation_deg=worst)
