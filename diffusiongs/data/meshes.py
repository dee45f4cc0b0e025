"""Loading real meshes (.glb/.gltf/.obj/.ply/.dae/... through trimesh) into render-ready parts.

Colour comes from, in this order of precedence per part: a base-colour texture (times the material's colour
factor for glTF), vertex colours, face colours, the material's base/diffuse colour, or light grey. The whole mesh is
rotated into this package's z-up world and centred and scaled into [-1, 1]^3 (docs/conventions.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
from jaxtyping import Float

from diffusiongs.data.gl import Material, MeshPart, RenderMesh
from diffusiongs.data.mesh_archive import SUFFIX as ARCHIVE_SUFFIX
from diffusiongs.data.mesh_archive import read_mesh
from diffusiongs.errors import InputError

log = logging.getLogger(__name__)

UpAxis = Literal["y", "z"]
_Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
"""Rotation taking a y-up model (glTF's convention, and most OBJ files') into the z-up world: y -> z, z -> -y."""
_DEFAULT_GREY = (0.8, 0.8, 0.8)


def load_mesh(path: Path, up_axis: UpAxis = "y", rotation: Float[np.ndarray, "3 3"] | None = None) -> RenderMesh:
    """A mesh file as parts in the z-up world, centred and scaled into [-1, 1]^3. Compact archives of a mesh
    bundle (``.mesh.npz``, already normalised) are read as they are.

    Args:
        up_axis: the file's up axis; ``"y"`` for glTF (by specification) and most OBJ/PLY/DAE exports.
        rotation: turns the file's model into its up-axis frame first (e.g. a catalogue's ``modelRotation``).

    Raises:
        InputError: the file cannot be read or holds no triangles.
    """
    if path.name.endswith(ARCHIVE_SUFFIX):
        return read_mesh(path)
    import trimesh  # optional dependency (diffusiongs[data])

    try:
        scene = trimesh.load(path, force="scene")
        # dump() applies every node's transform: the geometry comes out in the file's world frame.
        geometries = scene.dump()
    except Exception as err:  # trimesh raises anything from KeyError to zlib errors on broken files
        raise InputError(f"{path}: cannot load mesh ({type(err).__name__}: {err})") from err
    parts = [_part(g, path) for g in geometries if isinstance(g, trimesh.Trimesh) and len(g.faces) > 0]
    if not parts:
        raise InputError(f"{path}: no triangles (point clouds and lines cannot be rendered)")
    mesh = RenderMesh(tuple(parts))
    if rotation is not None:
        mesh = mesh.transformed(np.asarray(rotation, np.float64), np.zeros(3))
    if up_axis == "y":
        mesh = mesh.transformed(_Y_UP_TO_Z_UP, np.zeros(3))
    try:
        return mesh.normalized()
    except ValueError as err:
        raise InputError(f"{path}: {err}") from err


def _part(geometry, path: Path) -> MeshPart:
    positions = np.asarray(geometry.vertices, np.float32)
    faces = np.asarray(geometry.faces, np.uint32)
    normals = np.asarray(geometry.vertex_normals, np.float32)
    if not np.all(np.isfinite(positions)):
        raise InputError(f"{path}: non-finite vertex positions")
    normals = np.where(np.isfinite(normals), normals, 0.0).astype(np.float32)
    visual = geometry.visual
    kind = getattr(visual, "kind", None)
    n = len(positions)
    if kind == "texture":
        return _textured_part(positions, normals, faces, visual)
    if kind == "vertex":
        colors = np.asarray(visual.vertex_colors, np.float32)[:, :4] / 255.0
        return MeshPart(positions, normals, faces, colors)
    if kind == "face":
        # One colour per face: give every face its own three vertices.
        corners = faces.reshape(-1)
        colors = np.repeat(np.asarray(visual.face_colors, np.float32)[:, :4] / 255.0, 3, axis=0)
        return MeshPart(positions[corners], normals[corners], np.arange(len(corners), dtype=np.uint32).reshape(-1, 3),
                        colors)
    return MeshPart(positions, normals, faces, np.ones((n, 4), np.float32), Material(color=_DEFAULT_GREY))


def _textured_part(positions, normals, faces, visual) -> MeshPart:
    n = len(positions)
    material = visual.material
    image = getattr(material, "baseColorTexture", None)
    is_pbr = hasattr(material, "baseColorFactor")
    if is_pbr:
        factor = material.baseColorFactor
        factor = np.ones(4) if factor is None else np.asarray(factor, np.float64) / 255.0
    else:
        image = getattr(material, "image", None)
        diffuse = getattr(material, "diffuse", None)
        # OBJ/MTL: a diffuse map replaces Kd (as Blender's importer does); without a map, Kd is the colour.
        factor = np.ones(4) if image is not None or diffuse is None else np.asarray(diffuse, np.float64) / 255.0
    uvs = None if visual.uv is None else np.asarray(visual.uv, np.float32)
    texture = None
    if image is not None and uvs is not None and len(uvs) == n:
        texture = np.asarray(image.convert("RGBA"))
    else:
        uvs = None
    colors = np.broadcast_to(factor.astype(np.float32), (n, 4)).copy()
    # trimesh keeps a glTF's COLOR_0 here when the primitive also has a material.
    vertex_colors = visual.vertex_attributes.get("color")
    if vertex_colors is not None and len(vertex_colors) == n:
        colors[:, :np.shape(vertex_colors)[1]] *= _unit_range(np.asarray(vertex_colors))[:, :4]
    return MeshPart(positions, normals, faces, colors, Material(alpha_cutoff=_alpha_cutoff(material)), uvs=uvs,
                    texture=texture)


def _unit_range(values: np.ndarray) -> np.ndarray:
    """glTF colours are floats in [0, 1] or normalised unsigned integers."""
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32) / np.iinfo(values.dtype).max
    return values.astype(np.float32)


def _alpha_cutoff(material) -> float | None:
    """glTF MASK uses its cutoff; BLEND is approximated by a 0.5 cutoff (no sorting of transparent surfaces)."""
    mode = getattr(material, "alphaMode", None)
    if mode == "MASK":
        cutoff = getattr(material, "alphaCutoff", None)
        return 0.5 if cutoff is None else float(cutoff)
    return 0.5 if mode == "BLEND" else None
