"""Throughput of the dataset makers and of reading their output back as training samples (CPU, headless EGL).

1. `diffusiongs data render`: end-to-end views per second (mesh loading, normalisation, rendering, PNG encoding,
   atomic writes, process start-up), as a user runs it. The mesh set is made here, so nothing is downloaded: a
   textured sphere (20k faces, 1024^2 texture), a vertex-coloured sphere (39k faces), a procedural multi-part
   object, and -- when `assimp-testmodels` is installed -- the Collada duck, the textured glTF box and the OBJ
   spider; the set is repeated ``--copies`` times.
2. `diffusiongs data synth`: views per second for ``--synth-objects`` procedural objects.
3. Training samples per second read back from the rendered dataset (1 + 3 + 6 views at ``--res``), in the main
   process and with DataLoader workers.

    python benchmarks/render_meshes.py --workers 2 --res 256 --views 32 --copies 4
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from diffusiongs.data.capture import ObjectCameraConfig, OutputConfig
from diffusiongs.data.dataset import MultiViewDataset, SampleConfig, dataloader
from diffusiongs.data.render_meshes import MeshRenderConfig, run_render
from diffusiongs.data.store import NativeReader
from diffusiongs.data.synth import SynthConfig, run_synth

ASSIMP = Path("/usr/share/assimp/models")
ASSIMP_MESHES = ("Collada/duck.dae", "glTF2/BoxTextured-glTF-Binary/BoxTextured.glb", "OBJ/spider.obj")


@dataclass(frozen=True)
class BenchmarkConfig:
    """Render a fixed mesh set, synthesise objects, read samples back; print markdown tables."""

    workers: int = 2
    """Worker processes (renderers) and DataLoader workers."""
    res: int = 256
    """Image size."""
    views: int = 32
    """Random views per object (no evaluation orbit)."""
    copies: int = 4
    """How many times the mesh set is repeated."""
    samples: tuple[int, ...] = (4, 0)
    """MSAA settings to measure for `data render`."""
    synth_objects: int = 48
    """Procedural objects for the `data synth` measurement (0 skips it)."""
    batches: int = 40
    """Batches of 8 samples for the loading measurement (worker start-up included)."""


def make_meshes(folder: Path) -> list[Path]:
    import trimesh
    from PIL import Image

    from diffusiongs.data.procedural import random_object

    rng = np.random.default_rng(0)
    sphere = trimesh.creation.uv_sphere(count=(72, 72))  # ~20k faces
    uv = np.stack([np.arctan2(sphere.vertices[:, 1], sphere.vertices[:, 0]) / (2 * np.pi) + 0.5,
                   sphere.vertices[:, 2] * 0.5 + 0.5], 1)
    texture = Image.fromarray(rng.integers(0, 256, (1024, 1024, 3), dtype=np.uint8))
    material = trimesh.visual.material.PBRMaterial(baseColorTexture=texture, baseColorFactor=[255, 255, 255, 255])
    sphere.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    coloured = trimesh.creation.uv_sphere(count=(100, 100))  # ~39k faces
    coloured.visual.vertex_colors = rng.integers(0, 256, (len(coloured.vertices), 4), dtype=np.uint8)
    parts = random_object(np.random.default_rng(3)).parts
    assembly = trimesh.util.concatenate([trimesh.Trimesh(p.positions, p.faces, process=False) for p in parts])
    paths = []
    for name, mesh in (("textured_sphere.glb", sphere), ("vertex_colours.ply", coloured), ("assembly.glb", assembly)):
        mesh.export(folder / name)
        paths.append(folder / name)
    return paths + [ASSIMP / m for m in ASSIMP_MESHES if (ASSIMP / m).is_file()]


def mesh_set(root: Path, copies: int) -> tuple[list[Path], dict[str, int]]:
    import trimesh

    (root / "meshes").mkdir()
    base = make_meshes(root / "meshes")
    faces = {p.name: sum(len(g.faces) for g in trimesh.load(p, force="scene").dump()) for p in base}
    paths = []
    for copy in range(copies):
        for path in base:
            # Each copy in its own folder (textures sit beside OBJ/DAE files, so the folder is copied whole).
            target = root / f"copy{copy}" / path.parent.name
            if not target.exists():
                shutil.copytree(path.parent, target)
            paths.append(target / path.name)
    return paths, faces


def loading_rate(root: Path, res: int, workers: int, batches: int) -> float:
    # One torch thread, as in a DataLoader worker: on a busy 2-core machine torch's thread pool made main-process
    # loading much slower.
    torch.set_num_threads(1)
    dataset = MultiViewDataset(NativeReader(root), SampleConfig(resolution=res, num_noisy=3, num_novel=6))
    # One pass of batches x 8 samples drawn with replacement: workers start once, as in a long training epoch.
    sampler = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=batches * 8)
    start = time.perf_counter()
    for _ in dataloader(dataset, batch_size=8, workers=workers, shuffle=False, sampler=sampler):
        pass
    return batches * 8 / (time.perf_counter() - start)


def main(config: BenchmarkConfig) -> None:
    camera = ObjectCameraConfig(views=config.views, orbit_views=0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths, faces = mesh_set(root, config.copies)
        print(f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
        print("meshes (faces): " + ", ".join(f"{k} {v}" for k, v in faces.items()))
        print("\n| job | MSAA | workers | res | items | views | seconds | views/s |\n|---|---|---|---|---|---|---|---|")
        for samples in config.samples:
            output = OutputConfig(res=config.res, samples=samples, workers=config.workers, progress=False)
            start = time.perf_counter()
            report = run_render(MeshRenderConfig(out=root / f"render{samples}", meshes=tuple(paths), camera=camera,
                                                 output=output))
            seconds = time.perf_counter() - start
            if report.failed:
                raise SystemExit(f"{report.failed} meshes failed: see {root}/render{samples}/failures.jsonl")
            print(f"| render | {samples} | {config.workers} | {config.res} | {report.done} | {report.views} | "
                  f"{seconds:.1f} | {report.views / seconds:.1f} |")
        if config.synth_objects:
            output = OutputConfig(res=config.res, workers=config.workers, progress=False)
            start = time.perf_counter()
            report = run_synth(SynthConfig(out=root / "synth", objects=config.synth_objects, camera=camera,
                                           output=output))
            seconds = time.perf_counter() - start
            print(f"| synth | {output.samples} | {config.workers} | {config.res} | {report.done} | {report.views} | "
                  f"{seconds:.1f} | {report.views / seconds:.1f} |")
        print("\n| training samples (1 + 3 + 6 views) | res | DataLoader workers | samples/s |\n|---|---|---|---|")
        for workers in (0, config.workers):
            rate = loading_rate(root / f"render{config.samples[0]}", config.res, workers, config.batches)
            print(f"| from the rendered dataset | {config.res} | {workers} | {rate:.1f} |")


if __name__ == "__main__":
    main(tyro.cli(BenchmarkConfig))
