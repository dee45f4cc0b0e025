"""``diffusiongs data render``: real meshes rendered into this project's format, the way the paper prepares
Objaverse ("center and scale each 3D object into [-1,1]^3, render 32 images at random viewpoints with 50 FOV").

Parallel (one GL context per worker), shardable (``--shard i/n``), resumable (an item's cameras.json is written last
and finished items are skipped), with a JSON-lines failure log per shard and a progress bar.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import tyro

from diffusiongs.data.bundle import read_bundle
from diffusiongs.data.capture import (
    ObjectCameraConfig,
    OutputConfig,
    check_object_cameras,
    finish_dataset,
    init_renderer,
    object_cameras,
    render_item,
)
from diffusiongs.data.gl import Lighting, RasterConfig
from diffusiongs.data.jobs import JobReport, Task, failure_log_path, parse_shard, run_tasks, select_shard
from diffusiongs.data.meshes import UpAxis, load_mesh
from diffusiongs.data.objaverse import fetch_objaverse, parse_uids
from diffusiongs.data.store import item_dir
from diffusiongs.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshRenderConfig:
    """Render meshes (.glb/.gltf/.obj/.ply/.dae/...) into an object dataset: centred and scaled into [-1, 1]^3,
    white background with exact alpha, random viewpoints plus an evaluation orbit."""

    out: Path
    """Output dataset folder (resumable: finished objects are skipped)."""
    meshes: tyro.conf.Positional[tuple[Path, ...]] = ()
    """Mesh files."""
    mesh_list: Path | None = None
    """A text file with more mesh paths, one per line."""
    objaverse: tuple[str, ...] = ()
    """Objaverse uids (or text files of uids) to download through the ``objaverse`` package and render."""
    bundle: Path | None = None
    """A mesh bundle (`diffusiongs data bundle`): renders its meshes, with their provenance and licence in each
    item's meta and the bundle's held-out meshes in the test split."""
    bundle_split: Literal["train", "test"] | None = None
    """Render only the bundle's training meshes or only its held-out ones (default: all)."""
    shard: str = "0/1"
    """Render only shard i of n (``i/n``): every n-th mesh by item id, so n jobs split the work."""
    up_axis: UpAxis = "y"
    """Up axis of the mesh files (glTF is y-up by specification; most OBJ exports too)."""
    seed: int = 0
    """Seed of the viewpoints (each object's views depend only on this seed and its item id)."""
    max_texture_size: int = 1024
    """Textures are downsampled to at most this many pixels per side before upload."""
    camera: Annotated[ObjectCameraConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=ObjectCameraConfig)
    output: Annotated[OutputConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=OutputConfig)


@dataclass(frozen=True)
class _MeshJob:
    source: Path
    config: MeshRenderConfig
    provenance: dict | None = None
    """A bundle mesh's record (source, licence, split, ...), kept in the item's meta."""


def item_ids(paths: list[Path]) -> dict[Path, str]:
    """Item ids from file names (characters outside ``[A-Za-z0-9._-]`` become ``_``); names that occur more than
    once get a hash of the full path appended, so the ids do not depend on which shard sees which file."""
    stems = {p: re.sub(r"[^A-Za-z0-9._-]", "_", p.stem) or "mesh" for p in paths}
    counts = Counter(stems.values())
    return {p: s if counts[s] == 1 else f"{s}-{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"
            for p, s in stems.items()}


def _item_rng(seed: int, item_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, int(hashlib.sha256(item_id.encode()).hexdigest()[:15], 16)])


def _render_mesh(task: Task) -> int:
    job: _MeshJob = task.payload
    cfg = job.config
    mesh = load_mesh(job.source, cfg.up_axis)
    cameras, groups = object_cameras(cfg.camera, cfg.output.res, _item_rng(cfg.seed, task.item_id))
    meta = {"generator": "diffusiongs data render", "source": str(job.source), "faces": mesh.num_faces,
            "up_axis": cfg.up_axis, **(job.provenance or {})}
    return render_item(task.directory, task.item_id, "object", mesh, cameras, groups, Lighting(), cfg.output.depth,
                       meta, cfg.output.surface_points)


def _mesh_paths(config: MeshRenderConfig) -> list[Path]:
    paths = list(config.meshes)
    if config.mesh_list is not None:
        try:
            lines = config.mesh_list.read_text().splitlines()
        except OSError as err:
            raise InputError(f"{config.mesh_list}: cannot read mesh list ({err})") from err
        paths += [Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")]
    return list(dict.fromkeys(paths))


def mesh_tasks(config: MeshRenderConfig) -> list[Task]:
    """This shard's tasks: local meshes, then (after downloading this shard's share) Objaverse uids."""
    shard = parse_shard(config.shard)
    paths = _mesh_paths(config)
    tasks = select_shard([Task(i, item_dir(config.out, "object", i), _MeshJob(p, config))
                          for p, i in item_ids(paths).items()], shard)
    if config.bundle is not None:
        tasks += select_shard(_bundle_tasks(config), shard)
    uids = parse_uids(config.objaverse)
    if uids:
        mine = [t.item_id for t in select_shard([Task(u, Path(), None) for u in uids], shard)]
        todo = [u for u in mine if not (item_dir(config.out, "object", u) / "cameras.json").is_file()]
        fetched = fetch_objaverse(todo, config.output.workers) if todo else {}
        tasks += [Task(u, item_dir(config.out, "object", u), _MeshJob(fetched[u], config))
                  for u in todo if u in fetched]
        _log_missing(config, [u for u in todo if u not in fetched])
    return tasks


def _bundle_tasks(config: MeshRenderConfig) -> list[Task]:
    index = read_bundle(config.bundle)
    licenses = {name: record["license"] for name, record in index["sources"].items()}
    return [Task(m["id"], item_dir(config.out, "object", m["id"]),
                 _MeshJob(config.bundle / m["file"], config,
                          {"bundle_mesh": m["id"], "collection": m["source"], "name": m["name"],
                           "category": m["category"], "creator": m["creator"],
                           "license": licenses.get(m["source"], "unknown"), "split": m["split"]}))
            for m in index["meshes"] if config.bundle_split in (None, m["split"])]


def _log_missing(config: MeshRenderConfig, uids: list[str]) -> None:
    if not uids:
        return
    path = failure_log_path(config.out, parse_shard(config.shard))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for uid in uids:
            f.write(json.dumps({"item": uid, "error": "objaverse: not downloaded", "traceback": None}) + "\n")


def run_render(config: MeshRenderConfig) -> JobReport:
    """Render this shard's meshes into ``config.out`` and index every finished object in its manifest."""
    check_object_cameras(config.camera)
    tasks = mesh_tasks(config)
    if not tasks and not config.meshes and not config.mesh_list and not config.objaverse and not config.bundle:
        raise InputError("data render: give mesh files, --mesh-list, --bundle or --objaverse")
    config.out.mkdir(parents=True, exist_ok=True)
    raster = RasterConfig(samples=config.output.samples, max_texture_size=config.max_texture_size)
    report = run_tasks(tasks, _render_mesh, init_renderer, (raster, config.output.workers), config.output.workers,
                       failure_log_path(config.out, parse_shard(config.shard)), f"render {config.shard}",
                       config.output.progress)
    finish_dataset(config.out, config.output)
    log.info("render: %s", asdict(report))
    return report
