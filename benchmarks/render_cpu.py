"""Benchmark of the CPU renderer (numba ``cpu`` backend, with the pure-torch backend for comparison).

Targets (2-core project machine): forward of 65,536 Gaussians at 128x128 in <= 0.3 s; forward+backward of 16,384
Gaussians at 64x64 in <= 1 s; one view each. Scenes are pixel-aligned splats as the model makes them
(:func:`object_splats`), rendered from another orbit camera. Also measured: several views in one call, one vs all
numba threads, and numba's compile time (first call with an empty cache, in a subprocess) against a cached load.

    python benchmarks/render_cpu.py [--repeats 7] [--skip-torch]

Prints one Markdown table (median and min over the repeats, after a warm-up call).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusiongs.gaussians import Gaussians  # noqa: E402
from diffusiongs.geometry import Cameras, orbit_cameras, pixel_rays  # noqa: E402
from diffusiongs.geometry.rays import reference_depth  # noqa: E402
from diffusiongs.render import RenderConfig, render  # noqa: E402

OBJECT_RADIUS = 0.8
"""The benchmark object is a sphere of this radius; rays that miss it end at their RPPC reference point."""


def object_splats(num_views: int, resolution: int, batch: int = 1, seed: int = 0,
                  device: str = "cpu") -> Gaussians:
    """Pixel-aligned Gaussians like the model predicts: one per pixel of ``num_views`` orbit views (radius 3,
    elevation 20 degrees, 50 degree field of view), ``[batch, num_views * resolution², ...]``.

    A pixel's Gaussian sits on its ray where the ray meets a sphere of radius 0.8, or at the ray's point closest to
    the origin where it misses; depth jitter 0.02; centres clipped into [-1, 1]^3 (the object decode's box).
    Scales log-uniform in [0.01, 0.1], opacities uniform in [0.1, 0.9], random rotations and colours. Background
    Gaussians are as opaque as the object's: heavier than a trained model's output, where they fade out.
    """
    g = torch.Generator().manual_seed(seed)
    origins, dirs = pixel_rays(orbit_cameras(num_views, 3.0, 20.0, 50.0, resolution))
    origins, dirs = origins.reshape(1, -1, 3), dirs.reshape(1, -1, 3)
    n = origins.shape[1]
    half_b = (origins * dirs).sum(-1)
    disc = half_b * half_b - ((origins * origins).sum(-1) - OBJECT_RADIUS ** 2)
    depth = torch.where(disc > 0, -half_b - disc.clamp(min=0).sqrt(), reference_depth(origins, dirs))
    depth = depth + 0.02 * torch.randn(batch, n, generator=g)
    means = (origins + depth[..., None] * dirs).clamp(-1.0, 1.0)
    log_scales = torch.empty(batch, n, 3).uniform_(math.log(0.01), math.log(0.1), generator=g)
    quats = torch.nn.functional.normalize(torch.randn(batch, n, 4, generator=g), dim=-1)
    gaussians = Gaussians(means=means, quats=quats, scales=log_scales.exp(),
                          opacities=torch.empty(batch, n).uniform_(0.1, 0.9, generator=g),
                          colors=torch.rand(batch, n, 3, generator=g))
    return gaussians.to(device)


def target_cameras(resolution: int, num_views: int = 1, batch: int = 1, device: str = "cpu") -> Cameras:
    """``[batch, num_views]`` orbit cameras between the input views (azimuth offset 45 degrees)."""
    cams = orbit_cameras(num_views, 3.0, 20.0, 50.0, resolution, start_azimuth_deg=45.0)
    c2w = cams.c2w.expand(batch, num_views, 4, 4).contiguous()
    return Cameras(c2w, cams.K.expand(batch, num_views, 3, 3).contiguous(), resolution, resolution).to(device)


def time_render(gaussians: Gaussians, cameras: Cameras, backend: str, backward: bool, repeats: int,
                deferred: bool = False) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls after one warm-up call."""
    cfg = RenderConfig(backend=backend, deferred=deferred)
    background = torch.ones(3, device=gaussians.device)
    times = []
    for i in range(repeats + 1):
        leaves = [t.detach().clone().requires_grad_(backward) for t in
                  (gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities, gaussians.colors)]
        start = time.perf_counter()
        out = render(Gaussians(*leaves), cameras, background, cfg)
        if backward:
            (out.rgb.sum() + out.depth.mean()).backward()
        if i > 0:
            times.append(time.perf_counter() - start)
    return times


def one_call_per_view(gaussians: Gaussians, cameras: Cameras, repeats: int) -> list[float]:
    """Like :func:`time_render` (forward+backward) but rendering the views one call at a time."""
    num_batch, num_views = cameras.batch_shape
    per_view = [[time_render(gaussians[b:b + 1], cameras[b:b + 1, v:v + 1], "cpu", True, repeats)
                 for v in range(num_views)] for b in range(num_batch)]
    return [sum(view[i] for row in per_view for view in row) for i in range(repeats)]


COMPILE_PROBE = """
import json, time, torch
from diffusiongs.gaussians import Gaussians
from diffusiongs.render import RenderConfig, render
from benchmarks_render_cpu import object_splats, target_cameras
g = object_splats(1, 16)
cams = target_cameras(16)
result = {}
for label in ("first", "second"):
    colors = g.colors.clone().requires_grad_()
    start = time.perf_counter()
    out = render(Gaussians(g.means, g.quats, g.scales, g.opacities, colors), cams, torch.ones(3),
                 RenderConfig(backend="cpu"))
    middle = time.perf_counter()
    out.rgb.sum().backward()
    result[label] = (middle - start, time.perf_counter() - middle)
print(json.dumps(result))
"""


def compile_times(cache_dir: str) -> dict[str, tuple[float, float]]:
    """(forward, backward) seconds of the first and second call in a fresh process using ``cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    with tempfile.TemporaryDirectory() as alias_dir:
        # Import this file under a module name (its own name is not importable from a subprocess's cwd).
        os.symlink(Path(__file__).resolve(), Path(alias_dir) / "benchmarks_render_cpu.py")
        env["PYTHONPATH"] = os.pathsep.join([alias_dir, str(Path(__file__).resolve().parents[1])])
        result = subprocess.run([sys.executable, "-c", COMPILE_PROBE], env=env, capture_output=True, text=True,
                                check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--skip-torch", action="store_true", help="leave out the (slow) pure-torch backend")
    args = parser.parse_args()

    import numba

    rows = []

    def add(case: str, backend: str, fn: Callable[[], list[float]]) -> None:
        times = fn()
        rows.append((case, backend, statistics.median(times), min(times), len(times)))
        print(f"{case:52s} {backend:6s} median {statistics.median(times):.4f} s  min {min(times):.4f} s", flush=True)

    print(f"load average before: {os.getloadavg()}; torch threads {torch.get_num_threads()}, "
          f"numba threads {numba.get_num_threads()}")
    with tempfile.TemporaryDirectory() as cache:
        cold, warm = compile_times(cache), compile_times(cache)
    print(f"numba, empty cache: first call fwd {cold['first'][0]:.2f} s + bwd {cold['first'][1]:.2f} s "
          f"(then {cold['second'][0]:.3f} + {cold['second'][1]:.3f} s); from the cache in a new process: "
          f"fwd {warm['first'][0]:.2f} s + bwd {warm['first'][1]:.2f} s", flush=True)

    fwd_scene, fwd_cams = object_splats(4, 128), target_cameras(128)
    bwd_scene, bwd_cams = object_splats(4, 64), target_cameras(64)
    backends = ["cpu"] if args.skip_torch else ["cpu", "torch"]
    for backend in backends:
        repeats = args.repeats if backend == "cpu" else max(2, args.repeats // 3)
        add("forward, 65,536 Gaussians, 128x128, 1 view", backend,
            lambda b=backend, r=repeats: time_render(fwd_scene, fwd_cams, b, False, r))
        add("forward+backward, 16,384 Gaussians, 64x64, 1 view", backend,
            lambda b=backend, r=repeats: time_render(bwd_scene, bwd_cams, b, True, r))
    many_scene, many_cams = object_splats(4, 64, batch=2), target_cameras(64, num_views=4, batch=2)
    add("forward+backward, 2 x 16,384 Gaussians, 64x64, 2 x 4 views", "cpu",
        lambda: time_render(many_scene, many_cams, "cpu", True, args.repeats))
    add("same, one render call per view", "cpu", lambda: one_call_per_view(many_scene, many_cams, args.repeats))
    add("same, deferred", "cpu", lambda: time_render(many_scene, many_cams, "cpu", True, args.repeats, deferred=True))
    numba.set_num_threads(1)
    add("same, 1 numba thread (torch ops keep 2)", "cpu",
        lambda: time_render(many_scene, many_cams, "cpu", True, args.repeats))
    numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    print(f"load average after: {os.getloadavg()}; numba threading layer {numba.threading_layer()}")

    print("\n| case | backend | median (s) | min (s) | runs |\n|---|---|---|---|---|")
    for case, backend, median, best, runs in rows:
        print(f"| {case} | {backend} | {median:.4f} | {best:.4f} | {runs} |")
    print(f"\nnumba compile (empty cache, first call, 16x16 scene): forward {cold['first'][0]:.2f} s, "
          f"backward {cold['first'][1]:.2f} s; loading the cached kernels in a new process: forward "
          f"{warm['first'][0]:.2f} s, backward {warm['first'][1]:.2f} s")


if __name__ == "__main__":
    main()
