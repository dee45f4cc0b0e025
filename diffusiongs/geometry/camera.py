"""Cameras: the one place that knows the camera convention (see docs/conventions.md).

Every camera in this package is an OpenCV pinhole camera:
  * ``c2w`` is camera-to-world, [R | t] with the camera's x axis to the right, y down, z forward;
  * ``K`` holds intrinsics in pixels, ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``; pixel (i, j) covers
    [j, j+1) x [i, i+1), so its centre is at (j + 0.5, i + 0.5);
  * the world is right-handed with **z up**.
Conversions from OpenGL/Blender cameras happen here and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

WORLD_UP = (0.0, 0.0, 1.0)
"""The world's up axis: z (as in Blender and the official DiffusionGS code)."""

_OPENGL_FROM_OPENCV = (1.0, -1.0, -1.0, 1.0)
"""diag() that flips a camera's y and z axes: OpenGL/Blender (y up, looking -z) <-> OpenCV (y down, +z)."""


@dataclass(frozen=True)
class Cameras:
    """A batch of OpenCV pinhole cameras that share one image size.

    Attributes:
        c2w: camera-to-world transforms, ``[*batch, 4, 4]``.
        K: intrinsics in pixels, ``[*batch, 3, 3]``.
        width, height: image size in pixels.
    """

    c2w: Float[Tensor, "*batch 4 4"]
    K: Float[Tensor, "*batch 3 3"]
    width: int
    height: int

    def __post_init__(self) -> None:
        if self.c2w.shape[-2:] != (4, 4) or self.K.shape[-2:] != (3, 3):
            raise ValueError(f"Cameras: expected c2w [...,4,4] and K [...,3,3], got {tuple(self.c2w.shape)} "
                             f"and {tuple(self.K.shape)}")
        if self.c2w.shape[:-2] != self.K.shape[:-2]:
            raise ValueError(f"Cameras: batch shapes differ: c2w {tuple(self.c2w.shape[:-2])}, "
                             f"K {tuple(self.K.shape[:-2])}")

    @property
    def batch_shape(self) -> torch.Size:
        return self.c2w.shape[:-2]

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def centers(self) -> Float[Tensor, "*batch 3"]:
        """Camera centres in world coordinates."""
        return self.c2w[..., :3, 3]

    @property
    def forward(self) -> Float[Tensor, "*batch 3"]:
        """Unit viewing directions (the camera z axis) in world coordinates."""
        return self.c2w[..., :3, 2]

    def w2c(self) -> Float[Tensor, "*batch 4 4"]:
        """World-to-camera transforms (gsplat's ``viewmats``), computed in closed form for rigid c2w."""
        rot = self.c2w[..., :3, :3]
        trans = self.c2w[..., :3, 3:]
        rot_t = rot.transpose(-1, -2)
        top = torch.cat([rot_t, -rot_t @ trans], dim=-1)
        bottom = torch.zeros_like(self.c2w[..., 3:, :])
        bottom[..., 3] = 1.0
        return torch.cat([top, bottom], dim=-2)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> Cameras:
        return replace(self, c2w=self.c2w.to(device=device, dtype=dtype), K=self.K.to(device=device, dtype=dtype))

    def __getitem__(self, index) -> Cameras:
        return replace(self, c2w=self.c2w[index], K=self.K[index])

    def reshape(self, *shape: int) -> Cameras:
        return replace(self, c2w=self.c2w.reshape(*shape, 4, 4), K=self.K.reshape(*shape, 3, 3))

    def resized(self, width: int, height: int) -> Cameras:
        """The same cameras for an image resampled to ``width`` x ``height`` (the same field of view)."""
        scale = torch.tensor([width / self.width, height / self.height, 1.0], dtype=self.K.dtype, device=self.device)
        return replace(self, K=self.K * scale[:, None], width=width, height=height)

    @staticmethod
    def cat(cameras: list[Cameras], dim: int = 0) -> Cameras:
        first = cameras[0]
        if any((c.width, c.height) != (first.width, first.height) for c in cameras):
            raise ValueError("Cameras.cat: all cameras must share one image size")
        return Cameras(torch.cat([c.c2w for c in cameras], dim), torch.cat([c.K for c in cameras], dim),
                       first.width, first.height)


