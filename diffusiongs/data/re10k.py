"""RealEstate10K scenes in the two layouts the official code and pixelSplat use (reference §5.3).

* **pixelSplat chunks**: ``SPLIT_DIR/*.torch``, each a list of scenes ``{"key": str, "url": str, "timestamps":
  int64 [n], "cameras": float32 [n, 18], "images": [uint8 tensor of JPEG bytes] * n}``; an optional
  ``index.json`` maps scene keys to chunk file names. A camera row is RealEstate10K's: ``fx fy cx cy`` as fractions
  of the image width/height, two unused values, then the 3x4 world-to-camera matrix row by row (OpenCV). Files are
  loaded with ``torch.load(weights_only=True)`` only.
* **processed json** (official ``process_data.py``): ``full_list.txt`` lists ``metadata/<scene>.json`` files of
  ``{"scene_name", "frames": [{"image_path", "fxfycxcy" (pixels), "w2c" (4x4, OpenCV)}]}``.

* **camera text files** (the dataset's own ``<clip>.txt``): the video URL, then ``timestamp`` and a camera row per
  line (:func:`read_camera_file`; ``diffusiongs generate --cameras`` reads them, docs/scenes.md).

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
from jaxtyping import Float

from diffusiongs.data.images import image_size
from diffusiongs.data.scenes import load_scene_views, scene_cameras
from diffusiongs.data.store import atomic_write_bytes, read_json
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------- camera rows

ROW_VALUES = 18
"""Values of a RealEstate10K camera row: ``fx fy cx cy`` as fractions of the image width/height, two unused values,
then the 3x4 world-to-camera matrix row by row (OpenCV)."""
ROTATION_TOLERANCE = 1e-3
"""Largest entry of ``R R^T - I`` accepted for a world-to-camera rotation read from text (values printed with a few
decimals are not exactly orthonormal)."""


def camera_rows_to_w2c_K(rows: Float[np.ndarray, "n 18"], width: int, height: int
                         ) -> tuple[Float[np.ndarray, "n 4 4"], Float[np.ndarray, "n 3 3"]]:
    """World-to-camera matrices and pixel intrinsics of RealEstate10K camera rows, for images of ``width`` x
    ``height`` pixels."""
    rows = np.asarray(rows, dtype=np.float64)
    w2c = np.tile(np.eye(4), (len(rows), 1, 1))
    w2c[:, :3] = rows[:, 6:].reshape(-1, 3, 4)
    K = np.zeros((len(rows), 3, 3))
    K[:, 0, 0], K[:, 1, 1] = rows[:, 0] * width, rows[:, 1] * height
    K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = rows[:, 2] * width, rows[:, 3] * height, 1.0
    return w2c, K


def read_camera_file(path: Path) -> tuple[Float[np.ndarray, " n"], Float[np.ndarray, "n 18"]]:
    """Timestamps and camera rows of a RealEstate10K camera text file (docs/scenes.md).

    The file is the dataset's own per-clip format: an optional first line with the video's URL, then one line per
    frame, ``timestamp fx fy cx cy 0 0`` followed by the 12 values of the 3x4 world-to-camera matrix row by row.
    Blank lines and lines starting with ``#`` are skipped.

    Raises:
        InputError: naming the file and line of the first problem.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        problem = "file not found" if isinstance(err, FileNotFoundError) else f"cannot read the camera file ({err})"
        raise InputError(f"{path}: {problem}") from None
    entries = [_camera_row(line.strip(), f"{path}:{number}") for number, line in enumerate(lines, start=1)
               if line.strip() and not line.strip().startswith("#") and not (number == 1 and "://" in line)]
    if not entries:
        raise InputError(f"{path}: no camera lines (expected `timestamp fx fy cx cy 0 0` and a 3x4 world-to-camera "
                         "matrix per line)")
    values = np.stack(entries)
    return values[:, 0], values[:, 1:]


def write_camera_file(path: Path, cameras: Cameras, timestamps: Sequence[int] | None = None,
                      header: str | None = None) -> Path:
    """Write cameras (batch shape ``[n]``) as a RealEstate10K camera text file that :func:`read_camera_file` reads
    back: intrinsics as fractions of ``cameras.width``/``height``, world-to-camera rows with 9 significant digits
    (float32 values come back exactly). ``timestamps`` default to the frame numbers; ``header`` is the first line
    (RealEstate10K: the video's URL)."""
    path = Path(path)
    K, w2c = cameras.K.double(), cameras.w2c().double()
    intrinsics = torch.stack([K[:, 0, 0] / cameras.width, K[:, 1, 1] / cameras.height, K[:, 0, 2] / cameras.width,
                              K[:, 1, 2] / cameras.height], -1)
    stamps = range(len(K)) if timestamps is None else timestamps
    lines = [header] if header is not None else []
    for stamp, fxfycxcy, matrix in zip(stamps, intrinsics.tolist(), w2c[:, :3].reshape(-1, 12).tolist()):
        lines.append(" ".join([str(int(stamp)), *(f"{v:.9g}" for v in fxfycxcy), "0", "0",
                               *(f"{v:.9g}" for v in matrix)]))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def _camera_row(text: str, where: str) -> np.ndarray:
    """One line of a camera file as ``[timestamp, *row]``, checked."""
    fields = text.split()
    if len(fields) != 1 + ROW_VALUES:
        raise InputError(f"{where}: expected {1 + ROW_VALUES} numbers (timestamp, fx fy cx cy, 2 unused values, the "
                         f"3x4 world-to-camera matrix row by row), got {len(fields)}")
    try:
        values = np.array([float(field) for field in fields])
    except ValueError as err:
        raise InputError(f"{where}: not a number ({err})") from None
    if not np.isfinite(values).all():
        raise InputError(f"{where}: values must be finite")
    if values[1] <= 0 or values[2] <= 0:
        raise InputError(f"{where}: focal lengths fx, fy must be > 0 (fractions of the image width and height), "
                         f"got {values[1]:g}, {values[2]:g}")
    rotation = values[7:].reshape(3, 4)[:, :3]
    if np.abs(rotation @ rotation.T - np.eye(3)).max() > ROTATION_TOLERANCE or np.linalg.det(rotation) < 0:
        raise InputError(f"{where}: the world-to-camera matrix's 3x3 part is not a rotation (orthonormal, "
                         "determinant +1)")
    return values


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
            if rows.ndim != 2 or rows.shape[1] != ROW_VALUES or len(rows) != len(entry["images"]) or len(rows) == 0:
                raise InputError(f"{label}: expected cameras [n, {ROW_VALUES}] matching {len(entry['images'])} "
                                 f"images, got {rows.shape}")
            width, height = image_size(_jpeg_bytes(entry["images"][0]), label)
            self._cameras[index] = scene_cameras(*camera_rows_to_w2c_K(rows, width, height), width, height)
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

