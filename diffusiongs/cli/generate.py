"""``diffusiongs generate IMAGE...``: images -> gaussians.ply, turntable.mp4/.gif, views.png and meta.json each
(scenes: flythrough.mp4/.gif instead of the turntable, cameras from a named trajectory or a camera file).

The model is loaded once for all images. One image file writes into ``--out``; several images (or a folder) write
one subfolder per image. An image that cannot be used is reported in one line and skipped; the exit code is 0 when
at least one image was generated, 2 when none was.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import tyro
from tqdm import tqdm

from diffusiongs.cli.device import DeviceChoice, resolve_device
from diffusiongs.data.types import Domain
from diffusiongs.diffusion import SamplerConfig
from diffusiongs.diffusion.samplers import SamplerName
from diffusiongs.errors import InputError, InputWarning
from diffusiongs.gaussians import UpAxis
from diffusiongs.inference.mesh import MeshConfig, require_mesh_extra
from diffusiongs.inference.outputs import OutputConfig, check_up_axis, write_outputs
from diffusiongs.inference.pipeline import DEFAULT_MODEL_DIR, ExportFilter, GenerateConfig, Pipeline
from diffusiongs.inference.preprocess import PreprocessConfig
from diffusiongs.inference.scene import SceneCameraConfig, check_scene_config, rig_frames
from diffusiongs.inference.segment import SegmenterName

PROG = "diffusiongs generate"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""Files taken from a folder argument (case-insensitive); files named on the command line may have any suffix."""
MIN_TURNTABLE_SIZE = 16


@dataclass(frozen=True)
class GenerateArgs:
    """Generate 3D Gaussians from images: gaussians.ply, views.png, turntable.mp4/.gif and meta.json per image."""

    images: tyro.conf.Positional[tuple[Path, ...]]
    """Image files and/or folders of images (png, jpg, webp, bmp, tif). RGBA: the alpha channel is the object
    mask; RGB: the background is removed (see --background, --segmenter)."""
    checkpoint: Path = DEFAULT_MODEL_DIR
    """Model folder (exported model, training checkpoint or run folder) or an official Open-DiffusionGS .ckpt;
    default: the shipped demo model."""
    camera_template: Path | None = None
    """With an official .ckpt: its camera_template.pt (default: the equivalent built from the training
    conventions)."""
    config: Path | None = None
    """With an official .ckpt: its YAML config (obj_configs.yaml; default: one beside the checkpoint, if present)."""
    out: Path = Path("outputs")
    """Output folder. One image file: its files go into OUT. Several images or a folder: OUT/<image name>/ per
    image (OUT/<name>-2/ and so on when names repeat)."""
    steps: int = 30
    """Denoising steps (network evaluations), at least 1."""
    sampler: SamplerName = "ddim"
    """ddim (paper), ddpm (official code) or dpmpp2m (fewer steps)."""
    seed: int = 0
    domain: Literal["auto", "object", "scene"] = "auto"
    """What to generate: object or scene (a photo of a room: used whole, at the cameras of --trajectory or
    --cameras, docs/scenes.md); auto: objects with a model that has an object decoder, scenes with a scene-only
    model."""
    scene: Annotated[SceneCameraConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=SceneCameraConfig)
    elevation: float | None = None
    """Elevation of the input view in degrees, in (-90, 90); default: the model's camera rig."""
    foreground_ratio: float = PreprocessConfig.foreground_ratio
    """Object size over image size after recentring, in (0, 1]."""
    background: Literal["auto", "remove", "keep"] = "auto"
    """auto: the alpha channel of RGBA inputs, background removal for RGB; remove: always; keep: use the image
    as it is."""
    segmenter: SegmenterName = "auto"
    """Background remover: u2netp (a small network shipped with the package, run by onnxruntime), border-fill
    (no network: the border colour is the background; plain backdrops only), auto (u2netp, or border-fill with a
    warning if onnxruntime cannot be imported)."""
    min_opacity: float = ExportFilter.min_opacity
    """Pruning of the PLY: drop Gaussians at or below this opacity (the official exporter's 0.02; 0 keeps all).
    meta.json records the rule and how many Gaussians were kept."""
    keep_clipped: bool = False
    """Pruning of the PLY: keep the Gaussians the decoder clamped onto a face of its clip box (dropped by default:
    their centres are not where the network put them)."""
    crop: float | None = None
    """Pruning of the PLY: also drop Gaussians outside [-crop, crop]^3 (official exporter: 0.91)."""
    up: UpAxis = "z"
    """Up axis of the PLY: z (this package's world) or y (rotated -90 degrees about x, as most viewers expect).
    Objects only: scene PLYs are written in the scene world (y down)."""
    turntable_seconds: float = OutputConfig.turntable_seconds
    """Length of the turntable videos (one full turn; scenes: the fly-through loop); 0 writes no videos."""
    turntable_fps: int = OutputConfig.turntable_fps
    """Frames per second of the turntable videos."""
    turntable_size: int | None = None
    """Side of the turntable frames in pixels (at least 16); default: the model's resolution."""
    mesh: bool = False
    """Also write mesh.glb, a coloured mesh fused from renders of the Gaussians (needs the `mesh` extra)."""
    mesh_options: MeshConfig = field(default_factory=MeshConfig)
    """How the mesh is extracted (docs/RESULTS.md measures the defaults)."""
    compile: bool = False
    """CUDA only: torch.compile the network with CUDA graphs (pays off when generating several images)."""
    device: DeviceChoice = "auto"
    """auto: the GPU when torch sees one, else the CPU."""
    progress: bool = True
    """Progress bars on stderr for sampling and turntable rendering (--no-progress: none)."""


