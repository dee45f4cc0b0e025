"""Helpers shared by the scene readers (RealEstate10K, COLMAP scenes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from diffusiongs.data.images import decode_image, to_tensors
from diffusiongs.data.normalize import normalize_scene_cameras
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras


def scene_cameras(w2c: np.ndarray, K: np.ndarray, width: int, height: int) -> Cameras:
    """Normalised cameras from world-to-camera matrices ``[n, 4, 4]`` and pixel intrinsics ``[n, 3, 3]``."""
    c2w = torch.linalg.inv(torch.from_numpy(np.asarray(w2c, np.float64)))
    c2w, _ = normalize_scene_cameras(c2w)
    return Cameras(c2w, torch.from_numpy(np.asarray(K, np.float32)), width, height)


def load_scene_views(scene_id: str, cameras: Cameras, sources: list[Path] | list[bytes], chosen: list[int],
                     label: str) -> MultiViewExample:
    """Frames ``chosen`` of a scene (image files or encoded bytes), with masks of ones."""
    images = []
    for v in chosen:
        rgb, _ = to_tensors(decode_image(sources[v], f"{label} frame {v}"), white_background=False)
        if tuple(rgb.shape[-2:]) != (cameras.height, cameras.width):
            raise InputError(f"{label}: frame {v} is {rgb.shape[-1]}x{rgb.shape[-2]}, the first frame "
                             f"{cameras.width}x{cameras.height}")
        images.append(rgb)
    stacked = torch.stack(images)
    return MultiViewExample(scene_id, "scene", stacked, cameras[torch.tensor(chosen, dtype=torch.long)],
                            torch.ones_like(stacked[:, :1]))
