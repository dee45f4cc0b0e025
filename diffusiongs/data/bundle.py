"""``diffusiongs data bundle``: real-mesh collections -> a compact, reproducible mesh bundle (docs/data.md).

A bundle is what travels to a rendering machine in place of the original files: every mesh normalised into
[-1, 1]^3, simplified to at most ``--max-faces`` triangles, textures at most ``--max-texture-size`` pixels a side,
stored with :mod:`diffusiongs.data.mesh_archive`, plus an index with each mesh's provenance, licence and split::

    BUNDLE/bundle.json                      {"format", "version", "sources": {name: {...}}, "meshes": [...]}
    BUNDLE/meshes/<mesh id>.mesh.npz
    BUNDLE/failures.jsonl                   one line per mesh that could not be read (skipped)

Sources (positional): Sweet Home 3D furniture catalogues (``.sh3f``, e.g. Debian's ``sweethome3d-furniture``:
``/usr/share/sweethome3d/furniture/*.sh3f``), or folders of mesh files that trimesh reads. A catalogue gives each
model's name, category, creator, licence and orientation (``modelRotation``); a folder's licence is given with
``--folder-license``. ``diffusiongs data render --bundle BUNDLE`` renders a bundle into a dataset whose splits are
the bundle's. Held-out meshes are chosen per source by a hash of the mesh id, so a source's held-out set does not
depend on the other sources or on the machine.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import logging
import re
import tempfile
import traceback
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tyro
from tqdm import tqdm

from diffusiongs.data.gl import MeshPart, RenderMesh
from diffusiongs.data.mesh_archive import SUFFIX, write_mesh
from diffusiongs.data.meshes import UpAxis, load_mesh
from diffusiongs.data.store import atomic_write_bytes, atomic_write_json, read_json
from diffusiongs.errors import InputError

log = logging.getLogger(__name__)

FORMAT = "diffusiongs-mesh-bundle"
FORMAT_VERSION = 1
INDEX_FILE = "bundle.json"
FAILURES_FILE = "failures.jsonl"
INDEX_EVERY = 50
"""Meshes between two writes of the index while a bundle is made (a stopped run resumes from the last one)."""
MESH_SUFFIXES = (".glb", ".gltf", ".obj", ".ply", ".dae", ".off", ".stl")


@dataclass(frozen=True)
class BundleConfig:
    """Turn real-mesh collections into a compact mesh bundle (normalised, simplified, small textures, with each
    mesh's licence and split)."""

    sources: tyro.conf.Positional[tuple[Path, ...]]
    """Sweet Home 3D catalogues (.sh3f) or folders of mesh files."""
    out: Path
    """Bundle folder (resumable: meshes already written are kept)."""
    max_faces: int = 6000
    """Simplify meshes with more triangles than this (vertex clustering on a grid, coarsened until they fit)."""
    max_texture_size: int = 128
    """Largest texture side in pixels (a 128-px render of an object in [-1, 1]^3 at distance 3 shows ~90 px)."""
    heldout_fraction: float = 0.1
    """Share of each source's meshes kept out of training (split "test"), chosen by a hash of the mesh id."""
    folder_license: str = "unknown"
    """Licence recorded for folder sources (catalogues state their own)."""
    up_axis: UpAxis = "y"
    """Up axis of folder sources' files (catalogue models are y-up)."""
    progress: bool = True


@dataclass(frozen=True)
class SourceMesh:
    """One mesh of a collection, before loading."""

    mesh_id: str
    path: Path
    source: str
    name: str
    category: str
    creator: str
    rotation: tuple[float, ...] | None = None
    """Row-major 3x3 rotation into the collection's y-up frame (Sweet Home 3D's ``modelRotation``)."""


# ------------------------------------------------------------------------------------------------ collections

def _read_properties(text: str) -> dict[str, str]:
    """A Java .properties file's key/value pairs (enough of the format for furniture catalogues)."""
    values = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#!" or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = codecs.decode(value.strip(), "unicode_escape") if "\\" in value else value.strip()
    return values


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text).strip("_") or "mesh"