@dataclass(frozen=True)
class Job:
    """One image and the folder its files go to."""

    image: Path
    out: Path


def check_args(args: GenerateArgs) -> None:
    """Every option's value, before anything is loaded: one InputError naming the first bad option."""
    checks = [
        (len(args.images) > 0, "IMAGE", "give at least one image file or folder"),
        (args.steps >= 1, "--steps", f"must be at least 1, got {args.steps}"),
        (0 < args.foreground_ratio <= 1, "--foreground-ratio", f"must be in (0, 1], got {args.foreground_ratio}"),
        (0 <= args.min_opacity < 1, "--min-opacity", f"must be in [0, 1), got {args.min_opacity}"),
        (args.crop is None or args.crop > 0, "--crop", f"must be positive, got {args.crop}"),
        (args.elevation is None or -90 < args.elevation < 90, "--elevation",
         f"must be in (-90, 90) degrees, got {args.elevation}"),
        (math.isfinite(args.turntable_seconds) and args.turntable_seconds >= 0, "--turntable-seconds",
         f"must be 0 (no videos) or positive, got {args.turntable_seconds}"),
        (args.turntable_fps >= 1, "--turntable-fps", f"must be at least 1, got {args.turntable_fps}"),
        (args.turntable_size is None or args.turntable_size >= MIN_TURNTABLE_SIZE, "--turntable-size",
         f"must be at least {MIN_TURNTABLE_SIZE} pixels, got {args.turntable_size}"),
        (args.camera_template is None or args.camera_template.is_file(), "--camera-template",
         f"{args.camera_template}: file not found"),
    ]
    for ok, option, problem in checks:
        if not ok:
            raise InputError(f"{option}: {problem}")
    resolve_device(args.device)
    if args.mesh:
        require_mesh_extra()
    check_scene_config(args.scene)


def check_output_folder(folder: Path) -> None:
    """``folder`` can be created or written: not an existing file, under a writable folder."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: is a file; the output folder (--out) must be a folder")
    ancestor = folder
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"{folder}: cannot create the output folder (--out), {ancestor} is a file")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{folder}: cannot write the output folder (--out), {ancestor} is not writable")


def _unique_names(stems: list[str]) -> list[str]:
    """The stems, with ``-2``, ``-3``... appended to repeats."""
    taken: set[str] = set()
    names = []
    for stem in stems:
        name, suffix = stem, 1
        while name in taken:
            suffix += 1
            name = f"{stem}-{suffix}"
        taken.add(name)
        names.append(name)
    return names


def is_single_image(inputs: tuple[Path, ...]) -> bool:
    """One image file (not a folder): ``--out`` is that image's folder."""
    return len(inputs) == 1 and not inputs[0].is_dir()


