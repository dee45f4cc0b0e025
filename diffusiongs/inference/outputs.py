"""One generation's files: ``gaussians.ply``, ``views.png``, ``turntable.mp4``/``.gif`` (objects) or
``flythrough.mp4``/``.gif`` (scenes), and ``meta.json``."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from diffusiongs import __version__
from diffusiongs.configio import config_to_dict, write_json_atomic
from diffusiongs.data.types import Domain
from diffusiongs.diffusion import ProgressCallback
from diffusiongs.errors import InputError
from diffusiongs.gaussians import UpAxis, save_ply
from diffusiongs.inference.media import image_row, render_frames, to_uint8, turntable, write_image, write_video
from diffusiongs.inference.mesh import MeshConfig, write_mesh
from diffusiongs.inference.pipeline import GenerationResult, Pipeline


@dataclass(frozen=True)
class OutputConfig:
    """How a generation is written."""

    up: UpAxis = "z"
    """Up axis of the written PLY: ``z`` (this package's world) or ``y`` (rotated -90 degrees about x, the frame
    most 3DGS viewers expect). Renders and videos do not depend on it. Objects only: scene PLYs are written in the
    scene world (docs/scenes.md)."""
    turntable_seconds: float = 1.5
    """Length of one turn of the turntable videos (scenes: of the fly-through loop); 0 writes no videos."""
    turntable_fps: int = 24
    """Frames per second of the turntable (scenes: fly-through) videos."""
    turntable_size: int | None = None
    """Side of the turntable (scenes: fly-through) frames in pixels; None: the model's resolution."""
    mesh: MeshConfig | None = None
    """Also write ``mesh.glb``, a coloured mesh fused from renders of the Gaussians (the ``mesh`` extra)."""

    @property
    def turntable_frames(self) -> int:
        return round(self.turntable_seconds * self.turntable_fps)


def check_up_axis(up: UpAxis, domain: Domain) -> None:
    """Scene PLYs stay in the scene world: rotating them for an object's up axis would tilt the room."""
    if domain == "scene" and up != "z":
        raise InputError(f"--up {up}: applies to objects; a scene's PLY is written in its scene world (y down, "
                         "OpenCV), see docs/scenes.md")


def render_turntable(pipeline: Pipeline, result: GenerationResult, cfg: OutputConfig,
                     progress: ProgressCallback | None = None) -> torch.Tensor:
    """The exported Gaussians rendered around the model's object rig (at the generation's elevation), ``[n, 3, s, s]``
    in [0, 1]."""
    rig = pipeline.cfg.object_rig
    if result.config.elevation_deg is not None:
        rig = replace(rig, elevation_deg=result.config.elevation_deg)
    size = cfg.turntable_size or pipeline.cfg.resolution
    return turntable(result.gaussians.to(pipeline.device), rig, cfg.turntable_frames, size, pipeline.cfg.background,
                     pipeline.render_cfg, progress=progress)


def render_fly_through(pipeline: Pipeline, result: GenerationResult, cfg: OutputConfig,
                       progress: ProgressCallback | None = None) -> torch.Tensor:
    """The exported scene Gaussians rendered along the scene's camera path, past the denoised views and back
    (:meth:`ScenePath.fly_through`), ``[n, 3, s, s]`` in [0, 1]."""
    size = cfg.turntable_size or pipeline.cfg.resolution
    cameras = result.path.fly_through(cfg.turntable_frames).resized(size, size)
    return render_frames(result.gaussians.to(pipeline.device), cameras, pipeline.cfg.background, pipeline.render_cfg,
                         progress=progress)


def write_outputs(pipeline: Pipeline, result: GenerationResult, folder: str | Path, cfg: OutputConfig = OutputConfig(),
                  progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Write one generation into ``folder`` (created if needed; files of an earlier run are replaced).

    ``progress(frames done, frames)`` follows the turntable rendering. Returns what ``meta.json`` holds.
    """
    check_up_axis(cfg.up, result.domain)
    scene = result.domain == "scene"
    folder = Path(folder)
    timings = dict(result.timings)
    save_ply(result.gaussians, folder / "gaussians.ply", up=cfg.up)
    write_image(image_row(torch.cat([result.condition.rgb[None], result.views])), folder / "views.png")
    written = ["gaussians.ply", "views.png"]
    if cfg.turntable_frames > 0:
        video = "flythrough" if scene else "turntable"
        start = time.perf_counter()
        render_video = render_fly_through if scene else render_turntable
        frames = to_uint8(render_video(pipeline, result, cfg, progress))
        write_video(frames, folder / f"{video}.mp4", fps=cfg.turntable_fps)
        write_video(frames, folder / f"{video}.gif", fps=cfg.turntable_fps)
        written += [f"{video}.mp4", f"{video}.gif"]
        timings[f"{video}_s"] = time.perf_counter() - start
    mesh_faces = None
    if cfg.mesh is not None:
        start = time.perf_counter()
        mesh_faces = write_mesh(result.gaussians.to(pipeline.device), folder / "mesh.glb", cfg.mesh).num_faces
        written.append("mesh.glb")
        timings["mesh_s"] = time.perf_counter() - start
    export = result.config.export
    meta = {
        "input": result.input,
        "domain": result.domain,
        "foreground": result.condition.foreground,
        "checkpoint": pipeline.source,
        "generate": config_to_dict(result.config),
        "output": config_to_dict(cfg),
        "export": {
            "num_predicted": result.num_raw_gaussians,
            "num_written": result.gaussians.num_gaussians,
            "rule": export.describe(pipeline.clip_box(result.domain)),
            "up": "-y (the scene world)" if scene else cfg.up,
        },
        "num_gaussians": result.gaussians.num_gaussians,
        "mesh": None if cfg.mesh is None else {**config_to_dict(cfg.mesh), "faces": mesh_faces},
        **({"scene_cameras": result.path.describe()} if scene else {}),
        "files": written + ["meta.json"],
        "model": config_to_dict(pipeline.cfg),
        "timings": timings,
        "device": str(pipeline.device),
        "torch_threads": torch.get_num_threads(),
        "diffusiongs": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    write_json_atomic(folder / "meta.json", meta)
    return meta

