"""Shared by ``data synth`` and ``data render``: object viewpoints, the per-process renderer, and rendering an
item into this project's format."""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from diffusiongs.data.gl import Lighting, MeshRenderer, RasterConfig, RenderMesh, configure_llvmpipe_threads
from diffusiongs.data.store import RenderedViews, build_manifest, write_item, write_surface
from diffusiongs.data.surface import DEFAULT_SURFACE_POINTS, visible_surface_samples
from diffusiongs.data.types import Domain
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras, orbit_cameras, random_sphere_cameras, ring_cameras


@dataclass(frozen=True)
class ObjectCameraConfig:
    """Where object views are taken from (all cameras look at the origin; objects fill [-1, 1]^3)."""

    views: int = 32
    """Training viewpoints per object (the paper renders 32)."""
    view_sampling: Literal["rings", "random"] = "rings"
    """``rings``: ``views / ring_views`` rings of evenly spaced azimuths at elevations spread over the band, so that
    orbit-layout training finds its exact rig (the condition and views 90, 180 and 270 degrees around it), as in
    G-Objaverse; ``random``: uniformly by area on the band (the paper's 32 random views)."""
    ring_views: int = 8
    """Rings: views per ring; a multiple of N + 1 (4 for the default N = 3) for exact orbit rigs."""
    orbit_views: int = 16
    """Evaluation viewpoints per object, evenly spaced in azimuth on one orbit (view group "eval")."""
    orbit_elevation_deg: float = 20.0
    """Elevation of the evaluation orbit."""
    fov_deg: float = 50.0
    """Horizontal (= vertical) field of view (the paper's 50 degrees)."""
    radius: float = 3.0
    """Camera distance from the origin (the official code's norm_radius). At 50 degrees the view spans +-1.40 at the
    origin, so objects that reach the corners of [-1, 1]^3 can touch the image border from some directions."""
    elevation_range_deg: tuple[float, float] = (-30.0, 70.0)
    """Band of elevations the random views are drawn from (uniformly by area); straight-down and straight-up views
    are left out as rarely informative."""


@dataclass(frozen=True)
class OutputConfig:
    """Image and job settings shared by the dataset makers."""

    res: int = 256
    """Image width and height in pixels."""
    samples: int = 4
    """MSAA samples per pixel: alpha is exact coverage in steps of 1/samples (0 = aliased, binary alpha)."""
    depth: bool = False
    """Also write uint16 depth PNGs (camera z)."""
    surface_points: int = DEFAULT_SURFACE_POINTS
    """Objects: store up to this many ground-truth surface points (surface.npy, for Chamfer/F-score), drawn
    uniformly by area from the normalised mesh and kept where one of the object's views sees them; 0 = none."""
    workers: int = os.cpu_count() or 1
    """Worker processes, one GL context each."""
    progress: bool = True
    """Show a progress bar."""
    val_fraction: float = 0.02
    """Share of items in the val split (chosen by a hash of the item id, so stable across runs and shards)."""
    test_fraction: float = 0.02
    """Share of items in the test split."""


def object_cameras(config: ObjectCameraConfig, resolution: int, rng: np.random.Generator
                   ) -> tuple[Cameras, tuple[str, ...]]:
    """``views`` training cameras (rings of evenly spaced azimuths or random, ``view_sampling``) plus the
    ``orbit_views`` evaluation orbit, and each view's group."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    if config.view_sampling == "rings":
        train_views = ring_cameras(config.views // config.ring_views, config.ring_views, config.radius, config.fov_deg,
                                   resolution, generator, config.elevation_range_deg)
    else:
        train_views = random_sphere_cameras(config.views, config.radius, config.fov_deg, resolution,
                                            generator=generator, elevation_range_deg=config.elevation_range_deg)
    groups = ("train",) * config.views
    if config.orbit_views == 0:
        return train_views, groups
    orbit = orbit_cameras(config.orbit_views, config.radius, config.orbit_elevation_deg, config.fov_deg, resolution)
    return Cameras.cat([train_views, orbit]), groups + ("eval",) * config.orbit_views


def check_object_cameras(config: ObjectCameraConfig) -> None:
    """Refuse a view configuration the makers cannot render, in one line naming the options."""
    if config.views < 1:
        raise InputError("--views must be >= 1")
    if config.view_sampling == "rings" and (config.ring_views < 1 or config.views % config.ring_views):
        raise InputError(f"--views {config.views} is not a whole number of rings of --ring-views "
                         f"{config.ring_views} (or use --view-sampling random)")


_renderer: MeshRenderer | None = None


def init_renderer(raster: RasterConfig, workers: int) -> None:
    """Per-process set-up (the jobs' worker initialiser): one GL context; in a pool worker, also a share of the
    cores for llvmpipe and one torch thread (a job run in the caller's process leaves its settings alone)."""
    global _renderer
    if multiprocessing.parent_process() is not None:
        configure_llvmpipe_threads(workers)
        torch.set_num_threads(1)
    if _renderer is not None:
        _renderer.release()
    _renderer = MeshRenderer(raster)


def render_item(directory: Path, item_id: str, domain: Domain, mesh: RenderMesh, cameras: Cameras,
                groups: tuple[str, ...], lighting: Lighting, depth: bool, meta: dict[str, Any],
                surface_points: int = 0) -> int:
    """Render ``mesh`` with this process's renderer and write the item; returns the number of views.

    Objects with ``surface_points > 0`` also get their seen surface samples (judged on the rendered depth),
    written before cameras.json so that a finished item always has them.
    """
    if _renderer is None:
        raise RuntimeError("render_item: call init_renderer first (the jobs' worker initialiser does)")
    with_surface = domain == "object" and surface_points > 0
    out = _renderer.render(mesh, cameras, lighting, with_depth=depth or with_surface)
    if with_surface:
        points = visible_surface_samples(mesh, cameras, out.depth, surface_points, item_id)
        write_surface(directory, points)
        meta = {**meta, "surface_points": len(points)}
    pixels = out.rgba if domain == "object" else out.rgba[..., :3]
    write_item(directory, item_id, domain, RenderedViews(pixels, cameras, groups, out.depth if depth else None),
               meta)
    return len(groups)


def finish_dataset(root: Path, output: OutputConfig) -> None:
    """Index every finished item of ``root`` (including other shards' and earlier runs') in its manifest, reading
    only the items the manifest does not hold yet."""
    build_manifest(root, output.val_fraction, output.test_fraction, reuse=True)