def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a field of view of ``fov_deg`` across ``size`` pixels."""
    return 0.5 * size / math.tan(math.radians(fov_deg) / 2)


def intrinsics_from_fov(fov_deg: float, width: int, height: int | None = None,
                        batch_shape: tuple[int, ...] = (), dtype: torch.dtype = torch.float32,
                        device: torch.device | str | None = None) -> Float[Tensor, "*batch 3 3"]:
    """Pinhole intrinsics with square pixels, the principal point at the image centre and ``fov_deg``
    measured across the width."""
    height = width if height is None else height
    f = focal_from_fov(fov_deg, width)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    return K.expand(*batch_shape, 3, 3).clone()


def look_at(eye: Float[Tensor, "*batch 3"], target: Float[Tensor, "*batch 3"] | None = None,
            up: tuple[float, float, float] = WORLD_UP) -> Float[Tensor, "*batch 4 4"]:
    """OpenCV camera-to-world matrices for cameras at ``eye`` looking at ``target`` (default: the origin).

    x = forward x up (right), y = forward x right (down), z = forward. A camera looking straight along ``up``
    falls back to the world x axis as its up vector.
    """
    target = torch.zeros_like(eye) if target is None else target.to(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    up_vec = torch.tensor(up, dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.linalg.cross(forward, up_vec, dim=-1)
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    fallback = torch.linalg.cross(forward, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device)
                                  .expand_as(forward), dim=-1)
    right = torch.nn.functional.normalize(torch.where(degenerate, fallback, right), dim=-1)
    down = torch.linalg.cross(forward, right, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = down
    c2w[..., :3, 2] = forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def spherical_to_cartesian(azimuth_deg: Tensor, elevation_deg: Tensor, radius: Tensor | float) -> Tensor:
    """Points at the given azimuth (from +x towards +y), elevation (above the xy plane) and radius, z up."""
    az = torch.deg2rad(azimuth_deg)
    el = torch.deg2rad(elevation_deg)
    return torch.stack([torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], -1) \
        * torch.as_tensor(radius, dtype=az.dtype)[..., None]


def orbit_cameras(num_views: int, radius: float, elevation_deg: float, fov_deg: float, resolution: int,
                  start_azimuth_deg: float = 0.0, dtype: torch.dtype = torch.float32) -> Cameras:
    """``num_views`` cameras evenly spaced in azimuth on a circle around the origin, looking at it."""
    azimuth = start_azimuth_deg + torch.arange(num_views, dtype=torch.float64) * (360.0 / num_views)
    eye = spherical_to_cartesian(azimuth, torch.full_like(azimuth, elevation_deg), radius)
    return Cameras(look_at(eye).to(dtype), intrinsics_from_fov(fov_deg, resolution, batch_shape=(num_views,),
                                                               dtype=dtype), resolution, resolution)


def random_sphere_cameras(num_views: int, radius: float | tuple[float, float], fov_deg: float, resolution: int,
                          generator: torch.Generator | None = None,
                          elevation_range_deg: tuple[float, float] = (-90.0, 90.0),
                          dtype: torch.dtype = torch.float32) -> Cameras:
    """Cameras at points drawn uniformly (by area) on a sphere band, looking at the origin.

    Args:
        radius: a fixed distance, or a (min, max) range drawn uniformly.
        elevation_range_deg: the band of elevations to draw from (the whole sphere by default).
    """
    lo, hi = (math.sin(math.radians(e)) for e in elevation_range_deg)
    u = torch.rand(num_views, generator=generator, dtype=torch.float64)
    elevation = torch.rad2deg(torch.asin(lo + (hi - lo) * u))
    azimuth = torch.rand(num_views, generator=generator, dtype=torch.float64) * 360.0
    if isinstance(radius, tuple):
        dist = radius[0] + (radius[1] - radius[0]) * torch.rand(num_views, generator=generator, dtype=torch.float64)
    else:
        dist = torch.full((num_views,), float(radius), dtype=torch.float64)
    eye = spherical_to_cartesian(azimuth, elevation, dist)
    return Cameras(look_at(eye).to(dtype), intrinsics_from_fov(fov_deg, resolution, batch_shape=(num_views,),
                                                               dtype=dtype), resolution, resolution)


def ring_cameras(num_rings: int, views_per_ring: int, radius: float, fov_deg: float, resolution: int,
                 generator: torch.Generator | None = None,
                 elevation_range_deg: tuple[float, float] = (-90.0, 90.0),
                 dtype: torch.dtype = torch.float32) -> Cameras:
    """Cameras on ``num_rings`` rings of ``views_per_ring`` evenly spaced azimuths, looking at the origin (the layout
    of G-Objaverse's renders). Ring r's elevation is drawn uniformly by area within the r-th of ``num_rings`` equal
    shares (by area) of the elevation band, and each ring starts at a random azimuth, so that a dataset covers the
    band while every ring holds exact orbit rigs (views 360 k / n degrees apart, n dividing ``views_per_ring``)."""
    lo, hi = (math.sin(math.radians(e)) for e in elevation_range_deg)
    share = (torch.arange(num_rings, dtype=torch.float64) + torch.rand(num_rings, generator=generator,
                                                                       dtype=torch.float64)) / num_rings
    elevation = torch.rad2deg(torch.asin(lo + (hi - lo) * share))
    start = torch.rand(num_rings, generator=generator, dtype=torch.float64) * 360.0
    azimuth = start[:, None] + torch.arange(views_per_ring, dtype=torch.float64) * (360.0 / views_per_ring)
    eye = spherical_to_cartesian(azimuth.reshape(-1), elevation.repeat_interleave(views_per_ring), radius)
    count = num_rings * views_per_ring
    return Cameras(look_at(eye).to(dtype), intrinsics_from_fov(fov_deg, resolution, batch_shape=(count,),
                                                               dtype=dtype), resolution, resolution)


def opengl_to_opencv(c2w_gl: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Camera-to-world in the OpenGL/Blender camera convention (x right, y up, looking -z) -> OpenCV."""
    return c2w_gl * c2w_gl.new_tensor(_OPENGL_FROM_OPENCV)


def opencv_to_opengl(c2w_cv: Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Inverse of :func:`opengl_to_opencv` (the flip is its own inverse)."""
    return c2w_cv * c2w_cv.new_tensor(_OPENGL_FROM_OPENCV)


def angle_between_deg(a: Float[Tensor, "*batch 3"], b: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch"]:
    """Angle in degrees between two (not necessarily unit) vectors."""
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos))


def gl_clip_from_camera(K: Float[Tensor, "*batch 3 3"], width: int, height: int, near: float,
                        far: float) -> Float[Tensor, "*batch 4 4"]:
    """OpenGL clip coordinates from **OpenCV** camera coordinates (x right, y down, z forward).

    A rasteriser using it puts pixel ``(row i, column j)`` of this package's convention at window position
    ``(j, i)``: ``glReadPixels`` then returns the image top row first, with no flip. z in [near, far] maps to
    normalised depth [-1, 1]; clip w is the camera z.
    """
    fx, fy, cx, cy = K[..., 0, 0], K[..., 1, 1], K[..., 0, 2], K[..., 1, 2]
    clip = torch.zeros(*K.shape[:-2], 4, 4, dtype=K.dtype, device=K.device)
    clip[..., 0, 0] = 2 * fx / width
    clip[..., 0, 2] = 2 * cx / width - 1
    clip[..., 1, 1] = 2 * fy / height
    clip[..., 1, 2] = 2 * cy / height - 1
    clip[..., 2, 2] = (far + near) / (far - near)
    clip[..., 2, 3] = -2 * far * near / (far - near)
    clip[..., 3, 2] = 1.0
    return clip


@dataclass(frozen=True)
class OrbitRig:
    """Cameras on a circle around the origin, looking at it: the object inference template (condition view at
    azimuth 0, the N noisy views at equal azimuth steps, as in the official 4-views-90-degrees-apart layout)."""

    radius: float = 3.0
    """Distance from the object centre (the official norm radius)."""
    elevation_deg: float = 20.0
    """Height of the circle above the xy plane, in degrees as seen from the origin."""
    fov_deg: float = 50.0
    """Horizontal field of view (the paper renders its training views at 50 degrees)."""

    def cameras(self, num_views: int, resolution: int, start_azimuth_deg: float = 0.0) -> Cameras:
        return orbit_cameras(num_views, self.radius, self.elevation_deg, self.fov_deg, resolution, start_azimuth_deg)


def transform_world(c2w: Float[Tensor, "*batch 4 4"], rotation: Float[Tensor, "3 3"], translation: Float[Tensor, " 3"],
                    scale: float) -> Float[Tensor, "*batch 4 4"]:
    """Cameras after the world moves by ``x -> scale * (rotation @ x + translation)`` (a similarity transform)."""
    rotation = rotation.to(c2w)
    out = c2w.clone()
    out[..., :3, :3] = rotation @ c2w[..., :3, :3]
    out[..., :3, 3] = scale * ((rotation @ c2w[..., :3, 3:])[..., 0] + translation.to(c2w))
    return out
