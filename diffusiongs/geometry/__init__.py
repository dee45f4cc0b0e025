"""Cameras, rays and ray embeddings. Conventions: docs/conventions.md."""

from diffusiongs.geometry.camera import (
    WORLD_UP,
    Cameras,
    OrbitRig,
    intrinsics_from_fov,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    orbit_cameras,
    random_sphere_cameras,
)
from diffusiongs.geometry.layout import ViewLayout, ViewLayoutMode
from diffusiongs.geometry.rays import (
    RayEmbedding,
    embed_rays,
    pixel_rays,
    plucker,
    ray_embedding,
    reference_depth,
    rppc,
)

__all__ = [
    "WORLD_UP", "Cameras", "OrbitRig", "RayEmbedding", "ViewLayout", "ViewLayoutMode", "embed_rays",
    "intrinsics_from_fov",
    "look_at", "opencv_to_opengl", "opengl_to_opencv", "orbit_cameras", "pixel_rays", "plucker",
    "random_sphere_cameras", "ray_embedding", "reference_depth", "rppc",
]
