"""Procedural objects and scenes: the training data this project can make without downloads.

Objects are assemblies of 1-7 primitives (boxes, spheres, cylinders, cones, capsules, tori, superquadrics and
noise-displaced blobs) under random non-uniform scales, rotations and attachments, often mirror-symmetric like
man-made objects, with per-part colours, solid procedural textures (stripes, checkers, dots, noise, marble, wood
rings, gradients) and finishes from matte to glossy. Scenes are rooms (floor, walls, ceiling with their own
patterns) holding several such objects, seen along a smooth walk-through camera path.

Everything is drawn from the ``numpy.random.Generator`` passed in, so an item is a pure function of its seed.
"""

from __future__ import annotations

import colorsys
import functools
from dataclasses import dataclass, replace

import numpy as np
import torch

from diffusiongs.data.gl import Lighting, Material, MeshPart, Pattern, RenderMesh
from diffusiongs.geometry.camera import Cameras, intrinsics_from_fov, look_at

PRIMITIVES = ("box", "sphere", "cylinder", "cone", "capsule", "torus", "superquadric", "blob")
_PATTERNS: tuple[Pattern, ...] = ("stripes", "checker", "dots", "noise", "marble", "rings", "gradient")
_PATTERN_FREQUENCY = {"stripes": (2.0, 8.0), "checker": (1.5, 6.0), "dots": (2.0, 8.0), "noise": (1.5, 5.0),
                      "marble": (1.0, 3.0), "rings": (2.0, 6.0), "gradient": (1.0, 1.0)}
_FINISHES = ((0.0, 8.0), (0.12, 16.0), (0.35, 48.0), (0.7, 128.0))
"""(specular, shininess) of matte, satin, glossy and shiny parts."""
_FINISH_WEIGHTS = (0.4, 0.3, 0.2, 0.1)


@dataclass(frozen=True)
class ObjectStyle:
    """Ranges of the procedural object generator."""

    min_parts: int = 1
    """Fewest primitives per object."""
    max_parts: int = 7
    """Most primitives per object (before mirroring)."""
    symmetry_prob: float = 0.5
    """Chance that an attached part gets a mirror copy across the x = 0 plane."""
    pattern_prob: float = 0.6
    """Chance that a part has a procedural pattern rather than a plain colour."""
    cohesive_palette_prob: float = 0.6
    """Chance that an object's colours share one hue family."""


@dataclass(frozen=True)
class SceneStyle:
    """Ranges of the procedural scene generator (lengths in metres)."""

    room_size: tuple[float, float] = (4.0, 9.0)
    """Range of the room's width and depth."""
    room_height: tuple[float, float] = (2.6, 3.4)
    """Range of the ceiling height."""
    objects: tuple[int, int] = (3, 9)
    """Range of the number of objects in the room."""
    object_half_size: tuple[float, float] = (0.2, 0.8)
    """Range of an object's largest half-extent."""
    eye_height: tuple[float, float] = (1.0, 1.8)
    """Range of the camera height above the floor."""
    fov_deg: float = 60.0
    """Horizontal field of view of the scene cameras."""


# ----------------------------------------------------------------------------------------------- primitives

@dataclass(frozen=True)
class _Shape:
    positions: np.ndarray
    normals: np.ndarray
    faces: np.ndarray


def _from_trimesh(mesh) -> _Shape:
    # smooth_shaded splits vertices along sharp edges: boxes and cylinder caps shade flat, curved sides smooth.
    smooth = mesh.smooth_shaded
    return _Shape(np.asarray(smooth.vertices, np.float64), np.asarray(smooth.vertex_normals, np.float64),
                  np.asarray(smooth.faces, np.uint32))