def catalogue_meshes(catalogue: Path, workdir: Path) -> tuple[list[SourceMesh], dict[str, str]]:
    """The models of a Sweet Home 3D furniture catalogue (extracted into ``workdir``) and the source's record."""
    try:
        with zipfile.ZipFile(catalogue) as archive:
            archive.extractall(workdir)
            text = archive.read("PluginFurnitureCatalog.properties").decode("latin-1")
    except (OSError, zipfile.BadZipFile, KeyError) as err:
        raise InputError(f"{catalogue}: not a readable Sweet Home 3D catalogue ({err})") from err
    props = _read_properties(text)
    source = _safe_id(catalogue.stem)
    meshes = []
    for key in sorted((k for k in props if k.startswith("model#")), key=lambda k: int(k.split("#")[1])):
        n = key.split("#")[1]
        rotation = props.get(f"modelRotation#{n}")
        meshes.append(SourceMesh(
            mesh_id=f"{source}__{_safe_id(props.get(f'id#{n}', n).split('#')[-1])}",
            path=workdir / props[key].lstrip("/"), source=source, name=props.get(f"name#{n}", ""),
            category=props.get(f"category#{n}", ""), creator=props.get(f"creator#{n}", ""),
            rotation=tuple(float(v) for v in rotation.split()) if rotation else None))
    record = {"kind": "sweethome3d-catalogue", "file": catalogue.name, "license": props.get("license", "unknown"),
              "description": props.get("description", "")}
    return meshes, record


def folder_meshes(folder: Path, license_text: str) -> tuple[list[SourceMesh], dict[str, str]]:
    """Every mesh file under ``folder`` (recursively), named by its path relative to the folder."""
    source = _safe_id(folder.name)
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in MESH_SUFFIXES)
    meshes = [SourceMesh(mesh_id=f"{source}__{_safe_id(str(p.relative_to(folder).with_suffix('')))}", path=p,
                         source=source, name=p.stem, category="", creator="") for p in paths]
    return meshes, {"kind": "folder", "file": str(folder), "license": license_text, "description": ""}


def split_for(mesh_id: str, heldout_fraction: float) -> str:
    """"test" for a stable ``heldout_fraction`` of ids (by hash), else "train"."""
    u = int(hashlib.sha256(mesh_id.encode()).hexdigest()[:12], 16) / 16**12
    return "test" if u < heldout_fraction else "train"


# ------------------------------------------------------------------------------------------------ simplification

def _cluster_part(part: MeshPart, cell: float, keep_seams: bool) -> MeshPart:
    """Vertex clustering: vertices in one grid cell (and, with ``keep_seams``, one cell of texture space, so that
    texture seams stay apart) merge into the cluster's first vertex, which keeps its own normal, colour and texture
    coordinates; triangles that collapse are dropped."""
    cells = np.floor((np.clip(part.positions, -1.0, 1.0) + 1.0) / cell).astype(np.int64)  # <= 512 a side
    key = (cells[:, 0] << 34) | (cells[:, 1] << 17) | cells[:, 2]
    if keep_seams and part.uvs is not None:
        uv = part.uvs - part.uvs.min(0)
        uv_cells = np.floor(uv / max(float(uv.max()), 1e-9) * 63).astype(np.int64)
        key = (key << 12) | (uv_cells[:, 0] << 6) | uv_cells[:, 1]  # 3 x 17 + 2 x 6 bits: one int64
    _, first, cluster = np.unique(key, return_index=True, return_inverse=True)
    faces = cluster.reshape(-1)[part.faces.astype(np.int64)]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    faces = np.unique(faces, axis=0)
    used, compact = np.unique(faces, return_inverse=True)
    keep = first[used]
    return replace(part, positions=part.positions[keep], normals=part.normals[keep], faces=compact.reshape(-1, 3)
                   .astype(np.uint32), colors=part.colors[keep],
                   uvs=None if part.uvs is None else part.uvs[keep])


def simplify(mesh: RenderMesh, max_faces: int) -> RenderMesh:
    """``mesh`` with at most ``max_faces`` triangles, by vertex clustering of the original mesh on a grid that grows
    by half from 1/512 of the [-1, 1] box (a quarter pixel at 256 px) until the result fits: first keeping texture
    seams apart, then, if even a 1/8 grid does not fit, letting them merge. Parts that vanish are dropped; a mesh
    that fits at no grid up to the whole box comes back at the coarsest one."""
    result = mesh
    for keep_seams in (True, False):
        cell = 2.0 / 512
        while result.num_faces > max_faces and cell <= (2.0 / 8 if keep_seams else 2.0):
            result = RenderMesh(tuple(p for p in (_cluster_part(p, cell, keep_seams) for p in mesh.parts)
                                      if len(p.faces)))
            cell *= 1.5
        if result.num_faces <= max_faces:
            break
    return result


# ------------------------------------------------------------------------------------------------ the job

def _rotation_matrix(values: tuple[float, ...] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, np.float64).reshape(3, 3)


