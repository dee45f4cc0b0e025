"""Samplers and step counts against the paper's DDIM-30 on one model and dataset (evaluation protocol of
docs/RESULTS.md): PSNR, SSIM, LPIPS, FD-VGG16 and seconds per object for every setting, and the fastest setting
whose PSNR stays within ``--tolerance-db`` of the reference. FD-VGG16 (with LPIPS weights) compares the rendered and
true views as distributions: a setting that blurs can gain PSNR and still lose there.

    python benchmarks/solver_sweep.py --checkpoint RUN --data DIR --out REPORT [--limit 32]

Writes REPORT/sweep.json and REPORT/sweep.md. Every setting sees the same items and the same initial noise (one
seed); seconds per object is the median generation time (device synchronised), after one untimed warm-up
generation that absorbs compilation.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
import tyro

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusiongs.configio import config_to_dict  # noqa: E402
from diffusiongs.data.store import atomic_write_bytes  # noqa: E402
from diffusiongs.diffusion import SAMPLERS, SamplerConfig  # noqa: E402
from diffusiongs.errors import InputError, exit_with  # noqa: E402
from diffusiongs.evaluation import (  # noqa: E402
    EvalCase,
    ModelPredictor,
    ProtocolConfig,
    Skipped,
    describe_protocol,
    evaluate,
    iter_cases,
    open_reader,
)
from diffusiongs.evaluation.report import (  # noqa: E402
    DIGITS,
    format_value,
    machine_info,
    markdown_table,
    utc_now,
    write_json,
)
from diffusiongs.inference.pipeline import Pipeline  # noqa: E402
from diffusiongs.metrics.lpips import LPIPSConfig, load_lpips  # noqa: E402

DEFAULT_GRID = ("ddim:30", "dpmpp2m:5", "dpmpp2m:8", "dpmpp2m:10", "dpmpp2m:15", "dpmpp2m:20", "ddim:10", "ddim:15",
                "ddim:20", "ddpm:30")


@dataclass(frozen=True)
class SweepConfig:
    """Compare samplers and step counts under the evaluation protocol."""

    checkpoint: Path
    """Model folder (exported model, checkpoint or run folder) of a diffusion model."""
    data: Path
    """Dataset in this project's format."""
    out: Path = Path("runs/solver_sweep")
    """Report folder (sweep.json, sweep.md)."""
    protocol: Annotated[ProtocolConfig, tyro.conf.OmitArgPrefixes] = field(
        default_factory=lambda: ProtocolConfig(limit=32))
    settings: tuple[str, ...] = DEFAULT_GRID
    """Settings as SAMPLER:STEPS (ddim, ddpm, dpmpp2m)."""
    reference: str = "ddim:30"
    """The setting the others are compared with (the paper's DDIM-30); added to the grid if missing."""
    tolerance_db: float = 0.5
    """A setting qualifies when its PSNR is at least the reference's minus this."""
    seed: int = 0
    """Seed of the initial noise (the same for every item and setting)."""
    lpips: bool = True
    """Score LPIPS-VGG (n/a without weights)."""
    lpips_resolution: int | None = 256
    compile: bool = False
    """CUDA only: torch.compile the network with CUDA graphs (the warm-up generation pays the compilation)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    progress: bool = True


def parse_setting(text: str) -> SamplerConfig:
    """``"dpmpp2m:10"`` -> SamplerConfig(name="dpmpp2m", num_steps=10)."""
    name, _, steps = text.partition(":")
    if name not in SAMPLERS or not steps.isdigit() or int(steps) < 1:
        raise InputError(f"--settings {text!r}: expected SAMPLER:STEPS with SAMPLER one of {sorted(SAMPLERS)}")
    return SamplerConfig(name=name, num_steps=int(steps))


def fastest_within(rows: list[dict[str, Any]], reference: dict[str, Any], tolerance_db: float) -> dict[str, Any]:
    """The row with the smallest seconds per object among those whose PSNR is >= the reference's - tolerance
    (the reference itself always qualifies)."""
    qualified = [r for r in rows if r["psnr"] >= reference["psnr"] - tolerance_db]
    return min(qualified, key=lambda r: r["seconds_per_object"])


def sweep(cfg: SweepConfig, cases: list[EvalCase], pipeline: Pipeline, lpips) -> list[dict[str, Any]]:
    """Evaluate every setting on the same cases; one row per setting."""
    grid = list(dict.fromkeys([cfg.reference, *cfg.settings]))
    samplers = [parse_setting(s) for s in grid]
    ModelPredictor(pipeline, samplers[0], cfg.seed).predict(cases[0])  # warm-up: compilation, caches
    rows = []
    for text, sampler in zip(grid, samplers):
        summary = evaluate(ModelPredictor(pipeline, sampler, cfg.seed), cases, lpips, geometry=None, sheet_items=0,
                           progress=cfg.progress).summary()
        rows.append({"setting": text, "sampler": sampler.name, "steps": sampler.num_steps, "psnr": summary["psnr"],
                     "ssim": summary["ssim"], "lpips": summary["lpips"], "fd_vgg": summary["fd_vgg"],
                     "seconds_per_object": summary["seconds_median"], "seconds_mean": summary["seconds_mean"]})
        print(f"{text}: PSNR {summary['psnr']:.2f}, {summary['seconds_median']:.3f} s/object", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], reference: dict[str, Any], best: dict[str, Any], header: list[str],
             tolerance_db: float) -> str:
    table = [[r["sampler"], str(r["steps"]), format_value(r["psnr"], 2), f"{r['psnr'] - reference['psnr']:+.2f}",
              format_value(r["ssim"], DIGITS["ssim"]), format_value(r["lpips"], DIGITS["lpips"]),
              format_value(r["fd_vgg"], DIGITS["fd_vgg"]), format_value(r["seconds_per_object"], 3),
              f"{reference['seconds_per_object'] / r['seconds_per_object']:.2f}x"] for r in rows]
    return "\n".join([
        *header, "",
        markdown_table(["sampler", "steps", "PSNR ↑", "Δ PSNR", "SSIM ↑", "LPIPS ↓", "FD-VGG16 ↓", "s/object",
                        "speed-up"], table),
        "",
        f"Fastest setting within {tolerance_db} dB of {reference['setting']}: **{best['setting']}** "
        f"({best['seconds_per_object']:.3f} s/object, PSNR {best['psnr']:.2f}).", ""])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = tyro.cli(SweepConfig, args=argv, prog="python benchmarks/solver_sweep.py")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    pipeline = Pipeline.from_pretrained(cfg.checkpoint, device=device, compile=cfg.compile)
    if pipeline.cfg.deterministic:
        raise InputError(f"{cfg.checkpoint}: a deterministic model predicts in one pass; it has no sampler to sweep")
    loaded = list(iter_cases(open_reader(cfg.data, cfg.protocol), cfg.protocol, pipeline.cfg.resolution,
                             pipeline.cfg.view_layout, pipeline.cfg.num_noisy_views))
    cases = [c for c in loaded if not isinstance(c, Skipped)]
    if not cases:
        raise InputError(f"{cfg.data}: no usable {cfg.protocol.domain} items in split '{cfg.protocol.split}'")
    lpips = load_lpips(config=LPIPSConfig(resize_to=cfg.lpips_resolution), device=device) if cfg.lpips else None
    rows = sweep(cfg, cases, pipeline, lpips)
    reference = rows[0]
    best = fastest_within(rows, reference, cfg.tolerance_db)
    machine, date, command = machine_info(device), utc_now(), shlex.join(["python", "benchmarks/solver_sweep.py",
                                                                          *argv])
    res = pipeline.cfg.resolution
    header = ["# Sampler sweep", "",
              f"Model `{cfg.checkpoint}`, data `{cfg.data}` (split '{cfg.protocol.split}', {len(cases)} items, "
              f"{len(loaded) - len(cases)} skipped), {res}x{res}, seed {cfg.seed}; "
              f"{describe_protocol(cfg.protocol, pipeline.cfg.view_layout, pipeline.cfg.num_noisy_views)}.",
              f"LPIPS: {'n/a (no weights)' if lpips is None else 'VGG16 v0.1'}. s/object: median generation time. "
              f"Machine: {machine['device']}, torch {machine['torch']}; {date}.", f"Command: `{command}`"]
    cfg.out.mkdir(parents=True, exist_ok=True)
    write_json(cfg.out / "sweep.json", {
        "rows": rows, "reference": reference["setting"], "tolerance_db": cfg.tolerance_db,
        "fastest_within_tolerance": best["setting"], "items": len(cases), "skipped": len(loaded) - len(cases),
        "resolution": res, "config": config_to_dict(cfg), "machine": machine, "date": date, "command": command})
    atomic_write_bytes(cfg.out / "sweep.md", markdown(rows, reference, best, header, cfg.tolerance_db).encode())
    print(f"fastest within {cfg.tolerance_db} dB of {reference['setting']}: {best['setting']}; "
          f"report in {cfg.out}")
    return 0


if __name__ == "__main__":
    exit_with(main, "solver_sweep")
