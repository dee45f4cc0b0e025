"""Turntable and fly-through videos and image grids of generated Gaussians (no model code here)."""

from __future__ import annotations

import os
from pathlib import Path

import imageio.v2 as imageio
import numpy as np
import torch
from jaxtyping import Float, UInt8
from PIL import Image
from torch import Tensor

from diffusiongs.diffusion import ProgressCallback
from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras, OrbitRig
from diffusiongs.render import RenderConfig, render

VIDEO_FPS = 24


def to_uint8(images: Float[Tensor, "n 3 h w"]) -> UInt8[np.ndarray, "n h w 3"]:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def turntable(gaussians: Gaussians, rig: OrbitRig, num_frames: int, resolution: int,
              background: tuple[float, float, float] = (1.0, 1.0, 1.0), render_cfg: RenderConfig = RenderConfig(),
              chunk: int = 8, progress: ProgressCallback | None = None) -> Float[Tensor, "n 3 h w"]:
    """Render unbatched Gaussians from ``num_frames`` cameras evenly spaced around the rig's circle;
    ``progress(frames done, num_frames)`` after every chunk."""
    return render_frames(gaussians, rig.cameras(num_frames, resolution), background, render_cfg, chunk, progress)


@torch.no_grad()
def render_frames(gaussians: Gaussians, cameras: Cameras, background: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  render_cfg: RenderConfig = RenderConfig(), chunk: int = 8, progress: ProgressCallback | None = None
                  ) -> Float[Tensor, "n 3 h w"]:
    """Render unbatched Gaussians at a sequence of cameras (batch shape ``[n]``), ``chunk`` at a time;
    ``progress(frames done, n)`` after every chunk. Returns the frames on the CPU."""
    cameras = cameras.to(gaussians.device)
    num_frames = cameras.batch_shape[0]
    bg = torch.tensor(background, device=gaussians.device)
    frames = []
    for start in range(0, num_frames, chunk):
        frames.append(render(gaussians[None], cameras[start:start + chunk].reshape(1, -1), bg, render_cfg).rgb[0])
        if progress is not None:
            progress(min(start + chunk, num_frames), num_frames)
    return torch.cat(frames).cpu()


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".tmp{os.getpid()}.{path.name}")


def write_video(frames: UInt8[np.ndarray, "n h w 3"], path: str | Path, fps: int = VIDEO_FPS) -> Path:
    """H.264 mp4 (through imageio-ffmpeg's bundled ffmpeg) or GIF, chosen by the suffix; written atomically."""
    path = Path(path)
    tmp = _atomic_target(path)
    if path.suffix == ".gif":
        imageio.mimsave(tmp, list(frames), format="GIF", duration=1000 / fps, loop=0)
    else:
        with imageio.get_writer(tmp, format="FFMPEG", fps=fps, codec="libx264", quality=8,
                                macro_block_size=1, ffmpeg_log_level="error") as writer:
            for frame in frames:
                writer.append_data(frame)
    os.replace(tmp, path)
    return path


def write_image(image: UInt8[np.ndarray, "h w 3"], path: str | Path) -> Path:
    path = Path(path)
    tmp = _atomic_target(path)
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def image_row(images: Float[Tensor, "n 3 h w"], gap: int = 4) -> UInt8[np.ndarray, "h w 3"]:
    """Images side by side on white, separated by ``gap`` pixels."""
    n, _, h, w = images.shape
    canvas = torch.ones(3, h, n * w + (n - 1) * gap)
    for i, image in enumerate(images):
        canvas[:, :, i * (w + gap):i * (w + gap) + w] = image.clamp(0, 1)
    return to_uint8(canvas[None])[0]


def image_rows(rows: list[UInt8[np.ndarray, "h w 3"]], gap: int = 4) -> UInt8[np.ndarray, "H w 3"]:
    """Rows of images (each from :func:`image_row`, all the same width) one above the other, ``gap`` white pixels
    apart: a contact sheet."""
    space = np.full((gap, rows[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for row in rows for part in (row, space)][:-1])