def _bundle_one(item: SourceMesh, cfg: BundleConfig, up_axis: UpAxis) -> dict:
    mesh = load_mesh(item.path, up_axis, rotation=_rotation_matrix(item.rotation))
    faces = mesh.num_faces
    small = simplify(mesh, cfg.max_faces)
    size = write_mesh(cfg.out / "meshes" / f"{item.mesh_id}{SUFFIX}", small, cfg.max_texture_size)
    return {"id": item.mesh_id, "file": f"meshes/{item.mesh_id}{SUFFIX}", "source": item.source, "name": item.name,
            "category": item.category, "creator": item.creator, "faces": small.num_faces, "faces_original": faces,
            "bytes": size, "split": split_for(item.mesh_id, cfg.heldout_fraction)}


def run_bundle(cfg: BundleConfig) -> dict:
    """Make (or complete) the bundle in ``cfg.out``; returns its index."""
    if not cfg.sources:
        raise InputError("data bundle: give at least one source (.sh3f catalogue or folder of meshes)")
    if cfg.max_faces < 100 or cfg.max_texture_size < 8 or not 0 <= cfg.heldout_fraction < 1:
        raise InputError("data bundle: --max-faces >= 100, --max-texture-size >= 8, 0 <= --heldout-fraction < 1")
    index_path = cfg.out / INDEX_FILE
    previous = read_json(index_path) if index_path.is_file() else {}
    settings = {"max_faces": cfg.max_faces, "max_texture_size": cfg.max_texture_size,
                "heldout_fraction": cfg.heldout_fraction}
    if previous and previous.get("settings") != settings:
        raise InputError(f"{index_path}: the bundle was made with {previous.get('settings')}, not {settings}; "
                         "give a new --out (or the same settings to complete it)")
    done = {m["id"]: m for m in previous.get("meshes", [])}
    sources: dict[str, dict] = dict(previous.get("sources", {}))  # the finished meshes keep their licences
    failures = []
    items: list[tuple[SourceMesh, UpAxis]] = []

    def write_index() -> dict:
        order = {item.mesh_id: i for i, (item, _) in enumerate(items)}
        index = {"format": FORMAT, "version": FORMAT_VERSION, "sources": sources, "settings": settings,
                 "meshes": sorted(done.values(), key=lambda m: order.get(m["id"], len(order)))}
        atomic_write_json(index_path, index)
        return index

    with tempfile.TemporaryDirectory() as tmp:
        for number, path in enumerate(cfg.sources):
            if path.is_dir():
                meshes, record = folder_meshes(path, cfg.folder_license)
                items += [(m, cfg.up_axis) for m in meshes]
            elif path.is_file():
                meshes, record = catalogue_meshes(path, Path(tmp) / str(number))
                items += [(m, "y") for m in meshes]
            else:
                raise InputError(f"{path}: no such file or folder")
            sources[meshes[0].source if meshes else _safe_id(path.stem)] = {**record, "meshes": len(meshes)}
        cfg.out.mkdir(parents=True, exist_ok=True)
        try:
            for count, (item, up_axis) in enumerate(tqdm(items, desc="bundle", unit="mesh", disable=not cfg.progress)):
                if item.mesh_id in done and (cfg.out / done[item.mesh_id]["file"]).is_file():
                    continue
                try:
                    done[item.mesh_id] = _bundle_one(item, cfg, up_axis)
                except Exception as err:  # one broken mesh must not stop the others: log it and go on
                    log.warning("skipping %s (%s): %s", item.mesh_id, item.path.name, err)
                    failures.append({"item": item.mesh_id, "file": str(item.path), "error": str(err),
                                     "traceback": traceback.format_exc()})
                if count % INDEX_EVERY == INDEX_EVERY - 1:  # a stopped run keeps what it made
                    write_index()
        finally:
            index = write_index()
    # This run's failures only: a mesh that failed before is tried again and listed again only if it fails again.
    failure_log = cfg.out / FAILURES_FILE
    if failures:
        atomic_write_bytes(failure_log, "".join(json.dumps(record) + "\n" for record in failures).encode())
    else:
        failure_log.unlink(missing_ok=True)
    return index


def read_bundle(folder: Path) -> dict:
    """A bundle's index; InputError naming the folder when it is not a bundle."""
    index = read_json(folder / INDEX_FILE)
    if index.get("format") != FORMAT:
        raise InputError(f"{folder / INDEX_FILE}: not a {FORMAT} index")
    return index
