"""Speed of mesh extraction (``diffusiongs.inference.mesh``) by stage, on the CPU or a GPU.

    python benchmarks/mesh_speed.py [--device cpu|cuda] [--repeats 3] [--resolutions 96 128 256] [--out FILE.json]

The Gaussians are the shipped demo model's result for ``examples/images/checker_cube.png`` (DDIM, 30 steps, seed 0),
generated once per call on the same device. For each grid resolution (the other settings at their defaults: 24
renders of 192 px, band 3 voxels) it times, after one untimed warm-up, the renders (gsplat on CUDA, numba on the
CPU), the fusion (on the device), marching cubes, vertex colours and dropping small pieces (NumPy/scikit-image on
the CPU) and writing the GLB; the device is synchronised around every stage. Prints a Markdown table (median and
min over the repeats); ``--out`` also writes it as JSON with the machine, the date and the load average.

On the GPU machine: ``source benchmarks/gpu_env.sh && python3 benchmarks/mesh_speed.py --device cuda --out
$OUT/mesh_speed_gpu.json`` (the carried wheels must include trimesh; scikit-image is already there).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusiongs.evaluation.report import machine_info, utc_now  # noqa: E402
from diffusiongs.inference.mesh import MeshConfig, extract_mesh, require_mesh_extra, save_glb  # noqa: E402
from diffusiongs.inference.pipeline import Pipeline  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "images" / "checker_cube.png"
STAGES = ("render", "fuse", "marching_cubes", "colors", "components", "write_glb")


def timed_stages(gaussians, cfg: MeshConfig, glb: Path) -> tuple[dict[str, float], int]:
    """Seconds per stage of one extraction and GLB write, and the face count."""
    times: dict[str, float] = {}
    mesh = extract_mesh(gaussians, cfg, timings=times)
    start = time.perf_counter()
    save_glb(mesh, glb)
    times["write_glb"] = time.perf_counter() - start
    return times, mesh.num_faces


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[96, 128, 256])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    require_mesh_extra()
    device = torch.device(args.device)

    load_before = os.getloadavg()
    pipeline = Pipeline.from_pretrained(device=device)
    gaussians = pipeline(EXAMPLE).gaussians.to(device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            cfg = replace(MeshConfig(), resolution=resolution)
            runs = [timed_stages(gaussians, cfg, Path(tmp) / "mesh.glb") for _ in range(args.repeats + 1)][1:]
            totals = [sum(times.values()) for times, _ in runs]
            row = {"resolution": resolution, "faces": runs[0][1], "total_median_s": statistics.median(totals),
                   "total_min_s": min(totals),
                   **{f"{s}_median_s": statistics.median(times[s] for times, _ in runs) for s in STAGES}}
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = machine_info(device)
    header = (f"{machine['device']}, {machine['cpu_count']} CPU cores, torch {machine['torch']}, {utc_now()}; "
              f"load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}; "
              f"{gaussians.num_gaussians} Gaussians in the result")
    print(f"\n{header}\n")
    print("| grid | faces | total (median / min, s) | " + " | ".join(STAGES) + " |")
    print("|---|---|---|" + "---|" * len(STAGES))
    for row in rows:
        stages = " | ".join(f"{row[f'{s}_median_s']:.3f}" for s in STAGES)
        print(f"| {row['resolution']}^3 | {row['faces']} | {row['total_median_s']:.2f} / {row['total_min_s']:.2f} "
              f"| {stages} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"machine": machine, "date": utc_now(), "load_before": load_before,
                                        "load_after": os.getloadavg(), "command": " ".join(sys.argv),
                                        "num_gaussians": gaussians.num_gaussians, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
