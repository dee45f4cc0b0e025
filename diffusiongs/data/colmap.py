"""A small reader for COLMAP sparse models (``cameras``, ``images``, ``points3D`` as ``.bin`` or ``.txt``).

Written from COLMAP's documented formats. Poses are world-to-camera with the OpenCV camera convention; the pixel
grid has its origin at the top-left corner of the top-left pixel, as in this package. Lens distortion parameters
are read but not applied: the pinhole part of the pinhole, simple-radial, radial and OpenCV models is used
(phone and DSLR captures have mild distortion); fisheye models are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusiongs.errors import InputError

# model id -> (name, number of parameters), from COLMAP's camera model list.
CAMERA_MODELS: dict[int, tuple[str, int]] = {
    0: ("SIMPLE_PINHOLE", 3), 1: ("PINHOLE", 4), 2: ("SIMPLE_RADIAL", 4), 3: ("RADIAL", 5), 4: ("OPENCV", 8),
    5: ("OPENCV_FISHEYE", 8), 6: ("FULL_OPENCV", 12), 7: ("FOV", 5), 8: ("SIMPLE_RADIAL_FISHEYE", 4),
    9: ("RADIAL_FISHEYE", 5), 10: ("THIN_PRISM_FISHEYE", 12), 11: ("RAD_TAN_THIN_PRISM_FISHEYE", 16),
}
_MODEL_PARAMS = {name: count for name, count in CAMERA_MODELS.values()}
_SINGLE_FOCAL = ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL")
_PINHOLE_LIKE = (*_SINGLE_FOCAL, "PINHOLE", "OPENCV", "FULL_OPENCV")


@dataclass(frozen=True)
class ColmapCamera:
    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]

    def intrinsics(self, source: Path) -> np.ndarray:
        """The 3x3 pinhole intrinsics (distortion dropped); InputError for models without a pinhole core."""
        if self.model not in _PINHOLE_LIKE:
            raise InputError(f"{source}: camera {self.camera_id} uses the {self.model} model; only pinhole-like "
                             f"models are supported ({', '.join(_PINHOLE_LIKE)})")
        p = self.params
        fx, fy, cx, cy = (p[0], p[0], p[1], p[2]) if self.model in _SINGLE_FOCAL else p[:4]
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class ColmapImage:
    """A registered image: its pose and its 2D observations (point3d_ids is -1 for unmatched keypoints)."""

    image_id: int
    qvec: np.ndarray
    """World-to-camera rotation as a unit quaternion (w, x, y, z)."""
    tvec: np.ndarray
    """World-to-camera translation."""
    camera_id: int
    name: str
    xys: np.ndarray
    point3d_ids: np.ndarray

    def w2c(self) -> np.ndarray:
        w, x, y, z = self.qvec / np.linalg.norm(self.qvec)
        rotation = np.array([
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
        out = np.eye(4)
        out[:3, :3] = rotation
        out[:3, 3] = self.tvec
        return out


@dataclass(frozen=True)
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    point_ids: np.ndarray
    """``[p]`` int64."""
    points: np.ndarray
    """``[p, 3]`` world positions."""
    colors: np.ndarray
    """``[p, 3]`` uint8 RGB."""

    def point_index(self) -> dict[int, int]:
        """point3D id -> row of ``points``."""
        return {int(i): k for k, i in enumerate(self.point_ids)}


def find_model(directory: Path) -> Path:
    """The folder holding cameras/images/points3D below ``directory`` (itself, sparse/0, sparse, colmap/sparse/0)."""
    for relative in (".", "sparse/0", "sparse", "colmap/sparse/0", "colmap/sparse"):
        candidate = directory / relative
        if (candidate / "cameras.bin").is_file() or (candidate / "cameras.txt").is_file():
            return candidate
    raise InputError(f"{directory}: no COLMAP model (cameras.bin/.txt in ., sparse/0, sparse, colmap/sparse/0)")


def read_model(directory: Path) -> ColmapModel:
    """Read a COLMAP model from ``directory`` (binary files are preferred when both exist)."""
    binary = (directory / "cameras.bin").is_file()
    try:
        if binary:
            return ColmapModel(_cameras_bin(directory / "cameras.bin"), _images_bin(directory / "images.bin"),
                               *_points_bin(directory / "points3D.bin"))
        return ColmapModel(_cameras_txt(directory / "cameras.txt"), _images_txt(directory / "images.txt"),
                           *_points_txt(directory / "points3D.txt"))
    except FileNotFoundError as err:
        raise InputError(f"{err.filename}: file not found (COLMAP model incomplete)") from err
    except (struct.error, ValueError, IndexError, KeyError, UnicodeDecodeError) as err:
        kind = "binary" if binary else "text"
        raise InputError(f"{directory}: malformed COLMAP {kind} model ({type(err).__name__}: {err})") from err


# ----------------------------------------------------------------------------------------------- binary

class _Bytes:
    def __init__(self, path: Path) -> None:
        self.data = path.read_bytes()
        self.offset = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += out.nbytes
        return out

    def cstring(self) -> str:
        end = self.data.index(b"\0", self.offset)
        text = self.data[self.offset:end].decode()
        self.offset = end + 1
        return text


def _cameras_bin(path: Path) -> dict[int, ColmapCamera]:
    buffer = _Bytes(path)
    cameras = {}
    for _ in range(buffer.take("Q")[0]):
        camera_id, model_id, width, height = buffer.take("iiQQ")
        name, count = CAMERA_MODELS[model_id]
        cameras[camera_id] = ColmapCamera(camera_id, name, width, height, buffer.take(f"{count}d"))
    return cameras


_POINT2D = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])


def _images_bin(path: Path) -> dict[int, ColmapImage]:
    buffer = _Bytes(path)
    images = {}
    for _ in range(buffer.take("Q")[0]):
        image_id, qw, qx, qy, qz, tx, ty, tz, camera_id = buffer.take("i7di")
        name = buffer.cstring()
        points = buffer.array(_POINT2D, buffer.take("Q")[0])
        images[image_id] = ColmapImage(image_id, np.array([qw, qx, qy, qz]), np.array([tx, ty, tz]), camera_id, name,
                                       np.stack([points["x"], points["y"]], 1), points["id"].copy())
    return images


def _points_bin(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    buffer = _Bytes(path)
    count = buffer.take("Q")[0]
    ids, xyz, rgb = np.empty(count, np.int64), np.empty((count, 3)), np.empty((count, 3), np.uint8)
    for k in range(count):
        point_id, x, y, z, r, g, b, _error, track_length = buffer.take("Q3d3BdQ")
        ids[k], xyz[k], rgb[k] = point_id, (x, y, z), (r, g, b)
        buffer.offset += 8 * track_length  # (image id, point2D index) pairs: not needed here
    return ids, xyz, rgb


# ----------------------------------------------------------------------------------------------- text

def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]


def _cameras_txt(path: Path) -> dict[int, ColmapCamera]:
    cameras = {}
    for line in filter(None, _lines(path)):
        fields = line.split()
        camera_id, model = int(fields[0]), fields[1]
        if model not in _MODEL_PARAMS or len(fields) != 4 + _MODEL_PARAMS[model]:
            raise ValueError(f"camera line {line!r}")
        cameras[camera_id] = ColmapCamera(camera_id, model, int(fields[2]), int(fields[3]),
                                          tuple(float(v) for v in fields[4:]))
    return cameras


def _images_txt(path: Path) -> dict[int, ColmapImage]:
    # Two lines per image (pose, then observations; the second may be empty), so blank lines are kept here.
    lines = _lines(path)
    while lines and not lines[-1]:
        lines.pop()
    images = {}
    for k in range(0, len(lines), 2):
        fields = lines[k].split(maxsplit=9)
        observations = np.array(lines[k + 1].split() if k + 1 < len(lines) else [], dtype=np.float64).reshape(-1, 3)
        image_id = int(fields[0])
        images[image_id] = ColmapImage(image_id, np.array(fields[1:5], float), np.array(fields[5:8], float),
                                       int(fields[8]), fields[9], observations[:, :2],
                                       observations[:, 2].astype(np.int64))
    return images


def _points_txt(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [line.split()[:7] for line in _lines(path) if line]
    if not rows:
        return np.empty(0, np.int64), np.empty((0, 3)), np.empty((0, 3), np.uint8)
    table = np.array(rows, dtype=np.float64)
    return table[:, 0].astype(np.int64), table[:, 1:4], table[:, 4:7].astype(np.uint8)
