"""Scenes reconstructed with COLMAP, laid out as DL3DV-10K releases them::

    ROOT/<scene>/images_4/<frame>.png          frames (any image folder name; images_4 = 1/4 resolution)
    ROOT/<scene>/colmap/sparse/0/cameras.bin   COLMAP model (also found at sparse/0, sparse, or the scene folder)

Frames are ordered by file name (the capture order). When the image folder holds downsampled frames, the COLMAP
intrinsics are scaled to the actual image size. Cameras are normalised like RealEstate10K's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusiongs.data.colmap import find_model, read_model
from diffusiongs.data.images import image_size
from diffusiongs.data.scenes import load_scene_views, scene_cameras
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras


@dataclass(frozen=True)
class _Scene:
    cameras: Cameras
    images: list[Path]


class ColmapSceneReader:
    """Reads COLMAP scenes (DL3DV-style).

    Args:
        root: folder of scene folders.
        image_folders: image folder names to try in each scene, in order.
        scenes: scene folder names to use (default: every sub-folder with a COLMAP model).
    """

    domain = "scene"

    def __init__(self, root: Path, image_folders: Sequence[str] = ("images_4", "images"),
                 scenes: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.image_folders = tuple(image_folders)
        if scenes is None:
            scenes = sorted(p.name for p in self.root.iterdir() if p.is_dir() and _has_model(p))
        if not scenes:
            raise InputError(f"{self.root}: no scene folders with a COLMAP model")
        self.scene_names = list(scenes)
        self._scenes: dict[int, _Scene] = {}

    def __len__(self) -> int:
        return len(self.scene_names)

    def item_id(self, index: int) -> str:
        return self.scene_names[index]

    def _scene(self, index: int) -> _Scene:
        if index in self._scenes:
            return self._scenes[index]
        folder = self.root / self.scene_names[index]
        model_dir = find_model(folder)
        model = read_model(model_dir)
        image_dir = next((folder / name for name in self.image_folders if (folder / name).is_dir()), None)
        if image_dir is None:
            raise InputError(f"{folder}: none of the image folders {self.image_folders}")
        frames = sorted(model.images.values(), key=lambda image: image.name)
        if not frames:
            raise InputError(f"{model_dir}: no registered images")
        paths = [image_dir / image.name for image in frames]
        width, height = image_size(paths[0], str(paths[0]))
        K = []
        for image in frames:
            camera = model.cameras[image.camera_id]
            # COLMAP intrinsics refer to the reconstructed resolution; the folder may hold downsampled frames.
            K.append(np.diag([width / camera.width, height / camera.height, 1.0]) @ camera.intrinsics(model_dir))
        self._scenes[index] = _Scene(scene_cameras(np.stack([i.w2c() for i in frames]), np.stack(K), width, height),
                                     paths)
        return self._scenes[index]

    def cameras(self, index: int) -> Cameras:
        return self._scene(index).cameras

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        scene = self._scene(index)
        chosen = list(range(len(scene.images))) if views is None else list(views)
        return load_scene_views(self.scene_names[index], scene.cameras, scene.images, chosen,
                           str(self.root / self.scene_names[index]))


def _has_model(folder: Path) -> bool:
    try:
        find_model(folder)
    except InputError:
        return False
    return True
