"""``diffusiongs convert-official CKPT --out DIR``: an official Open-DiffusionGS checkpoint -> a model folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro

from diffusiongs.official import convert_official_checkpoint


@dataclass(frozen=True)
class ConvertOfficialArgs:
    """Convert an official Open-DiffusionGS checkpoint (obj_ckpt_512.ckpt, scene_ckpt_256.ckpt, ...) into a
    diffusiongs model folder. Nothing in the checkpoint is executed; see docs/official.md."""

    checkpoint: tyro.conf.Positional[Path]
    """The official .ckpt file."""
    out: Path
    """Output model folder (config.json + model.safetensors)."""
    kind: Literal["auto", "object", "scene"] = "auto"
    """Model kind; auto reads it off the weights."""
    resolution: int | None = None
    """Image side of the model; default: the number in a released file name (scene_ckpt_512.ckpt: 512), else 512
    for objects and 256 for scenes."""
    camera_template: Path | None = None
    """The official camera_template.pt (objects); default: the rig rebuilt from the training conventions."""
    template_tolerance: float = 0.5
    """Degrees a template camera may deviate from the orbit rig stored in the model config."""
    config: Path | None = None
    """The checkpoint's YAML config (obj_configs.yaml): heads and ray embedding are read from it, and its sizes must
    agree with the weights. Default: <name>.yaml or <prefix>_configs.yaml beside the checkpoint, if present."""


def main(argv: list[str]) -> int:
    args = tyro.cli(ConvertOfficialArgs, args=argv, prog="diffusiongs convert-official")
    folder, report = convert_official_checkpoint(
        args.checkpoint, args.out, kind=None if args.kind == "auto" else args.kind, resolution=args.resolution,
        camera_template=args.camera_template, template_tolerance_deg=args.template_tolerance, config=args.config)
    arch = report.architecture
    print(f"{args.checkpoint}: official {arch.kind} model at {report.resolution} px, width {arch.width}, "
          f"depth {arch.depth}, {arch.num_heads} heads, patch {arch.patch_size}, "
          f"{arch.num_global_tokens} global tokens, {arch.ray_embedding} rays (heads and rays from {arch.source}); "
          f"dropped {report.dropped_loss_tensors} loss-network tensors")
    if report.template is not None:
        rig = report.template.rig
        print(f"object rig: radius {rig.radius:g}, elevation {rig.elevation_deg:g} deg, fov {rig.fov_deg:.4g} deg "
              f"(template fit within {report.template.max_deviation_deg:.3f} deg)")
    print(f"wrote {folder}")
    return 0