@functools.cache
def _canonical(kind: str) -> _Shape:
    """A primitive fitted into [-1, 1]^3 (cached per process: meshes are built once, then only transformed)."""
    import trimesh  # optional dependency (diffusiongs[data])

    make = trimesh.creation
    if kind == "box":
        mesh = make.box(extents=(2.0, 2.0, 2.0))
    elif kind in ("sphere", "blob"):
        mesh = make.icosphere(subdivisions=3)
    elif kind == "cylinder":
        mesh = make.cylinder(radius=1.0, height=2.0, sections=32)
    elif kind == "cone":
        mesh = make.cone(radius=1.0, height=2.0, sections=32)
        mesh.apply_translation((0.0, 0.0, -1.0))
    elif kind == "capsule":
        mesh = make.capsule(height=1.0, radius=0.5, count=(16, 16))
        mesh.apply_scale((2.0, 2.0, 1.0))
    elif kind == "torus":
        mesh = make.torus(major_radius=0.7, minor_radius=0.3, major_sections=32, minor_sections=16)
    elif kind == "superquadric":
        # A sphere pushed towards its bounding cube: a rounded box.
        sphere = make.icosphere(subdivisions=3)
        v = sphere.vertices
        mesh = trimesh.Trimesh(np.sign(v) * np.abs(v) ** 0.35, sphere.faces, process=False)
    else:
        raise ValueError(f"unknown primitive {kind!r}")
    return _from_trimesh(mesh)


def _blob(rng: np.random.Generator) -> _Shape:
    """A sphere displaced by a few random low-frequency waves (organic, lumpy shapes)."""
    import trimesh

    base = _canonical("blob")
    radius = np.ones(len(base.positions))
    for _ in range(3):
        axis = rng.normal(size=3)
        radius += rng.uniform(0.05, 0.2) * np.sin(base.positions @ axis * rng.uniform(1.5, 4.0) + rng.uniform(0, 6.3))
    mesh = trimesh.Trimesh(base.positions * radius[:, None], base.faces, process=False)
    return _Shape(np.asarray(mesh.vertices), np.asarray(mesh.vertex_normals), base.faces)


def _rotation(rng: np.random.Generator, mode: str) -> np.ndarray:
    """A random rotation: ``"upright"`` about z only, ``"axis"`` a multiple of 90 degrees about random axes,
    ``"free"`` uniform."""
    if mode == "free":
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.diag(r))
        return q if np.linalg.det(q) > 0 else -q
    if mode == "axis":
        perm = np.eye(3)[rng.permutation(3)]
        signs = rng.choice([-1.0, 1.0], size=3)
        rot = perm * signs[:, None]
        return rot if np.linalg.det(rot) > 0 else rot * np.array([[-1.0], [1.0], [1.0]])
    angle = rng.uniform(0, 2 * np.pi)
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


# ----------------------------------------------------------------------------------------------- materials

def _color(rng: np.random.Generator, hue: float | None) -> tuple[float, float, float]:
    h = rng.uniform() if hue is None else (hue + rng.normal(0, 0.06)) % 1.0
    return colorsys.hsv_to_rgb(h, rng.uniform(0.15, 0.9), rng.uniform(0.35, 0.97))


def _material(rng: np.random.Generator, style: ObjectStyle, hue: float | None) -> Material:
    color = _color(rng, hue)
    specular, shininess = _FINISHES[rng.choice(len(_FINISHES), p=_FINISH_WEIGHTS)]
    if rng.uniform() >= style.pattern_prob:
        return Material(color=color, specular=specular, shininess=shininess)
    pattern = _PATTERNS[rng.integers(len(_PATTERNS))]
    # The second colour contrasts in brightness (and often in hue) so that patterns stay visible.
    h, s, v = colorsys.rgb_to_hsv(*color)
    h2 = h if rng.uniform() < 0.5 else rng.uniform()
    color2 = colorsys.hsv_to_rgb(h2, rng.uniform(0.1, 0.9), v * 0.45 if v > 0.55 else min(1.0, v + 0.45))
    lo, hi = _PATTERN_FREQUENCY[pattern]
    return Material(color=color, color2=color2, pattern=pattern, frequency=float(rng.uniform(lo, hi)),
                    specular=specular, shininess=shininess)


def random_lighting(rng: np.random.Generator) -> Lighting:
    """World-fixed lighting with a random key-light direction and mildly varied intensities and tint."""
    base = Lighting()
    azimuth, elevation = rng.uniform(0, 2 * np.pi), rng.uniform(np.radians(20), np.radians(70))
    key = (np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation))
    gain = rng.uniform(0.85, 1.15)
    tint = 1.0 + rng.normal(0, 0.03, size=3)
    colors = tuple(tuple(float(c) for c in np.clip(np.array(rgb) * gain * tint, 0, 1)) for rgb in base.colors)
    return Lighting(sky=base.sky, ground=base.ground, directions=(key, *base.directions[1:]), colors=colors)


# ----------------------------------------------------------------------------------------------- objects