def plan_jobs(inputs: tuple[Path, ...], out: Path) -> tuple[list[Job], list[str]]:
    """The images to generate and where each goes, and one message per input that gives no image."""
    if is_single_image(inputs):
        if not inputs[0].exists():
            raise InputError(f"{inputs[0]}: file not found")
        return [Job(inputs[0], out)], []
    files: dict[Path, Path] = {}  # resolved -> as given, so that an image named twice runs once
    problems = []
    for path in inputs:
        if path.is_dir():
            found = sorted(f for f in path.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
            if not found:
                problems.append(f"{path}: no images in this folder ({', '.join(IMAGE_SUFFIXES)})")
            for f in found:
                files.setdefault(f.resolve(), f)
        elif path.exists():
            files.setdefault(path.resolve(), path)
        else:
            problems.append(f"{path}: file not found")
    images = list(files.values())
    names = _unique_names([image.stem for image in images])
    return [Job(image, out / name) for image, name in zip(images, names)], problems


def generate_config(args: GenerateArgs) -> GenerateConfig:
    return GenerateConfig(sampler=SamplerConfig(name=args.sampler, num_steps=args.steps), seed=args.seed,
                          preprocess=PreprocessConfig(foreground_ratio=args.foreground_ratio,
                                                      background=args.background, segmenter=args.segmenter),
                          export=ExportFilter(min_opacity=args.min_opacity, drop_clipped=not args.keep_clipped,
                                              crop_box=args.crop),
                          elevation_deg=args.elevation)


def output_config(args: GenerateArgs) -> OutputConfig:
    return OutputConfig(up=args.up, turntable_seconds=args.turntable_seconds, turntable_fps=args.turntable_fps,
                        turntable_size=args.turntable_size, mesh=args.mesh_options if args.mesh else None)


def load_pipeline(args: GenerateArgs) -> tuple[Pipeline, float]:
    start = time.perf_counter()
    pipeline = Pipeline.from_pretrained(args.checkpoint, device=resolve_device(args.device),
                                        camera_template=args.camera_template, compile=args.compile,
                                        official_config=args.config)
    if args.steps > pipeline.schedule.num_timesteps:
        raise InputError(f"--steps: must be at most {pipeline.schedule.num_timesteps} (the model's noise schedule), "
                         f"got {args.steps}")
    return pipeline, time.perf_counter() - start


def resolve_domain(args: GenerateArgs, pipeline: Pipeline) -> Domain:
    """``--domain`` with auto decided by the model's decoders; a domain the model lacks, or scene options with
    objects, is an InputError."""
    decoders = pipeline.cfg.denoiser.decoders
    domain = args.domain if args.domain != "auto" else ("object" if "object" in decoders else "scene")
    if domain not in decoders:
        raise InputError(f"--domain {domain}: {args.checkpoint} has no {domain} decoder (it has {list(decoders)})")
    if domain == "object" and args.scene.cameras is not None:
        raise InputError(f"--cameras: camera files are for scenes, and {args.checkpoint} makes objects by default "
                         "(add --domain scene)")
    check_up_axis(args.up, domain)
    if domain == "scene" and args.scene.cameras is not None:
        rig_frames(args.scene, pipeline.cfg.num_noisy_views)
    return domain


def _advance(bar: tqdm):
    """A progress callback that moves ``bar``."""
    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    return update


def _bar(total: int, desc: str, unit: str, enabled: bool) -> tqdm:
    """A progress bar on stderr that disappears when done (work with nothing to count shows none)."""
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled or total == 0, leave=False, file=sys.stderr,
                dynamic_ncols=True)


def run_job(pipeline: Pipeline, job: Job, args: GenerateArgs, label: str, load_s: float | None,
            domain: Domain = "object") -> dict:
    """Generate one image and write its files; returns its meta.json. ``load_s``: the model's load time, for the
    first image of a run only (None for the others, which did not wait for it)."""
    outputs = output_config(args)
    steps = 1 if pipeline.cfg.deterministic else args.steps
    with _bar(steps, f"{label}sampling", "step", args.progress) as bar:
        if domain == "scene":
            result = pipeline.generate_scene(job.image, args.scene, generate_config(args), progress=_advance(bar))
        else:
            result = pipeline(job.image, generate_config(args), progress=_advance(bar))
    if load_s is not None:
        result = replace(result, timings={"load_model_s": load_s, **result.timings})
    video = "flythrough" if domain == "scene" else "turntable"
    with _bar(outputs.turntable_frames, f"{label}{video}", "frame", args.progress) as bar:
        return write_outputs(pipeline, result, job.out, outputs, progress=_advance(bar))


def _say(message: str, error: bool = False) -> None:
    """A line that does not glue onto a progress bar's line."""
    tqdm.write(message, file=sys.stderr if error else sys.stdout)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """InputWarnings (small image, fallback remover) as one line each on stderr, every time they occur."""
    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, InputWarning):
            _say(f"{PROG}: warning: {message}", error=True)
        else:
            _say(warnings.formatwarning(message, category, filename, lineno, line).rstrip(), error=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always", InputWarning)
        warnings.showwarning = show
        yield


def _summary(job: Job, meta: dict) -> str:
    export = meta["export"]
    how = (f"scene at the cameras of the {meta['scene_cameras']['source']}" if meta["domain"] == "scene"
           else f"mask from {meta['foreground']}")
    return (f"wrote {job.out}/: {', '.join(meta['files'])} ({export['num_written']} of {export['num_predicted']} "
            f"Gaussians kept; {how}) in {sum(meta['timings'].values()):.1f} s")


def main(argv: list[str]) -> int:
    args = tyro.cli(GenerateArgs, args=argv, prog=PROG)
    check_args(args)
    single = is_single_image(args.images)
    jobs, problems = plan_jobs(args.images, args.out)
    if not jobs:
        raise InputError(f"no images to generate from: {'; '.join(problems)}")
    check_output_folder(args.out)
    for problem in problems:
        _say(f"{PROG}: skipped {problem}", error=True)
    pipeline, load_s = load_pipeline(args)
    domain = resolve_domain(args, pipeline)
    done = 0
    with _one_line_warnings():
        for index, job in enumerate(jobs):
            label = "" if single else f"[{index + 1}/{len(jobs)}] {job.image.name}: "
            try:
                check_output_folder(job.out)
                meta = run_job(pipeline, job, args, label, load_s if done == 0 else None, domain)
            except InputError as err:
                if single:
                    raise
                problems.append(str(err))
                _say(f"{PROG}: skipped {err}", error=True)
                continue
            done += 1
            _say(_summary(job, meta))
    if not single:
        _say(f"{done} of {done + len(problems)} inputs generated into {args.out}/"
             + (f"; {len(problems)} skipped (listed above)" if problems else ""))
    return 0 if done else 2
