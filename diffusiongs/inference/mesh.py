"""Gaussians -> a coloured triangle mesh: TSDF fusion of depth and colour rendered around the object, marching cubes.

The official exporter (reference §7) thresholds an opacity-weighted Gaussian density on a 256^3 grid at 0.005,
after dropping Gaussians of opacity <= 0.02 and outside [-0.91, 0.91]^3. This module keeps that filter (with the
box at the [-1, 1]^3 that this project's objects fill, docs/conventions.md) but fuses rendered depth instead of
summing densities, for two reasons:

* the surface is where the renders put it, and the renders are what the model is trained to get right; a density
  level set sits a few standard deviations outside large Gaussians (those of the demo model reach 0.13 world units);
* the cost does not grow with the Gaussians' size: in a prototype of the density method (2026-11-29, two of the
  demo model's held-out results), evaluating each Gaussian out to where it falls below 1 % of that threshold took
  0.6-1.2 billion evaluations at 128^3 (30-170 s on the shared 2-core machine), and its level set at 0.005 scored
  Chamfer 0.090 and 0.131 where this fusion scores 0.072 and 0.079 (docs/RESULTS.md has the fusion's full table).

Fusion (KinectFusion-style, voxels in the truncated band only): every grid node is projected into every render;
a pixel of rendered opacity >= ``min_alpha`` is surface at its expected depth, any other pixel is empty space
along its whole ray. Nodes never seen in front of a surface (the inside) count as inside. The volume is closed by
a layer of empty space, so the mesh is watertight where the object touches the box. Vertex colours are the
un-premultiplied rendered colours averaged over the renders that see the surface there.

Libraries: marching cubes is scikit-image's, the GLB is written by trimesh (extra ``mesh``). Open3D's TSDF volume
would do the fusion, but its wheel is 401 MB (0.20.0, pulling dash, flask and ipywidgets) and works on CPU arrays;
the fusion here is a few lines of torch that run on whichever device holds the renders.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor

from diffusiongs.data.store import atomic_write_bytes
from diffusiongs.errors import InputError
from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras, intrinsics_from_fov, look_at
from diffusiongs.metrics.geometry import sample_surface_points
from diffusiongs.render import RenderConfig, render

T = TypeVar("T")

MISSING_EXTRA = "mesh export needs scikit-image and trimesh: pip install 'diffusiongs[mesh]'"

GLTF_FROM_WORLD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""glTF's frame is y up; ours is z up: (x, y, z)_glTF = (x, z, -y)_world, a rotation about x."""

MATTE = {"pbrMetallicRoughness": {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": 0.0,
                                  "roughnessFactor": 1.0}}
"""The GLB's material: the vertex colours on a rough dielectric (glTF's default material is fully metallic)."""

FALLBACK_COLOR = 0.5
"""Vertex colour where no render saw the surface (grey)."""

VOXEL_PAIRS = 1 << 23
"""(grid node, render) pairs fused at once: a few hundred MB of temporaries."""


@dataclass(frozen=True)
class MeshConfig:
    """How Gaussians become a mesh (see the module docstring for the method)."""

    resolution: int = 128
    """Grid nodes per side of the fusion volume (spacing 2 * bound / (resolution - 1))."""
    bound: float = 1.0
    """The volume is [-bound, bound]^3; Gaussians whose centre lies outside are dropped first (official exporter:
    0.91, for objects smaller than the [-1, 1]^3 that ours fill)."""
    min_opacity: float = 0.02
    """Gaussians at or below this opacity are dropped first (the official exporter's threshold)."""
    views: int = 24
    """Renders fused, from directions spread evenly over the sphere (a Fibonacci lattice)."""
    image_size: int = 192
    """Side of each render in pixels."""
    fov_deg: float = 50.0
    """Field of view of the renders; their distance is chosen so that the whole volume is in view."""
    truncation_voxels: float = 3.0
    """Half-width of the signed-distance band, in grid spacings."""
    min_alpha: float = 0.5
    """Pixels of lower rendered opacity count as empty space, the others as surface at their expected depth."""
    min_component_fraction: float = 0.01
    """Connected pieces with fewer faces than this fraction of all faces are dropped (floaters); 0 keeps all."""

    def __post_init__(self) -> None:
        if self.resolution < 2 or self.views < 1 or self.image_size < 1:
            raise InputError(f"mesh: resolution ({self.resolution}) must be >= 2, views ({self.views}) and "
                             f"image_size ({self.image_size}) >= 1")
        if not (self.bound > 0 and 0 < self.fov_deg < 180 and self.truncation_voxels > 0):
            raise InputError("mesh: bound, truncation_voxels and fov_deg (below 180) must be positive")

    @property
    def spacing(self) -> float:
        return 2 * self.bound / (self.resolution - 1)


