"""gsplat against our renderers on a GPU, and gsplat's speed at training scale, plain vs deferred.

Run from the repository root on the GPU machine, with gsplat 1.5.3 installed (its first call JIT-compiles the CUDA
extension, about a minute) and numba for the CPU comparison:

    python benchmarks/gpu_render_check.py [--out PATH]

1. Agreement on pixel-aligned object scenes (benchmarks/render_cpu.py: ``object_splats``): gsplat on CUDA vs our
   ``torch`` backend on CUDA and vs our ``cpu`` backend on CPU copies. Forward (rgb, alpha, depth) and the
   gradients of a random linear function of them w.r.t. every Gaussian parameter and the background: max and mean
   absolute error, max error relative to the largest reference value, and relative L2 error.
2. Deferred vs plain gsplat gradients on the same scenes.
3. Timing: gsplat forward+backward, 8 objects x 4 views, 4 x 256² = 262,144 Gaussians each, at 256x256, plain vs
   deferred: median time and peak allocated memory.

Every part runs on its own: a failure is printed and the rest goes on. Prints a Markdown summary last and writes
all numbers as JSON to ``--out`` (default ``$OUT/render_check.json`` when ``OUT`` is set), and the scenes with
gsplat's outputs and gradients to ``--save-reference`` (default ``$OUT/render_check_gsplat.pt``, about 13 MB). Where
numba is not installed on the GPU machine, compare the ``cpu`` backend afterwards on any CPU machine:

    python benchmarks/gpu_render_check.py --compare render_check_gsplat.pt --out render_check_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from render_cpu import object_splats, target_cameras  # noqa: E402

from diffusiongs.gaussians import Gaussians  # noqa: E402
from diffusiongs.geometry import Cameras  # noqa: E402
from diffusiongs.render import RenderConfig, render  # noqa: E402

FIELDS = ("means", "quats", "scales", "opacities", "colors")
OUTPUTS = ("rgb", "alpha", "depth")

SCENES: dict[str, dict] = {
    # name: object_splats arguments, target views and resolution
    "2 objects, 4x64² Gaussians each, 3 views at 64²": dict(num_views=4, resolution=64, batch=2, seed=1,
                                                           target_views=3, target_resolution=64),
    "1 object, 4x128² Gaussians, 2 views at 128²": dict(num_views=4, resolution=128, batch=1, seed=2,
                                                       target_views=2, target_resolution=128),
    "1 object, 4x32² Gaussians, 4 views at 96²": dict(num_views=4, resolution=32, batch=1, seed=3,
                                                     target_views=4, target_resolution=96),
}


def build_scene(spec: dict) -> tuple[Gaussians, Cameras]:
    gaussians = object_splats(spec["num_views"], spec["resolution"], batch=spec["batch"], seed=spec["seed"])
    return gaussians, target_cameras(spec["target_resolution"], spec["target_views"], spec["batch"])


def render_with_grads(gaussians: Gaussians, cameras: Cameras, cfg: RenderConfig,
                      device: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs and gradients (as float64 CPU tensors) of a fixed random linear function of the outputs."""
    leaves = {f: getattr(gaussians, f).detach().to(device).clone().requires_grad_() for f in FIELDS}
    background = torch.tensor([0.9, 0.95, 1.0], device=device, requires_grad=True)
    out = render(Gaussians(**leaves), cameras.to(device), background, cfg)
    outputs = {name: getattr(out, name) for name in OUTPUTS}
    generator = torch.Generator().manual_seed(0)
    loss = sum((o * torch.randn(o.shape, generator=generator).to(device)).sum() for o in outputs.values())
    loss.backward()
    grads = {**{f: t.grad for f, t in leaves.items()}, "background": background.grad}
    as_cpu = lambda d: {k: v.detach().double().cpu() for k, v in d.items()}
    return as_cpu(outputs), as_cpu(grads)


