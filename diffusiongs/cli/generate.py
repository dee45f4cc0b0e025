"""``diffusiongs generate IMAGE``: one image -> gaussians.ply, turntable.mp4/.gif, views.png, meta.json."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import torch
import tyro

from diffusiongs import __version__
from diffusiongs.configio import config_to_dict, write_json_atomic
from diffusiongs.diffusion import SamplerConfig
from diffusiongs.diffusion.samplers import SamplerName
from diffusiongs.errors import InputError
from diffusiongs.gaussians import save_ply
from diffusiongs.inference.media import image_row, to_uint8, turntable, write_image, write_video
from diffusiongs.inference.mesh import MeshConfig, require_mesh_extra, write_mesh
from diffusiongs.inference.pipeline import DEFAULT_MODEL_DIR, ExportFilter, GenerateConfig, Pipeline
from diffusiongs.inference.preprocess import PreprocessConfig


@dataclass(frozen=True)
class GenerateArgs:
    """Generate 3D Gaussians from one image."""

    image: tyro.conf.Positional[Path]
    """Input image: RGBA (alpha = object mask) or RGB (background removed if the `segment` extra is installed)."""
    checkpoint: Path = DEFAULT_MODEL_DIR
    """Model folder (exported model, training checkpoint or run folder) or an official Open-DiffusionGS .ckpt;
    default: the shipped demo model."""
    camera_template: Path | None = None
    """With an official .ckpt: its camera_template.pt (default: the equivalent built from the training
    conventions)."""
    out: Path = Path("outputs")
    """Output folder."""
    steps: int = 30
    """Denoising steps (network evaluations)."""
    sampler: SamplerName = "ddim"
    """ddim (paper), ddpm (official code) or dpmpp2m (fewer steps)."""
    seed: int = 0
    elevation: float | None = None
    """Elevation of the input view in degrees; default: the model's camera rig."""
    foreground_ratio: float = PreprocessConfig.foreground_ratio
    """Object size over image size after recentring."""
    background: Literal["auto", "remove", "keep"] = "auto"
    """auto: alpha of RGBA inputs, background removal for RGB; remove: always; keep: use the image as it is."""
    min_opacity: float = 0.0
    """Drop Gaussians at or below this opacity in the exported PLY (official exporter: 0.02)."""
    crop: float | None = None
    """Drop Gaussians outside [-crop, crop]^3 (official exporter: 0.91)."""
    frames: int = 36
    """Turntable frames (0 skips the videos)."""
    mesh: bool = False
    """Also write mesh.glb, a coloured mesh fused from renders of the Gaussians (needs the `mesh` extra)."""
    mesh_options: MeshConfig = field(default_factory=MeshConfig)
    """How the mesh is extracted (docs/RESULTS.md measures the defaults)."""
    compile: bool = False
    """CUDA only: torch.compile the network with CUDA graphs (pays off when generating several images)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"


def run(args: GenerateArgs) -> dict:
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if args.mesh:
        require_mesh_extra()
    start = time.perf_counter()
    pipeline = Pipeline.from_pretrained(args.checkpoint, device=device, camera_template=args.camera_template,
                                        compile=args.compile)
    if "object" not in pipeline.cfg.denoiser.decoders:
        raise InputError(f"{args.checkpoint}: a scene-only model; `generate` makes objects from one image "
                         "(scene models need target cameras: use diffusiongs.inference.Pipeline from Python)")
    load_s = time.perf_counter() - start
    cfg = GenerateConfig(sampler=SamplerConfig(name=args.sampler, num_steps=args.steps), seed=args.seed,
                         preprocess=PreprocessConfig(foreground_ratio=args.foreground_ratio,
                                                     background=args.background),
                         export=ExportFilter(min_opacity=args.min_opacity, crop_box=args.crop),
                         elevation_deg=args.elevation)
    result = pipeline(args.image, cfg)
    timings = {"load_model_s": load_s, **result.timings}
    out = args.out
    save_ply(result.gaussians, out / "gaussians.ply")
    row = torch.cat([result.condition.rgb[None], result.views])
    write_image(image_row(row), out / "views.png")
    if args.frames > 0:
        start = time.perf_counter()
        rig = pipeline.cfg.object_rig
        if args.elevation is not None:
            rig = replace(rig, elevation_deg=args.elevation)
        frames = to_uint8(turntable(result.gaussians.to(device), rig, args.frames, pipeline.cfg.resolution,
                                    pipeline.cfg.background))
        write_video(frames, out / "turntable.mp4")
        write_video(frames, out / "turntable.gif")
        timings["turntable_s"] = time.perf_counter() - start
    mesh_faces = None
    if args.mesh:
        start = time.perf_counter()
        mesh_faces = write_mesh(result.gaussians.to(device), out / "mesh.glb", args.mesh_options).num_faces
        timings["mesh_s"] = time.perf_counter() - start
    meta = {
        "input": str(args.image), "checkpoint": str(args.checkpoint), "generate": config_to_dict(cfg),
        "model": config_to_dict(pipeline.cfg), "num_gaussians": result.gaussians.num_gaussians,
        "mesh": config_to_dict(args.mesh_options) | {"faces": mesh_faces} if args.mesh else None,
        "timings": timings, "device": device, "torch_threads": torch.get_num_threads(),
        "diffusiongs": __version__, "torch": torch.__version__, "python": platform.python_version(),
    }
    write_json_atomic(out / "meta.json", meta)
    return meta


def main(argv: list[str]) -> int:
    args = tyro.cli(GenerateArgs, args=argv, prog="diffusiongs generate")
    meta = run(args)
    total = sum(meta["timings"].values())
    mesh = "" if meta["mesh"] is None else f", mesh.glb ({meta['mesh']['faces']} faces)"
    print(f"wrote {args.out}/gaussians.ply ({meta['num_gaussians']} Gaussians), views.png"
          f"{', turntable.mp4, turntable.gif' if args.frames else ''}{mesh} and meta.json in {total:.1f} s")
    return 0