@dataclass(frozen=True)
class ColoredMesh:
    """A triangle mesh in the object's world frame (z up).

    Attributes:
        vertices: positions, ``[V, 3]`` float32.
        faces: vertex indices, counter-clockwise seen from outside, ``[F, 3]`` int64.
        colors: per-vertex RGB, ``[V, 3]`` uint8.
    """

    vertices: Float[np.ndarray, "vertex 3"]
    faces: Int[np.ndarray, "face 3"]
    colors: UInt8[np.ndarray, "vertex 3"]

    @property
    def num_faces(self) -> int:
        return len(self.faces)


def describe_mesh_config(cfg: MeshConfig) -> str:
    """One line for reports."""
    return (f"TSDF fusion of {cfg.views} renders ({cfg.image_size} px, opacity >= {cfg.min_alpha} is surface) on a "
            f"{cfg.resolution}^3 grid over [-{cfg.bound}, {cfg.bound}]^3, band {cfg.truncation_voxels} voxels, "
            f"marching cubes; Gaussians of opacity <= {cfg.min_opacity} dropped first, pieces under "
            f"{cfg.min_component_fraction:.0%} of the faces dropped after")


def require_mesh_extra() -> None:
    """Raise an :class:`InputError` naming the extra to install when the mesh libraries are missing."""
    try:
        import skimage.measure  # noqa: F401
        import trimesh  # noqa: F401
    except ImportError:
        raise InputError(MISSING_EXTRA) from None


def sphere_cameras(num_views: int, distance: float, fov_deg: float, resolution: int,
                   device: torch.device | str | None = None) -> Cameras:
    """``num_views`` cameras looking at the origin from directions spread evenly over the sphere: a Fibonacci
    lattice (equal-area bands in z, azimuths advancing by the golden angle)."""
    k = torch.arange(num_views, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / num_views
    azimuth = k * math.pi * (3 - math.sqrt(5))
    ring = torch.sqrt(1 - z * z)
    eye = distance * torch.stack([ring * torch.cos(azimuth), ring * torch.sin(azimuth), z], dim=-1)
    K = intrinsics_from_fov(fov_deg, resolution, batch_shape=(num_views,))
    return Cameras(look_at(eye).float(), K, resolution, resolution).to(device)


def render_views(gaussians: Gaussians, cfg: MeshConfig, render_cfg: RenderConfig = RenderConfig()
                 ) -> tuple[Cameras, Float[Tensor, "v 3 h w"], Float[Tensor, "v h w"], Float[Tensor, "v h w"]]:
    """The fusion's renders: cameras, un-premultiplied colour, opacity and expected depth."""
    # The volume's circumscribed sphere (radius sqrt(3) bound) just fits the field of view.
    distance = math.sqrt(3) * cfg.bound / math.sin(math.radians(cfg.fov_deg) / 2)
    cameras = sphere_cameras(cfg.views, distance, cfg.fov_deg, cfg.image_size, gaussians.device)
    out = render(gaussians[None], cameras.reshape(1, -1), torch.zeros(3, device=gaussians.device), render_cfg)
    alpha = out.alpha[0, :, 0]
    # On a black background a pixel holds the weighted mean of the Gaussians' colours times its alpha.
    rgb = out.rgb[0] / alpha.clamp_min(1e-6)[:, None]
    return cameras, rgb.clamp(0, 1), alpha, out.depth[0, :, 0]


def grid_points(cfg: MeshConfig, device: torch.device | str | None = None) -> Float[Tensor, "r r r 3"]:
    """The volume's nodes, indexed ``[i, j, k]`` along x, y, z."""
    axis = torch.linspace(-cfg.bound, cfg.bound, cfg.resolution, device=device)
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), dim=-1)


