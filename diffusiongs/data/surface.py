"""Ground-truth surface samples of an object for the geometry metrics (Chamfer distance, F-score).

``data synth`` and ``data render`` store, next to each object's views, points drawn uniformly by area from the
normalised mesh, keeping only points that at least one of the object's rendered views sees. Hidden surfaces
(the parts of a primitive buried inside another one, the inside of closed shells) are left out: no image-based
method can recover them, and they would cap every method's recall alike.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from jaxtyping import Bool, Float

from diffusiongs.data.gl import RenderMesh
from diffusiongs.geometry.camera import Cameras
from diffusiongs.metrics import sample_surface_points

DEFAULT_SURFACE_POINTS = 20_000
"""Points stored per object: enough for Chamfer/F-score at the 0.05 threshold to vary by well under 1 %."""

VISIBILITY_TOLERANCE_PX = 2.0
"""A point counts as seen when it lies at most this many pixel footprints behind the depth rendered at its pixel:
the depth of the pixel centre differs from the point's by up to half a footprint times the slope of the surface,
so surfaces up to ~75 degrees from facing the camera pass, and points hidden farther behind a surface do not."""

MAX_SAMPLING_ROUNDS = 8
"""Rounds of candidate points drawn to fill ``count`` visible points; objects whose visible share is below
1/8 keep fewer points."""


def visible_points(points: Float[np.ndarray, "p 3"], cameras: Cameras, depths: Float[np.ndarray, "view h w"],
                   tolerance_px: float = VISIBILITY_TOLERANCE_PX) -> Bool[np.ndarray, " p"]:
    """Which points at least one view sees, judged against that view's rendered camera-z depth (0 = empty).

    A point is seen by a view when it projects inside the image, in front of the camera, onto a pixel that shows
    something (depth > 0), and lies at most ``tolerance_px`` pixel footprints (z / fx) behind that pixel's depth.
    """
    w2c = cameras.w2c().double().numpy()
    K = cameras.K.double().numpy()
    height, width = depths.shape[-2:]
    seen = np.zeros(len(points), dtype=bool)
    homogeneous = np.concatenate([points.astype(np.float64), np.ones((len(points), 1))], axis=1)
    for view in range(len(w2c)):
        camera = homogeneous @ w2c[view, :3].T
        z = camera[:, 2]
        in_front = z > 1e-6
        safe_z = np.where(in_front, z, 1.0)
        column = np.floor(K[view, 0, 0] * camera[:, 0] / safe_z + K[view, 0, 2]).astype(np.int64)
        row = np.floor(K[view, 1, 1] * camera[:, 1] / safe_z + K[view, 1, 2]).astype(np.int64)
        inside = in_front & (column >= 0) & (column < width) & (row >= 0) & (row < height)
        rendered = np.zeros(len(points))
        rendered[inside] = depths[view, row[inside], column[inside]]
        footprint = z / K[view, 0, 0]
        seen |= inside & (rendered > 0) & (z <= rendered + tolerance_px * footprint)
    return seen


def _item_generator(item_id: str) -> torch.Generator:
    # Seeded by the item id only, so existing items' pixels (drawn from the item's own stream) stay as they were.
    return torch.Generator().manual_seed(int(hashlib.sha256(item_id.encode()).hexdigest()[:15], 16))


def visible_surface_samples(mesh: RenderMesh, cameras: Cameras, depths: Float[np.ndarray, "view h w"],
                            count: int, item_id: str) -> Float[np.ndarray, "p 3"]:
    """Up to ``count`` points uniform by area on the seen part of ``mesh`` (float32, the mesh's world frame).

    Candidates are drawn in rounds of ``count`` from the whole surface (every part, by area) and filtered with
    :func:`visible_points`; the draw depends only on ``item_id``.
    """
    vertices, faces, offset = [], [], 0
    for part in mesh.parts:
        vertices.append(torch.from_numpy(part.positions).double())
        faces.append(torch.from_numpy(part.faces.astype(np.int64)) + offset)
        offset += len(part.positions)
    vertices, faces = torch.cat(vertices), torch.cat(faces)
    generator = _item_generator(item_id)
    kept: list[np.ndarray] = []
    total = 0
    for _ in range(MAX_SAMPLING_ROUNDS):
        candidates = sample_surface_points(vertices, faces, count, generator).numpy()
        seen = candidates[visible_points(candidates, cameras, depths)]
        kept.append(seen)
        total += len(seen)
        if total >= count:
            break
    return np.concatenate(kept)[:count].astype(np.float32)
