"""Photo-like example inputs from held-out real meshes: RGB JPEGs without alpha, on a plain backdrop, so that
`diffusiongs generate` has to find the object itself (background removal), as with a photograph.

    python scripts/example_photos.py BUNDLE --out examples/images --meshes Scopia__sofa3 ...

Each mesh (from a bundle made by `diffusiongs data bundle`; use its held-out "test" meshes) is rendered with the
dataset renderer at 30 degrees of azimuth and 20 degrees of elevation from distance 3 (50-degree field of view,
the training framing), at 384 px, over a light grey-beige backdrop, and saved as `<name>.jpg` (quality 92).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from diffusiongs.data.bundle import read_bundle  # noqa: E402
from diffusiongs.data.gl import Lighting, MeshRenderer  # noqa: E402
from diffusiongs.data.mesh_archive import read_mesh  # noqa: E402
from diffusiongs.errors import InputError, exit_with  # noqa: E402
from diffusiongs.geometry.camera import orbit_cameras  # noqa: E402


@dataclass(frozen=True)
class PhotoConfig:
    """Render held-out bundle meshes as photo-like RGB inputs."""

    bundle: tyro.conf.Positional[Path]
    """A mesh bundle folder."""
    out: Path
    """Folder for the JPEGs."""
    meshes: tuple[str, ...]
    """Bundle mesh ids; the file is named after the part after '__'."""
    resolution: int = 384
    azimuth_deg: float = 30.0
    elevation_deg: float = 20.0
    backdrop: tuple[float, float, float] = (0.86, 0.84, 0.80)
    """Backdrop colour (RGB in [0, 1])."""


def main() -> int:
    cfg = tyro.cli(PhotoConfig, prog="python scripts/example_photos.py")
    index = {m["id"]: m for m in read_bundle(cfg.bundle)["meshes"]}
    camera = orbit_cameras(1, 3.0, cfg.elevation_deg, 50.0, cfg.resolution, start_azimuth_deg=cfg.azimuth_deg)
    renderer = MeshRenderer()
    cfg.out.mkdir(parents=True, exist_ok=True)
    for mesh_id in cfg.meshes:
        if mesh_id not in index:
            raise InputError(f"{cfg.bundle}: no mesh '{mesh_id}'")
        if index[mesh_id]["split"] != "test":
            print(f"warning: {mesh_id} is a training mesh of this bundle, not a held-out one")
        rgba = renderer.render(read_mesh(cfg.bundle / index[mesh_id]["file"]), camera, Lighting()).rgba[0]
        alpha = rgba[..., 3:].astype(np.float32) / 255
        rgb = rgba[..., :3].astype(np.float32) / 255 * alpha + torch.tensor(cfg.backdrop).numpy() * (1 - alpha)
        path = cfg.out / f"{mesh_id.split('__')[-1]}.jpg"
        Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(path, quality=92)
        print(f"wrote {path}")
    renderer.release()
    return 0


if __name__ == "__main__":
    exit_with(main, "example_photos")