@torch.no_grad()
def fuse_tsdf(cameras: Cameras, rgb: Float[Tensor, "v 3 h w"], alpha: Float[Tensor, "v h w"],
              depth: Float[Tensor, "v h w"], cfg: MeshConfig
              ) -> tuple[Float[Tensor, "r r r"], Float[Tensor, "r r r 3"], Float[Tensor, "r r r"]]:
    """Truncated signed distance in [-1, 1] (negative inside), summed colour and colour sample count per node."""
    truncation = cfg.truncation_voxels * cfg.spacing
    num_views, height, width = alpha.shape
    renders = torch.cat([alpha[:, None], depth[:, None], rgb], dim=1)
    # One projection per render straight to grid_sample's coordinates, where -1 and 1 are the outer edges of the
    # first and last pixel: (u, v) in pixels -> (2 u / w - 1, 2 v / h - 1).
    to_grid = torch.tensor([[2 / width, 0, -1], [0, 2 / height, -1], [0, 0, 1]], dtype=rgb.dtype, device=rgb.device)
    projection = to_grid @ cameras.K @ cameras.w2c()[:, :3]
    tsdf, color_sum, color_count = [], [], []
    for points in grid_points(cfg, rgb.device).reshape(-1, 3).split(max(1, VOXEL_PAIRS // num_views)):
        projected = projection[:, :, :3] @ points.T + projection[:, :, 3:]
        z = projected[:, 2]
        grid = (projected[:, :2] / z.clamp_min(1e-6)[:, None]).transpose(1, 2)
        seen = (z > 0) & (grid >= -1).all(-1) & (grid < 1).all(-1)
        sample = torch.nn.functional.grid_sample(renders, grid[:, None], mode="nearest", align_corners=False)[:, :, 0]
        surface = sample[:, 0] >= cfg.min_alpha
        sdf = torch.where(surface, sample[:, 1] - z, truncation)
        # Nodes more than the band behind the surface are hidden from that view: no update.
        update = seen & (sdf > -truncation)
        count = update.sum(0)
        # Nodes that no view saw in front of (or on) a surface are inside the object.
        tsdf.append(torch.where(count > 0, torch.where(update, sdf.clamp(max=truncation), 0).sum(0)
                                / (truncation * count.clamp_min(1)), -1.0))
        near = update & surface & (sdf < truncation)
        color_sum.append((sample[:, 2:] * near[:, None]).sum(0).T)
        color_count.append(near.sum(0).to(rgb.dtype))
    shape = (cfg.resolution,) * 3
    return (torch.cat(tsdf).reshape(shape), torch.cat(color_sum).reshape(*shape, 3),
            torch.cat(color_count).reshape(shape))


def marching_cubes(tsdf: Float[np.ndarray, "r r r"], cfg: MeshConfig
                   ) -> tuple[Float[np.ndarray, "vertex 3"], Int[np.ndarray, "face 3"]]:
    """The zero level set in world coordinates, closed at the box by a layer of empty space."""
    from skimage.measure import marching_cubes as lewiner

    padded = np.pad(tsdf, 1, constant_values=1.0)
    if padded.min() >= 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    # With the outside positive, skimage's "descent" winds the faces counter-clockwise seen from outside (the mesh's
    # signed volume is positive: tests/test_mesh.py).
    vertices, faces, _, _ = lewiner(padded, level=0.0, spacing=(cfg.spacing,) * 3, gradient_direction="descent")
    return (vertices - cfg.spacing - cfg.bound).astype(np.float32), faces.astype(np.int64)


def vertex_colors(vertices: Float[np.ndarray, "vertex 3"], color_sum: Float[np.ndarray, "r r r 3"],
                  color_count: Float[np.ndarray, "r r r"], cfg: MeshConfig) -> UInt8[np.ndarray, "vertex 3"]:
    """Trilinear interpolation of the summed colours and of their counts, then their ratio."""
    from scipy.ndimage import map_coordinates

    coords = ((vertices + cfg.bound) / cfg.spacing).T
    count = map_coordinates(color_count, coords, order=1, mode="nearest")
    total = np.stack([map_coordinates(color_sum[..., c], coords, order=1, mode="nearest") for c in range(3)], -1)
    colors = np.where(count[:, None] > 0, total / np.maximum(count, 1e-12)[:, None], FALLBACK_COLOR)
    return (np.clip(colors, 0, 1) * 255).round().astype(np.uint8)


def drop_small_components(mesh: ColoredMesh, min_fraction: float) -> ColoredMesh:
    """Keep the connected pieces with at least ``min_fraction`` of the faces; vertices no face uses are removed."""
    import trimesh

    if min_fraction <= 0 or mesh.num_faces == 0:
        return mesh
    shape = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    labels = trimesh.graph.connected_component_labels(shape.face_adjacency, node_count=mesh.num_faces)
    sizes = np.bincount(labels)
    keep_faces = sizes[labels] >= min_fraction * mesh.num_faces
    used = np.zeros(len(mesh.vertices), bool)
    used[mesh.faces[keep_faces].ravel()] = True
    new_index = np.cumsum(used) - 1
    return ColoredMesh(mesh.vertices[used], new_index[mesh.faces[keep_faces]], mesh.colors[used])


class _StageClock:
    """Seconds per stage into ``timings`` (the device synchronised around each), or nothing without it."""

    def __init__(self, timings: dict[str, float] | None, device: torch.device):
        self.timings, self.device = timings, device

    def __call__(self, name: str, fn: Callable[[], T]) -> T:
        if self.timings is None:
            return fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        value = fn()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] = time.perf_counter() - start
        return value


@torch.no_grad()
def extract_mesh(gaussians: Gaussians, cfg: MeshConfig = MeshConfig(), render_cfg: RenderConfig = RenderConfig(),
                 timings: dict[str, float] | None = None) -> ColoredMesh:
    """A coloured mesh of unbatched Gaussians (on any device; the fusion runs there, marching cubes on the CPU).

    Gaussians that are too faint or outside the box are dropped first; without any left the mesh is empty.
    ``timings``, when given, receives the seconds of each stage (render, fuse, marching_cubes, colors, components).
    """
    require_mesh_extra()
    keep = (gaussians.opacities > cfg.min_opacity) & (gaussians.means.abs() <= cfg.bound).all(-1)
    kept = gaussians.select(keep)
    if kept.num_gaussians == 0:
        return ColoredMesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8))
    stage = _StageClock(timings, gaussians.device)
    cameras, rgb, alpha, depth = stage("render", lambda: render_views(kept.float(), cfg, render_cfg))
    tsdf, color_sum, color_count = stage(
        "fuse", lambda: [t.cpu().numpy() for t in fuse_tsdf(cameras, rgb, alpha, depth, cfg)])
    vertices, faces = stage("marching_cubes", lambda: marching_cubes(tsdf, cfg))
    colors = stage("colors", lambda: vertex_colors(vertices, color_sum, color_count, cfg))
    return stage("components", lambda: drop_small_components(ColoredMesh(vertices, faces, colors),
                                                             cfg.min_component_fraction))