@dataclass(frozen=True)
class _Placed:
    center: np.ndarray
    half: np.ndarray
    """Half-extents of the part's axis-aligned bounding box."""


def _make_part(shape: _Shape, scale: np.ndarray, rotation: np.ndarray, center: np.ndarray,
               material: Material) -> MeshPart:
    positions = (shape.positions * scale) @ rotation.T + center
    normals = (shape.normals / scale) @ rotation.T
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    n = len(positions)
    return MeshPart(positions=positions.astype(np.float32), normals=normals.astype(np.float32), faces=shape.faces,
                    colors=np.ones((n, 4), np.float32), material=material,
                    # Pattern coordinates scale with the part but do not rotate with it: stripes and tiles keep
                    # their size on stretched parts.
                    pattern_coords=(shape.positions * scale).astype(np.float32))


def _mirrored(part: MeshPart) -> MeshPart:
    flip = np.diag([-1.0, 1.0, 1.0])
    return part.transformed(flip, np.zeros(3))


def _bounds(part: MeshPart) -> _Placed:
    lo, hi = part.positions.min(0), part.positions.max(0)
    return _Placed((lo + hi) / 2, (hi - lo) / 2)


def random_object(rng: np.random.Generator, style: ObjectStyle = ObjectStyle()) -> RenderMesh:
    """A random assembly of primitives, centred and scaled into [-1, 1]^3 (z up)."""
    hue = rng.uniform() if rng.uniform() < style.cohesive_palette_prob else None

    def shape(kind: str) -> _Shape:
        return _blob(rng) if kind == "blob" else _canonical(kind)

    body_scale = rng.uniform(0.4, 1.0, size=3)
    body = _make_part(shape(PRIMITIVES[rng.integers(len(PRIMITIVES))]), body_scale,
                      _rotation(rng, "upright" if rng.uniform() < 0.7 else "free"), np.zeros(3),
                      _material(rng, style, hue))
    parts, placed = [body], [_bounds(body)]
    for _ in range(int(rng.integers(style.min_parts, style.max_parts + 1)) - 1):
        anchor = placed[rng.integers(len(placed))]
        if rng.uniform() < 0.7:
            direction = np.zeros(3)
            axis = rng.choice(3, p=(0.3, 0.3, 0.4))
            direction[axis] = rng.choice([-1.0, 1.0])
        else:
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
        # Centre near the anchor's box surface in that direction: parts touch or interpenetrate, never float.
        support = float(np.abs(direction) @ anchor.half)
        center = anchor.center + direction * support * rng.uniform(0.6, 1.15)
        scale = anchor.half.max() * rng.uniform(0.2, 0.75, size=3)
        mode = ("upright", "axis", "free")[rng.choice(3, p=(0.4, 0.35, 0.25))]
        part = _make_part(shape(PRIMITIVES[rng.integers(len(PRIMITIVES))]), scale, _rotation(rng, mode), center,
                          _material(rng, style, hue) if rng.uniform() < 0.8 else body.material)
        parts.append(part)
        placed.append(_bounds(part))
        if abs(center[0]) > 0.05 and rng.uniform() < style.symmetry_prob:
            parts.append(_mirrored(part))
            placed.append(_bounds(parts[-1]))
    return RenderMesh(tuple(parts)).normalized()


# ----------------------------------------------------------------------------------------------- scenes

def _slab(center: tuple[float, float, float], size: tuple[float, float, float], material: Material) -> MeshPart:
    return _make_part(_canonical("box"), np.array(size) / 2, np.eye(3), np.array(center), material)


def _surface_material(rng: np.random.Generator, patterns: tuple[Pattern, ...], value: tuple[float, float]
                      ) -> Material:
    color = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.05, 0.5), rng.uniform(*value))
    pattern = patterns[rng.integers(len(patterns))]
    if pattern == "none":
        return Material(color=color)
    color2 = tuple(float(c) * rng.uniform(0.6, 0.85) for c in color)
    lo, hi = _PATTERN_FREQUENCY[pattern]
    return Material(color=color, color2=color2, pattern=pattern, frequency=float(rng.uniform(lo, hi)) / 2,
                    specular=float(rng.choice([0.0, 0.1])), shininess=24.0)