def errors(actual: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    diff = (actual - reference).abs()
    return {"max_abs": diff.max().item(), "mean_abs": diff.mean().item(),
            "max_rel_to_max": (diff.max() / reference.abs().max().clamp(min=1e-30)).item(),
            "rel_l2": ((actual - reference).norm() / reference.norm().clamp(min=1e-30)).item()}


def compare(run: Callable[[RenderConfig, str], tuple[dict, dict]], backend: str, device: str,
            reference: tuple[dict, dict], deferred: bool = False) -> dict[str, dict[str, float]]:
    outputs, grads = run(RenderConfig(backend=backend, deferred=deferred), device)
    result = {name: errors(outputs[name], reference[0][name]) for name in OUTPUTS}
    result.update({f"grad_{name}": errors(grads[name], reference[1][name]) for name in reference[1]})
    label = f"{backend}{' deferred' if deferred else ''} ({device})"
    for name, e in result.items():
        print(f"  {label:22s} {name:16s} max {e['max_abs']:.3e}  mean {e['mean_abs']:.3e}  "
              f"max/max|ref| {e['max_rel_to_max']:.3e}  rel L2 {e['rel_l2']:.3e}")
    return result


def check_scene(scene: dict, gaussians: Gaussians, cameras: Cameras, reference: tuple[dict, dict],
                candidates: tuple[tuple[str, str, bool], ...]) -> None:
    """Compare each (backend, device, deferred) candidate with ``reference``; results (or errors) go to ``scene``."""
    run = lambda cfg, device: render_with_grads(gaussians, cameras, cfg, device)
    for backend, device, deferred in candidates:
        key = f"{backend}{'_deferred' if deferred else ''}"
        try:
            scene[key] = compare(run, backend, device, reference, deferred)
        except Exception as exc:  # report and go on
            traceback.print_exc()
            scene[key] = {"error": repr(exc)}


def agreement(report: dict, saved: dict) -> None:
    """gsplat against our backends on every scene; gsplat's inputs and results go to ``saved``."""
    start = time.perf_counter()
    render_with_grads(*build_scene(next(iter(SCENES.values()))), RenderConfig(backend="gsplat"), "cuda")
    report["gsplat_first_call_s"] = time.perf_counter() - start
    print(f"gsplat first call (includes the JIT build unless cached): {report['gsplat_first_call_s']:.1f} s")
    for name, spec in SCENES.items():
        print(f"\n{name}")
        scene = report.setdefault("agreement", {}).setdefault(name, {})
        try:
            gaussians, cameras = build_scene(spec)
            reference = render_with_grads(gaussians, cameras, RenderConfig(backend="gsplat"), "cuda")
        except Exception as exc:  # report and go on
            traceback.print_exc()
            scene["error"] = repr(exc)
            continue
        as_float = lambda d: {k: v.float() for k, v in d.items()}  # gsplat's values are float32: lossless
        saved[name] = {"gaussians": {f: getattr(gaussians, f) for f in FIELDS}, "c2w": cameras.c2w, "K": cameras.K,
                       "size": (cameras.width, cameras.height), "outputs": as_float(reference[0]),
                       "grads": as_float(reference[1])}
        check_scene(scene, gaussians, cameras, reference,
                    (("torch", "cuda", False), ("cpu", "cpu", False), ("gsplat", "cuda", True)))


def compare_saved(report: dict, path: str) -> None:
    """Our CPU-side backends against gsplat results saved by a GPU run (for machines without a GPU)."""
    for name, item in torch.load(path).items():
        print(f"\n{name}")
        gaussians = Gaussians(**item["gaussians"])
        cameras = Cameras(item["c2w"], item["K"], *item["size"])
        scene = report.setdefault("agreement", {}).setdefault(name, {})
        as_double = lambda d: {k: v.double() for k, v in d.items()}
        check_scene(scene, gaussians, cameras, (as_double(item["outputs"]), as_double(item["grads"])),
                    (("cpu", "cpu", False), ("torch", "cpu", False)))


def timing(report: dict, repeats: int) -> None:
    gaussians = object_splats(4, 256, batch=8, seed=4).to("cuda")
    cameras = target_cameras(256, num_views=4, batch=8, device="cuda")
    background = torch.ones(3, device="cuda")
    batch, views = cameras.batch_shape
    report["timing_case"] = (f"gsplat fwd+bwd, {batch} objects x {views} views, {gaussians.num_gaussians:,} "
                             f"Gaussians each, {cameras.width}x{cameras.height}")
    print(f"\ntiming: {report['timing_case']}")
    for deferred in (False, True):
        cfg = RenderConfig(backend="gsplat", deferred=deferred)
        times = []
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        for i in range(repeats + 3):
            leaves = [t.detach().clone().requires_grad_() for t in
                      (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors)]
            torch.cuda.synchronize()
            start = time.perf_counter()
            out = render(Gaussians(*leaves), cameras, background, cfg)
            (out.rgb.square().mean() + out.alpha.mean()).backward()
            torch.cuda.synchronize()
            if i >= 3:
                times.append(time.perf_counter() - start)
        key = "deferred" if deferred else "plain"
        report.setdefault("timing", {})[key] = {
            "median_ms": 1e3 * statistics.median(times), "min_ms": 1e3 * min(times), "runs": len(times),
            "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20}
        t = report["timing"][key]
        print(f"  gsplat {key:8s} fwd+bwd median {t['median_ms']:.1f} ms (min {t['min_ms']:.1f}), "
              f"peak +{t['peak_mib']:.0f} MiB")


def summary(report: dict) -> str:
    lines = ["| scene | vs gsplat | rgb max abs | depth max abs | worst grad rel L2 |", "|---|---|---|---|---|"]
    for scene, results in report.get("agreement", {}).items():
        for key, result in results.items():
            if not isinstance(result, dict) or "error" in result:
                lines.append(f"| {scene} | {key} | error | | |")
                continue
            grads = {k: v["rel_l2"] for k, v in result.items() if k.startswith("grad_")}
            worst = max(grads, key=grads.get)
            lines.append(f"| {scene} | {key} | {result['rgb']['max_abs']:.2e} | {result['depth']['max_abs']:.2e} | "
                         f"{grads[worst]:.2e} ({worst[5:]}) |")
    if "timing" in report:
        lines += ["", f"| {report['timing_case']} | median ms | peak MiB |", "|---|---|---|"]
        lines += [f"| {k} | {v['median_ms']:.1f} | {v['peak_mib']:.0f} |" for k, v in report["timing"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default_out = os.path.join(os.environ["OUT"], "render_check.json") if "OUT" in os.environ else None
    parser.add_argument("--out", default=default_out, help="where to write the JSON report")
    parser.add_argument("--repeats", type=int, default=10, help="timed iterations per timing case")
    parser.add_argument("--save-reference", default=default_out and default_out.replace(".json", "_gsplat.pt"),
                        help="where to save the scenes and gsplat's outputs and gradients (for --compare)")
    parser.add_argument("--compare", metavar="SAVED",
                        help="no GPU needed: compare our cpu and torch backends on CPU with a saved gsplat reference")
    args = parser.parse_args()

    report: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                    "torch": torch.__version__}
    try:
        import gsplat
        report["gsplat"] = gsplat.__version__
    except Exception as exc:  # report and go on
        report["gsplat"] = repr(exc)
    saved: dict = {}
    parts = [lambda r: compare_saved(r, args.compare)] if args.compare else [
        lambda r: agreement(r, saved), lambda r: timing(r, args.repeats)]
    for part in parts:
        try:
            part(report)
        except Exception as exc:  # report and go on
            traceback.print_exc()
            report.setdefault("errors", []).append(repr(exc))
    print("\n" + summary(report))
    if saved and args.save_reference:
        Path(args.save_reference).parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, args.save_reference)
        print(f"\nsaved the gsplat reference to {args.save_reference}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
