"""What the web demo does with one uploaded image, without any web code: prepare it, sample, and write the files
the page shows (the segmented input, the Gaussians, a turntable video, a mesh), reporting progress by stage."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from diffusiongs.data.types import Domain
from diffusiongs.diffusion import SamplerConfig
from diffusiongs.diffusion.samplers import SamplerName
from diffusiongs.errors import InputError
from diffusiongs.gaussians import Gaussians, save_ply
from diffusiongs.inference.media import to_uint8, write_image, write_video
from diffusiongs.inference.mesh import MeshConfig, write_mesh
from diffusiongs.inference.outputs import OutputConfig, render_fly_through, render_turntable
from diffusiongs.inference.pipeline import GenerateConfig, Pipeline
from diffusiongs.inference.preprocess import PreprocessConfig
from diffusiongs.inference.scene import SceneCameraConfig

DOMAINS: tuple[Domain, ...] = ("object", "scene")
"""What the page can make, in the order it offers them."""

MAX_STEPS = 200
"""Upper end of the page's step setting (the paper samples with 30)."""


VIEWER_SCALE = 0.5
"""Gradio's splat viewer (gsplat.js) looks from distance 5 with a fixed focal length of 1132 px, which for a
canvas a few hundred pixels high shows less than [-1, 1]^3: its copy of the Gaussians is shrunk to fit."""

Progress = Callable[[float, str], None]
"""``progress(fraction_done, what_now)``."""


def _no_progress(fraction: float, message: str) -> None:
    """The default :data:`Progress`: report nothing."""


def for_splat_viewer(gaussians: Gaussians) -> Gaussians:
    """A copy for gradio's splat viewer, whose up axis is -y (the 3DGS/COLMAP habit): turned by +90 degrees about
    x, (x, y, z) -> (x, -z, y), so that our up (+z) points up there, and scaled by :data:`VIEWER_SCALE`."""
    x, y, z = gaussians.means.unbind(-1)
    means = VIEWER_SCALE * torch.stack([x, -z, y], dim=-1)
    # Hamilton product p ⊗ q with p = (cos 45°, sin 45°, 0, 0), the quaternion of that turn: R(p ⊗ q) = R(p) R(q).
    c = s = math.sqrt(0.5)
    qw, qx, qy, qz = gaussians.quats.unbind(-1)
    quats = torch.stack([c * qw - s * qx, c * qx + s * qw, c * qy - s * qz, c * qz + s * qy], dim=-1)
    return replace(gaussians, means=means, quats=quats, scales=VIEWER_SCALE * gaussians.scales)


@dataclass(frozen=True)
class DemoSettings:
    """The settings the page offers for one generation."""

    sampler: SamplerName = "ddim"
    """ddim (paper), ddpm (official code) or dpmpp2m (fewer steps)."""
    steps: int = 30
    """Denoising steps (network evaluations)."""
    seed: int = 0
    """Seed of the sampling noise."""
    foreground_ratio: float = PreprocessConfig.foreground_ratio
    """Object size over image size after recentring."""
    mesh: bool = True
    """Also extract a mesh (GLB; objects only)."""
    domain: Domain = "object"
    """``object``: background removed, the Gaussians of one object; ``scene``: the whole photo, the Gaussians of a
    room at the default scene cameras (``SceneCameraConfig``: an 8-degree orbit, 60-degree field of view)."""

    def validate(self, max_steps: int = MAX_STEPS, domains: tuple[Domain, ...] = DOMAINS) -> None:
        """``max_steps`` and ``domains``: what the model allows (:meth:`DemoRunner.max_steps`,
        :meth:`DemoRunner.domains`)."""
        if self.domain not in domains:
            raise InputError(f"domain: the model has no {self.domain} decoder (it makes {' and '.join(domains)})")
        if not 1 <= self.steps <= max_steps:
            raise InputError(f"steps: {self.steps} is outside 1..{max_steps}")
        if not 0 < self.foreground_ratio <= 1:
            raise InputError(f"foreground ratio: {self.foreground_ratio} is outside (0, 1]")
        if not 0 <= self.seed < 2**63:
            raise InputError(f"seed: {self.seed} must be a non-negative integer below 2^63")