def _camera_path(rng: np.random.Generator, room: np.ndarray, views: int, eye_height: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Eyes and look-at targets of a smooth walk around the room: an arc of 30-90 degrees around a point of
    interest near the room's middle, looking at that point as it drifts (so the room's contents stay in view, as in
    RealEstate10K walk-throughs)."""
    half = room[:2] / 2 - 0.6  # keep the eye 0.6 m from the walls
    t = np.linspace(0.0, 1.0, views)
    focus = np.array([*rng.uniform(-0.3, 0.3, size=2) * half, rng.uniform(0.4, 1.1)])
    drift = rng.normal(0.0, 0.4, size=3) * np.array([1.0, 1.0, 0.2])
    targets = focus + t[:, None] * drift
    radius = rng.uniform(0.55, 0.95) * half
    angle = rng.uniform(0, 2 * np.pi) + rng.choice([-1.0, 1.0]) * rng.uniform(np.pi / 6, np.pi / 2) * t
    xy = np.clip(focus[:2] + radius * np.column_stack([np.cos(angle), np.sin(angle)]), -half, half)
    eyes = np.column_stack([xy, eye_height + 0.04 * np.sin(2 * np.pi * t * rng.uniform(1, 3))])
    return eyes, targets


def _clear_of_path(center: np.ndarray, radius: float, eyes: np.ndarray) -> bool:
    return bool(np.min(np.linalg.norm(eyes[:, :2] - center, axis=1)) > radius + 0.4)


def random_scene(rng: np.random.Generator, views: int, resolution: int, style: SceneStyle = SceneStyle(),
                 object_style: ObjectStyle = ObjectStyle()) -> tuple[RenderMesh, Cameras, Lighting]:
    """A room with objects and a camera path of ``views`` frames (world z up, floor at z = 0, metres)."""
    room = np.array([*rng.uniform(*style.room_size, size=2), rng.uniform(*style.room_height)])
    w, d, h = room
    wall = _surface_material(rng, ("none", "stripes", "noise", "checker"), (0.6, 0.95))
    parts = [
        _slab((0, 0, -0.05), (w, d, 0.1), _surface_material(rng, ("checker", "rings", "noise", "marble"),
                                                            (0.3, 0.8))),
        _slab((0, 0, h + 0.05), (w, d, 0.1), _surface_material(rng, ("none",), (0.8, 0.97))),
        _slab((w / 2 + 0.05, 0, h / 2), (0.1, d, h), wall),
        _slab((-w / 2 - 0.05, 0, h / 2), (0.1, d, h), wall),
        _slab((0, d / 2 + 0.05, h / 2), (w, 0.1, h), _surface_material(rng, ("none", "stripes"), (0.6, 0.95))),
        _slab((0, -d / 2 - 0.05, h / 2), (w, 0.1, h), wall),
    ]
    eyes, targets = _camera_path(rng, room, views, rng.uniform(*style.eye_height))
    footprints: list[tuple[np.ndarray, float]] = []
    for _ in range(int(rng.integers(style.objects[0], style.objects[1] + 1))):
        size = rng.uniform(*style.object_half_size)
        radius = size * np.sqrt(2)
        for _ in range(20):
            center = rng.uniform(-room[:2] / 2 + radius, room[:2] / 2 - radius)
            if _clear_of_path(center, radius, eyes) and all(
                    np.linalg.norm(center - c) > radius + r for c, r in footprints):
                obj = random_object(rng, object_style)
                lift = -obj.bounds()[0, 2] * size
                parts += obj.transformed(np.eye(3) * size, np.array([*center, lift])).parts
                footprints.append((center, radius))
                break
    eye_t = torch.from_numpy(eyes)
    c2w = look_at(eye_t, torch.from_numpy(np.ascontiguousarray(targets)))
    K = intrinsics_from_fov(style.fov_deg, resolution, batch_shape=(views,), dtype=torch.float64)
    cameras = Cameras(c2w.float(), K.float(), resolution, resolution)
    return RenderMesh(tuple(parts)), cameras, _indoor_lighting(rng)


def _indoor_lighting(rng: np.random.Generator) -> Lighting:
    """Rooms are lit from all sides (walls face sideways, the ceiling down): a brighter, flatter hemisphere than
    for objects, plus the objects' directional lights."""
    lighting = random_lighting(rng)
    return replace(lighting, sky=(0.62, 0.62, 0.62), ground=(0.48, 0.47, 0.45))
