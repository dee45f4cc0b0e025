"""Compact storage of render-ready meshes (``.mesh.npz``): what a mesh bundle holds (``data/bundle.py``).

A :class:`~diffusiongs.data.gl.RenderMesh` normalised into [-1, 1]^3 is written with its numbers quantised to what
a render of up to a few hundred pixels can show, so that hundreds of real meshes travel in a few megabytes:

* positions: uint16 over [-1, 1] (steps of 3e-5, a thousandth of a pixel at 256 px);
* normals: int8 per axis, renormalised on reading (about half a degree);
* vertex colours: uint8 RGBA, or one colour for a part whose vertices share it;
* texture coordinates: uint16 over the part's own range;
* textures: JPEG (quality 90) when opaque, PNG when they have alpha, at most ``max_texture_size`` pixels a side;
* faces: uint16 when the part has fewer than 65,536 vertices.

The file is a plain ``np.savez_compressed`` archive (``allow_pickle`` is never needed to read it) with a JSON header
of the parts' materials.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
from PIL import Image

from diffusiongs.data.gl import Material, MeshPart, RenderMesh
from diffusiongs.data.store import atomic_write_bytes
from diffusiongs.errors import InputError

FORMAT = "diffusiongs-mesh"
FORMAT_VERSION = 1
SUFFIX = ".mesh.npz"
_POSITION_STEPS = 65535
_JPEG_QUALITY = 90


def _quantise(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    span = np.maximum(hi - lo, 1e-12)
    return np.rint((np.clip(values, lo, hi) - lo) / span * _POSITION_STEPS).astype(np.uint16)


def _dequantise(values: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo + values.astype(np.float64) / _POSITION_STEPS * (hi - lo)).astype(np.float32)


def _encode_texture(texture: np.ndarray, max_size: int) -> bytes:
    image = Image.fromarray(texture, "RGBA")
    if max(image.size) > max_size:
        scale = max_size / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if texture[..., 3].min() == 255:
        image.convert("RGB").save(buffer, format="JPEG", quality=_JPEG_QUALITY)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def write_mesh(path: Path, mesh: RenderMesh, max_texture_size: int = 256) -> int:
    """Write ``mesh`` (already in [-1, 1]^3) to ``path``; returns the file's size in bytes."""
    arrays: dict[str, np.ndarray] = {}
    materials = []
    box_lo, box_hi = np.full(3, -1.0), np.full(3, 1.0)
    for i, part in enumerate(mesh.parts):
        if part.pattern_coords is not None:
            raise ValueError("write_mesh: procedural patterns are not stored (real meshes only)")
        p = f"p{i}_"
        arrays[p + "positions"] = _quantise(part.positions, box_lo, box_hi)
        arrays[p + "normals"] = np.rint(np.clip(part.normals, -1, 1) * 127).astype(np.int8)
        arrays[p + "faces"] = part.faces.astype(np.uint16 if len(part.positions) < 65536 else np.uint32)
        colors = np.rint(np.clip(part.colors, 0, 1) * 255).astype(np.uint8)
        arrays[p + "colors"] = colors[:1] if (colors == colors[:1]).all() else colors
        if part.uvs is not None and part.texture is not None:
            lo, hi = part.uvs.min(0), part.uvs.max(0)
            arrays[p + "uvs"] = _quantise(part.uvs, lo, hi)
            arrays[p + "uv_range"] = np.stack([lo, hi]).astype(np.float64)
            arrays[p + "texture"] = np.frombuffer(_encode_texture(part.texture, max_texture_size), np.uint8)
        materials.append(asdict(part.material))
    header = {"format": FORMAT, "version": FORMAT_VERSION, "materials": materials}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
    return len(buffer.getvalue())


def read_mesh(path: Path) -> RenderMesh:
    """A mesh written by :func:`write_mesh`; InputError naming the file when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
        header = json.loads(arrays["header"].tobytes())
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"{path}: not a readable {FORMAT} archive ({err})") from err
    if header.get("format") != FORMAT or header.get("version") != FORMAT_VERSION:
        raise InputError(f"{path}: expected {FORMAT} version {FORMAT_VERSION}, got {header.get('format')} "
                         f"{header.get('version')}")
    try:
        return RenderMesh(tuple(_read_part(arrays, i, material) for i, material in enumerate(header["materials"])))
    except (OSError, ValueError, KeyError) as err:  # a missing or damaged array of one part
        raise InputError(f"{path}: damaged {FORMAT} archive ({type(err).__name__}: {err})") from err


def _read_part(arrays: dict[str, np.ndarray], i: int, material: dict) -> MeshPart:
    """Part ``i`` of an archive's arrays."""
    p = f"p{i}_"
    positions = _dequantise(arrays[p + "positions"], np.full(3, -1.0), np.full(3, 1.0))
    normals = arrays[p + "normals"].astype(np.float32) / 127
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    colors = np.broadcast_to(arrays[p + "colors"].astype(np.float32) / 255, (len(positions), 4)).copy()
    uvs = texture = None
    if p + "texture" in arrays:
        lo, hi = arrays[p + "uv_range"]
        uvs = _dequantise(arrays[p + "uvs"], lo, hi)
        texture = np.asarray(Image.open(io.BytesIO(arrays[p + "texture"].tobytes())).convert("RGBA"))
    known = {f.name for f in fields(Material)}
    return MeshPart(positions, normals.astype(np.float32), arrays[p + "faces"].astype(np.uint32), colors,
                    Material(**{k: tuple(v) if isinstance(v, list) else v for k, v in material.items()
                                if k in known}), uvs=uvs, texture=texture)
