"""What the default export filter of ``generate`` removes, and whether the turntable can tell.

For each image: generate with the given model (the README's settings by default: 30 DDIM steps, seed 0), count the
predicted Gaussians with opacity <= 0.02, those pinned to the decoder's clip box, and those the default filter keeps;
then render the turntable (36 frames) of the full and of the pruned set and compare them (PSNR per frame, on the
model's white background; identical frames give inf). PLY sizes are those of the two sets as written.

    python benchmarks/export_pruning.py examples/images/*.png --out benchmarks/results/export_pruning.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusiongs.diffusion import SamplerConfig  # noqa: E402
from diffusiongs.evaluation.report import machine_info, utc_now  # noqa: E402
from diffusiongs.gaussians import save_ply  # noqa: E402
from diffusiongs.inference import DEFAULT_MODEL_DIR, ExportFilter, GenerateConfig, OutputConfig, Pipeline  # noqa: E402
from diffusiongs.inference.outputs import render_turntable  # noqa: E402
from diffusiongs.metrics.image import psnr  # noqa: E402


@dataclass(frozen=True)
class PruningConfig:
    """Count and compare the full and the pruned Gaussians of generated objects."""

    images: tyro.conf.Positional[tuple[Path, ...]]
    checkpoint: Path = DEFAULT_MODEL_DIR
    steps: int = 30
    seed: int = 0
    turntable_size: int | None = None
    """Turntable frame side (default: the model's resolution, as `generate` writes it)."""
    out: Path = Path("export_pruning.json")


def ply_megabytes(gaussians, folder: Path, name: str) -> float:
    return save_ply(gaussians, folder / name).stat().st_size / 1e6


def measure(pipeline: Pipeline, image: Path, cfg: PruningConfig, scratch: Path) -> dict:
    keep_all = ExportFilter(min_opacity=0.0, drop_clipped=False)
    generate = GenerateConfig(sampler=SamplerConfig(num_steps=cfg.steps), seed=cfg.seed, export=keep_all)
    full = pipeline(image, generate)
    clip_box = pipeline.cfg.object_decode.clip_box
    g = full.gaussians
    transparent = g.opacities <= ExportFilter.min_opacity
    pinned = (g.means.abs() >= clip_box).any(-1) if clip_box is not None else torch.zeros_like(transparent)
    pruned = replace(full, gaussians=ExportFilter().apply(g, clip_box))
    output = OutputConfig(turntable_size=cfg.turntable_size)
    frames_full, frames_pruned = (render_turntable(pipeline, result, output) for result in (full, pruned))
    per_frame = psnr(frames_pruned, frames_full)
    return {
        "image": str(image), "foreground": full.condition.foreground,
        "predicted": g.num_gaussians, "opacity_le_0.02": int(transparent.sum()),
        "pinned_to_clip_box": int(pinned.sum()),
        "pinned_and_opaque": int((pinned & ~transparent).sum()), "kept": pruned.gaussians.num_gaussians,
        "kept_fraction": pruned.gaussians.num_gaussians / g.num_gaussians,
        "ply_mb_full": ply_megabytes(g, scratch, "full.ply"),
        "ply_mb_pruned": ply_megabytes(pruned.gaussians, scratch, "pruned.ply"),
        "turntable_frames": int(per_frame.numel()), "turntable_size": int(frames_full.shape[-1]),
        "turntable_psnr_db_min": float(per_frame.min()), "turntable_psnr_db_mean": float(per_frame.mean()),
        "turntable_max_abs_diff": float((frames_pruned - frames_full).abs().max()),
    }


def main(cfg: PruningConfig) -> dict:
    pipeline = Pipeline.from_pretrained(cfg.checkpoint, device="cpu")
    with tempfile.TemporaryDirectory() as scratch:
        rows = [measure(pipeline, image, cfg, Path(scratch)) for image in cfg.images]
    report = {"command": " ".join(sys.argv), "date": utc_now(), "machine": machine_info("cpu"),
              "checkpoint": str(cfg.checkpoint), "steps": cfg.steps, "seed": cfg.seed, "images": rows}
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(report, indent=2) + "\n")
    for row in rows:
        print(f"{Path(row['image']).name}: kept {row['kept']} of {row['predicted']} "
              f"({100 * row['kept_fraction']:.1f} %); opacity <= 0.02: {row['opacity_le_0.02']}, "
              f"pinned: {row['pinned_to_clip_box']} ({row['pinned_and_opaque']} of them opaque); "
              f"PLY {row['ply_mb_full']:.1f} -> {row['ply_mb_pruned']:.1f} MB; turntable PSNR min "
              f"{row['turntable_psnr_db_min']:.1f} dB, max |diff| {row['turntable_max_abs_diff']:.4f}")
    return report


if __name__ == "__main__":
    main(tyro.cli(PruningConfig))