def sample_mesh_points(mesh: ColoredMesh, count: int, generator: torch.Generator | None = None
                       ) -> Float[Tensor, "n 3"]:
    """``count`` points uniformly distributed over the mesh's area (float32, CPU)."""
    return sample_surface_points(torch.from_numpy(mesh.vertices).double(), torch.from_numpy(mesh.faces), count,
                                 generator).float()


def srgb_to_linear(colors: UInt8[np.ndarray, "n c"]) -> UInt8[np.ndarray, "n c"]:
    """8-bit sRGB -> 8-bit linear (IEC 61966-2-1): glTF vertex colours are linear, our images sRGB."""
    c = colors / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return (linear * 255).round().astype(np.uint8)


def save_glb(mesh: ColoredMesh, path: str | Path) -> Path:
    """Write a binary glTF with per-vertex colours (COLOR_0, linear as glTF specifies), in glTF's y-up frame, on a
    matte material; written atomically."""
    require_mesh_extra()
    import trimesh

    alpha = np.full((len(mesh.colors), 1), 255, np.uint8)
    shape = trimesh.Trimesh(mesh.vertices @ GLTF_FROM_WORLD.T, mesh.faces,
                            vertex_colors=np.concatenate([srgb_to_linear(mesh.colors), alpha], axis=1), process=False)
    path = Path(path)
    atomic_write_bytes(path, shape.export(file_type="glb", tree_postprocessor=_use_matte_material))
    return path


def _use_matte_material(tree: dict) -> None:
    """trimesh's hook on the glTF JSON before it is written: give every primitive the :data:`MATTE` material."""
    tree["materials"] = [MATTE]
    for shape in tree.get("meshes", []):
        for primitive in shape["primitives"]:
            primitive["material"] = 0


def write_mesh(gaussians: Gaussians, path: str | Path, cfg: MeshConfig = MeshConfig(),
               render_cfg: RenderConfig = RenderConfig()) -> ColoredMesh:
    """Extract the mesh of unbatched Gaussians and write it as GLB (an empty scene when nothing passes the filter);
    returns the mesh."""
    mesh = extract_mesh(gaussians, cfg, render_cfg)
    save_glb(mesh, path)
    return mesh
