"""RealEstate10K scenes in the two layouts the official code and pixelSplat use (reference §5.3).

* **pixelSplat chunks**: ``SPLIT_DIR/*.torch``, each a list of scenes ``{"key": str, "url": str, "timestamps":
  int64 [n], "cameras": float32 [n, 18], "images": [uint8 tensor of JPEG bytes] * n}``; an optional
  ``index.json`` maps scene keys to chunk file names. A camera row is RealEstate10K's: ``fx fy cx cy`` as fractions
  of the image width/height, two unused values, then the 3x4 world-to-camera matrix row by row (OpenCV). Files are
  loaded with ``torch.load(weights_only=True)`` only.
* **processed json** (official ``process_data.py``): ``full_list.txt`` lists ``metadata/<scene>.json`` files of
  ``{"scene_name", "frames": [{"image_path", "fxfycxcy" (pixels), "w2c" (4x4, OpenCV)}]}``.

Both readers re-centre and rescale the whole clip's cameras (:func:`normalize_scene_cameras`); the training dataset
normalises the chosen frames again, as the official loader does.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffusiongs.data.images import image_size
from diffusiongs.data.scenes import load_scene_views, scene_cameras
from diffusiongs.data.store import read_json
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- .torch chunks

@dataclass(frozen=True)
class _Scene:
    key: str
    chunk: Path


class Re10kChunkReader:
    """Reads pixelSplat-style ``.torch`` chunks of one split folder.

    Args:
        split_dir: the folder with the chunks (e.g. ``re10k/train``).
        cached_chunks: chunks kept decoded in memory per process (a chunk holds many scenes; shuffled access reloads
            chunks, so for training, converting to this project's format is faster).
    """

    domain = "scene"

    def __init__(self, split_dir: Path, cached_chunks: int = 2) -> None:
        self.split_dir = Path(split_dir)
        self.cached_chunks = cached_chunks
        self._chunks: dict[Path, dict[str, dict]] = {}
        self._cameras: dict[int, Cameras] = {}
        index_file = self.split_dir / "index.json"
        if index_file.is_file():
            index = read_json(index_file)
            if not isinstance(index, dict):
                raise InputError(f"{index_file}: expected an object mapping scene keys to chunk files")
            self.scenes = [_Scene(key, self.split_dir / name) for key, name in sorted(index.items())]
        else:
            chunks = sorted(self.split_dir.glob("*.torch"))
            if not chunks:
                raise InputError(f"{self.split_dir}: no .torch chunks")
            log.info("%s: no index.json, opening %d chunks to list their scenes", self.split_dir, len(chunks))
            self.scenes = [_Scene(key, chunk) for chunk in chunks for key in self._chunk(chunk)]

    def __len__(self) -> int:
        return len(self.scenes)

    def item_id(self, index: int) -> str:
        return self.scenes[index].key

    def _chunk(self, path: Path) -> dict[str, dict]:
        if path not in self._chunks:
            try:
                entries = torch.load(path, weights_only=True)
                scenes = {str(e["key"]): e for e in entries}
            except FileNotFoundError as err:
                raise InputError(f"{path}: chunk not found") from err
            except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, KeyError, TypeError, ValueError) as err:
                raise InputError(f"{path}: not a pixelSplat chunk ({type(err).__name__}: {err})") from err
            while len(self._chunks) >= self.cached_chunks:
                self._chunks.pop(next(iter(self._chunks)))
            self._chunks[path] = scenes
        return self._chunks[path]

    def _entry(self, index: int) -> dict:
        scene = self.scenes[index]
        entries = self._chunk(scene.chunk)
        if scene.key not in entries:
            raise InputError(f"{scene.chunk}: scene {scene.key} listed in index.json is missing")
        return entries[scene.key]

    def cameras(self, index: int) -> Cameras:
        if index not in self._cameras:
            entry = self._entry(index)
            label = f"{self.scenes[index].chunk}:{self.scenes[index].key}"
            rows = np.asarray(entry["cameras"], dtype=np.float64)
            if rows.ndim != 2 or rows.shape[1] != 18 or len(rows) != len(entry["images"]) or len(rows) == 0:
                raise InputError(f"{label}: expected cameras [n, 18] matching {len(entry['images'])} images, got "
                                 f"{rows.shape}")
            width, height = image_size(_jpeg_bytes(entry["images"][0]), label)
            w2c = np.tile(np.eye(4), (len(rows), 1, 1))
            w2c[:, :3] = rows[:, 6:].reshape(-1, 3, 4)
            K = np.zeros((len(rows), 3, 3))
            K[:, 0, 0], K[:, 1, 1] = rows[:, 0] * width, rows[:, 1] * height
            K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = rows[:, 2] * width, rows[:, 3] * height, 1.0
            self._cameras[index] = scene_cameras(w2c, K, width, height)
        return self._cameras[index]

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        cameras = self.cameras(index)
        entry = self._entry(index)
        chosen = list(range(cameras.batch_shape[0])) if views is None else list(views)
        sources = [_jpeg_bytes(image) for image in entry["images"]]
        return load_scene_views(self.scenes[index].key, cameras, sources, chosen,
                           f"{self.scenes[index].chunk}:{self.scenes[index].key}")


def _jpeg_bytes(image: torch.Tensor) -> bytes:
    return image.numpy().tobytes() if isinstance(image, torch.Tensor) else bytes(image)


# ----------------------------------------------------------------------------------------------- processed json

@dataclass(frozen=True)
class _JsonScene:
    name: str
    cameras: Cameras
    images: list[Path]


class Re10kJsonReader:
    """Reads the official ``process_data.py`` output through its ``full_list.txt``.

    Relative paths in the list are taken from the list's folder; relative ``image_path`` values from the working
    directory (as the official loader does), else from the json's folder, its parent, or
    ``<parent>/images/<scene>/<file name>``.
    """

    domain = "scene"

    def __init__(self, list_file: Path) -> None:
        self.list_file = Path(list_file)
        try:
            lines = [line.strip() for line in self.list_file.read_text().splitlines() if line.strip()]
        except OSError as err:
            raise InputError(f"{self.list_file}: cannot read scene list ({err})") from err
        self.paths = [p if p.is_absolute() or p.is_file() else self.list_file.parent / p for p in map(Path, lines)]
        self._scenes: dict[int, _JsonScene] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def item_id(self, index: int) -> str:
        return self.paths[index].stem

    def _scene(self, index: int) -> _JsonScene:
        if index in self._scenes:
            return self._scenes[index]
        path = self.paths[index]
        payload = read_json(path)
        try:
            name = str(payload["scene_name"])
            frames = payload["frames"]
            w2c = np.array([f["w2c"] for f in frames], dtype=np.float64).reshape(-1, 4, 4)
            fxfycxcy = np.array([f["fxfycxcy"] for f in frames], dtype=np.float64).reshape(-1, 4)
            images = [self._image_path(path, name, f["image_path"]) for f in frames]
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(f"{path}: malformed scene json ({err!r})") from err
        if not frames:
            raise InputError(f"{path}: no frames")
        width, height = image_size(images[0], str(images[0]))
        K = np.zeros((len(frames), 3, 3))
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = fxfycxcy.T
        K[:, 2, 2] = 1.0
        self._scenes[index] = _JsonScene(name, scene_cameras(w2c, K, width, height), images)
        return self._scenes[index]

    @staticmethod
    def _image_path(json_path: Path, scene: str, image_path: str) -> Path:
        given = Path(image_path)
        candidates = [given, json_path.parent / given, json_path.parent.parent / given,
                      json_path.parent.parent / "images" / scene / given.name]
        return next((c for c in candidates if c.is_file()), given)

    def cameras(self, index: int) -> Cameras:
        return self._scene(index).cameras

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        scene = self._scene(index)
        chosen = list(range(len(scene.images))) if views is None else list(views)
        return load_scene_views(scene.name, scene.cameras, scene.images, chosen, str(self.paths[index]))