@dataclass(frozen=True)
class DemoOutputs:
    """The files of one generation (in ``folder``) and a one-line summary."""

    folder: Path
    condition: Path
    """The prepared input view: background removed, object recentred, on white (PNG)."""
    gaussians: Path
    """3DGS PLY, in the object's world frame (z up), pruned as `generate` prunes (``GenerateConfig.export``)."""
    viewer: Path
    """The same Gaussians for the page's splat viewer (:func:`for_splat_viewer`)."""
    video: Path | None
    """H.264 turntable (None without frames)."""
    mesh: Path | None
    """Coloured GLB (y up, as glTF wants), or None when not asked for."""
    summary: str


@dataclass
class DemoRunner:
    """A loaded model and where its results go; :meth:`run` handles one image at a time."""

    pipeline: Pipeline
    out_root: Path
    """Each generation writes a new numbered folder here."""
    frames: int = 36
    """Turntable frames (0: no video)."""
    mesh_cfg: MeshConfig = field(default_factory=MeshConfig)
    _count: int = field(default=0, init=False, repr=False)

    @property
    def max_steps(self) -> int:
        """The page's step limit, within the model's noise schedule."""
        return min(MAX_STEPS, self.pipeline.schedule.num_timesteps)

    @property
    def domains(self) -> tuple[Domain, ...]:
        """What the page can make with this model: the domains it has a decoder for."""
        return tuple(d for d in DOMAINS if d in self.pipeline.cfg.denoiser.decoders)

    def _new_folder(self, image: Path) -> Path:
        """The next free numbered folder (results of earlier runs in ``out_root`` are kept)."""
        self.out_root.mkdir(parents=True, exist_ok=True)
        self._count += 1
        while any(self.out_root.glob(f"{self._count:04d}_*")):
            self._count += 1
        folder = self.out_root / f"{self._count:04d}_{image.stem[:40] or 'image'}"
        folder.mkdir()
        return folder

    def run(self, image: str | Path, settings: DemoSettings = DemoSettings(),
            progress: Progress = _no_progress) -> DemoOutputs:
        """Generate from an image file; bad files and settings raise :class:`InputError` with a one-line message."""
        settings.validate(self.max_steps, self.domains)
        image = Path(image)
        scene = settings.domain == "scene"
        preprocess = PreprocessConfig(foreground_ratio=settings.foreground_ratio)
        cfg = GenerateConfig(sampler=SamplerConfig(name=settings.sampler, num_steps=settings.steps),
                             seed=settings.seed, preprocess=preprocess)
        start = time.perf_counter()

        def sampling(done: int, total: int) -> None:
            progress(0.05 + 0.6 * done / total, f"sampling: step {done} of {total} ({settings.sampler})")

        sampling(0, settings.steps)
        result = (self.pipeline.generate_scene(image, SceneCameraConfig(), cfg, progress=sampling) if scene
                  else self.pipeline(image, cfg, progress=sampling))
        folder = self._new_folder(image)
        condition = write_image(to_uint8(result.condition.rgb[None])[0], folder / "input.png")
        gaussians = save_ply(result.gaussians, folder / "gaussians.ply")
        # Scenes are already in the viewer's frame (y down, as 3DGS/COLMAP scenes are) and at a scale it shows.
        viewer = save_ply(result.gaussians if scene else for_splat_viewer(result.gaussians),
                          folder / "viewer" / "gaussians.ply")
        video = mesh = None
        if self.frames > 0:  # the videos of `generate`, with this many frames
            progress(0.7, "rendering the fly-through" if scene else "rendering the turntable")
            video_cfg = OutputConfig(turntable_seconds=self.frames / OutputConfig.turntable_fps)
            frames = (render_fly_through if scene else render_turntable)(self.pipeline, result, video_cfg)
            video = write_video(to_uint8(frames), folder / ("flythrough.mp4" if scene else "turntable.mp4"),
                                fps=video_cfg.turntable_fps)
        faces = ""
        device = self.pipeline.device
        if settings.mesh and not scene:
            progress(0.85, "extracting the mesh")
            mesh_path = folder / "mesh.glb"
            faces = f", {write_mesh(result.gaussians.to(device), mesh_path, self.mesh_cfg).num_faces} mesh faces"
            mesh = mesh_path
        progress(1.0, "done")
        summary = (f"{result.gaussians.num_gaussians} Gaussians{faces} in {time.perf_counter() - start:.1f} s "
                   f"({settings.sampler}, {settings.steps} steps, seed {settings.seed}, {device.type})")
        return DemoOutputs(folder=folder, condition=condition, gaussians=gaussians, viewer=viewer, video=video,
                           mesh=mesh, summary=summary)
