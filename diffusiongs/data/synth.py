"""``diffusiongs data synth``: a procedural dataset of objects and scenes in this project's format.

Item ``k`` of each domain is drawn from ``numpy.random.default_rng([seed, domain, k])``, so the dataset is the same
whatever the number of workers, and a resumed job makes exactly the items a complete one would have.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import tyro

from diffusiongs.data import procedural
from diffusiongs.data.capture import (
    ObjectCameraConfig,
    OutputConfig,
    check_object_cameras,
    finish_dataset,
    init_renderer,
    object_cameras,
    render_item,
)
from diffusiongs.data.gl import RasterConfig
from diffusiongs.data.jobs import JobReport, Task, failure_log_path, run_tasks
from diffusiongs.data.store import item_dir
from diffusiongs.errors import InputError

log = logging.getLogger(__name__)

_DOMAIN_SEED = {"object": 0, "scene": 1}


@dataclass(frozen=True)
class SynthConfig:
    """Make a procedural dataset: objects (random primitive assemblies, white background, exact alpha) and
    scenes (rooms with objects, walk-through camera paths)."""

    out: Path
    """Output dataset folder (resumable: finished items are kept)."""
    objects: int = 100
    """Number of objects."""
    scenes: int = 0
    """Number of scenes."""
    seed: int = 0
    """Dataset seed: the same seed makes the same dataset."""
    camera: Annotated[ObjectCameraConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=ObjectCameraConfig)
    output: Annotated[OutputConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=OutputConfig)
    object_style: Annotated[procedural.ObjectStyle, tyro.conf.OmitArgPrefixes] = field(
        default_factory=procedural.ObjectStyle)
    scene_style: procedural.SceneStyle = field(default_factory=procedural.SceneStyle)
    """Room, object and camera-path ranges of the scenes (the scene frame count is ``--views``)."""


@dataclass(frozen=True)
class _SynthJob:
    domain: str
    index: int
    config: SynthConfig


def _make_item(task: Task) -> int:
    job: _SynthJob = task.payload
    cfg = job.config
    rng = np.random.default_rng([cfg.seed, _DOMAIN_SEED[job.domain], job.index])
    meta = {"generator": "diffusiongs data synth", "seed": cfg.seed, "index": job.index}
    if job.domain == "object":
        mesh = procedural.random_object(rng, cfg.object_style)
        cameras, groups = object_cameras(cfg.camera, cfg.output.res, rng)
        return render_item(task.directory, task.item_id, "object", mesh, cameras, groups,
                           procedural.random_lighting(rng), cfg.output.depth, meta, cfg.output.surface_points)
    mesh, cameras, lighting = procedural.random_scene(rng, cfg.camera.views, cfg.output.res, cfg.scene_style,
                                                      cfg.object_style)
    return render_item(task.directory, task.item_id, "scene", mesh, cameras, ("train",) * cfg.camera.views,
                       lighting, cfg.output.depth, meta)


def synth_tasks(config: SynthConfig) -> list[Task]:
    tasks = []
    for domain, count, prefix in (("object", config.objects, "obj"), ("scene", config.scenes, "scene")):
        for k in range(count):
            item_id = f"{prefix}_{k:06d}"
            tasks.append(Task(item_id, item_dir(config.out, domain, item_id), _SynthJob(domain, k, config)))
    return tasks


def run_synth(config: SynthConfig) -> JobReport:
    """Make (or complete) the dataset in ``config.out`` and index it in its manifest."""
    if config.objects < 0 or config.scenes < 0 or config.objects + config.scenes == 0:
        raise InputError("--objects/--scenes: need at least one item")
    if config.camera.views < 1 or config.output.res < 8:
        raise InputError("--views must be >= 1 and --res >= 8")
    if config.objects:
        check_object_cameras(config.camera)
    config.out.mkdir(parents=True, exist_ok=True)
    raster = RasterConfig(samples=config.output.samples)
    report = run_tasks(synth_tasks(config), _make_item, init_renderer, (raster, config.output.workers),
                       config.output.workers, failure_log_path(config.out, (0, 1)), "synth", config.output.progress)
    finish_dataset(config.out, config.output)
    log.info("synth: %s", asdict(report))
    return report
