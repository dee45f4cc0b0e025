"""G-Objaverse (the richdreamer renders the official code trains on; reference §5.2).

Layout::

    IMAGE_DIR/<uid>/campos_512_v4/<idx:05d>/<idx:05d>.png      RGBA, 512 x 512
    IMAGE_DIR/<uid>/campos_512_v4/<idx:05d>/<idx:05d>.json     {"x", "y", "z", "origin"}: camera axes and centre
    IMAGE_DIR/<uid>/campos_512_v4/<idx:05d>/<idx:05d>_nd.exr   normal (RGB) + depth (alpha)
    LIST.json                                                  ["0/10010", ...] uids of a split

Camera conversion. The json holds an OpenCV camera (x right, y down, z forward) in Blender's world, which is
right-handed and z-up: that is already this package's convention, so ``c2w = [x | y | z | origin]``. (The official
loader's chain -- to OpenGL world and camera, back to OpenCV, then swapping world y and z -- nets out to
``diag(1, -1, 1, 1) @ c2w``, a mirror image of the world with det -1 rotations; renders are unaffected, so this reader
keeps Blender's right-handed world.) Objects are scaled so that the cameras sit at ``norm_radius`` (3.0, as the
official loader does with one reference view; here the median distance over all views, so the scale does not
depend on which views a sample draws). Intrinsics are fixed: fx = fy = 1422.222 / 1024 * size, centred.

Depth (optional) is the exr's alpha channel, zeroed below camera distance - 0.867 (sqrt(3)/2, the renders' object
bound) as the official loader does. Like the official loss, it is taken as a distance along the unit ray and
converted to camera z. EXR needs OpenCV (or another imageio backend); without one, depth is skipped with a note.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffusiongs.data.images import decode_image, image_size, to_tensors
from diffusiongs.data.store import read_json
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras
from diffusiongs.geometry.rays import pixel_rays

log = logging.getLogger(__name__)

FOCAL_PER_PIXEL = 1422.222 / 1024
"""G-Objaverse focal length as a fraction of the image size (about 39.6 degrees field of view)."""
DEFAULT_VIEWS = tuple(i for i in range(40) if i not in (25, 26))
"""The 40 views without the straight-up and straight-down ones (25, 26), as the official loader uses."""
DEPTH_NEAR_MARGIN = 0.867
"""Depth closer than camera distance - sqrt(3)/2 is background (official loader)."""


def read_exr(path: Path) -> np.ndarray | None:
    """An EXR image as float32 ``[h, w, c]`` (channels R, G, B, A), or None when no EXR backend is installed.

    Raises:
        InputError: the file exists but cannot be decoded.
    """
    try:
        os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")  # OpenCV reads EXR only with this set before import
        import cv2
    except ImportError:
        return _read_exr_imageio(path)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{path}: cannot read EXR")
    image = image.astype(np.float32)
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV orders channels B, G, R(, A)
        image[..., :3] = image[..., 2::-1]
    return image


def _read_exr_imageio(path: Path) -> np.ndarray | None:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path), dtype=np.float32)
    except OSError as err:
        if "backend" in str(err):  # imageio: "Could not find a backend to open ..."
            return None
        raise InputError(f"{path}: cannot read EXR ({err})") from err


@dataclass(frozen=True)
class _Item:
    folders: list[Path]
    cameras: Cameras
    raw_distance: np.ndarray
    scale: float


class GObjaverseReader:
    """Reads G-Objaverse objects.

    Args:
        image_dir: the folder holding ``<uid>/campos_512_v4``.
        uids: the objects, or a json list of them (the official ``{split}.json``).
        views: view indices to expose (default: all but the top and bottom views).
        load_depth: read depth from the ``_nd.exr`` files (skipped with a note if EXR cannot be decoded here).
        norm_radius: camera distance after scaling.
    """

    domain = "object"

    def __init__(self, image_dir: Path, uids: Sequence[str] | Path, views: Sequence[int] = DEFAULT_VIEWS,
                 load_depth: bool = False, norm_radius: float = 3.0) -> None:
        self.image_dir = Path(image_dir)
        if isinstance(uids, Path):
            listed = read_json(uids)
            if not isinstance(listed, list) or not all(isinstance(u, str) for u in listed):
                raise InputError(f"{uids}: expected a json list of uid strings")
            uids = listed
        self.uids = list(uids)
        self.views = list(views)
        self.load_depth = load_depth
        self.norm_radius = norm_radius
        self._items: dict[int, _Item] = {}
        self._depth_note_shown = False

    def __len__(self) -> int:
        return len(self.uids)

    def item_id(self, index: int) -> str:
        return self.uids[index]

    def _item(self, index: int) -> _Item:
        if index in self._items:
            return self._items[index]
        root = self.image_dir / self.uids[index] / "campos_512_v4"
        folders = [root / f"{v:05d}" for v in self.views]
        c2w = torch.from_numpy(np.stack([_read_camera(f / f"{f.name}.json") for f in folders]))
        first = folders[0] / f"{folders[0].name}.png"
        width, height = image_size(first, str(first))
        distance = c2w[:, :3, 3].norm(dim=-1).numpy()
        if np.any(distance <= 0):
            raise InputError(f"{root}: a camera sits at the origin")
        scale = self.norm_radius / float(np.median(distance))
        c2w[:, :3, 3] *= scale
        f = FOCAL_PER_PIXEL * width
        K = torch.tensor([[f, 0.0, width / 2], [0.0, FOCAL_PER_PIXEL * height, height / 2], [0.0, 0.0, 1.0]])
        cameras = Cameras(c2w.float(), K.expand(len(folders), 3, 3).clone(), width, height)
        self._items[index] = _Item(folders, cameras, distance, scale)
        return self._items[index]

    def cameras(self, index: int) -> Cameras:
        return self._item(index).cameras

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        item = self._item(index)
        chosen = list(range(len(item.folders))) if views is None else list(views)
        images, masks, depths = [], [], []
        for v in chosen:
            folder = item.folders[v]
            rgb, mask = to_tensors(decode_image(folder / f"{folder.name}.png"), white_background=True)
            images.append(rgb)
            masks.append(mask)
            if self.load_depth:
                depths.append(self._depth(folder / f"{folder.name}_nd.exr", item, v))
        cameras = item.cameras[torch.tensor(chosen, dtype=torch.long)]
        have_depth = bool(depths) and all(d is not None for d in depths)
        return MultiViewExample(self.uids[index], "object", torch.stack(images), cameras, torch.stack(masks),
                                torch.stack(depths) if have_depth else None)

    def _depth(self, path: Path, item: _Item, view: int) -> torch.Tensor | None:
        normal_depth = read_exr(path)
        if normal_depth is None:
            if not self._depth_note_shown:
                log.info("G-Objaverse: no EXR reader (install opencv-python-headless); depth is skipped")
                self._depth_note_shown = True
            return None
        if normal_depth.ndim != 3 or normal_depth.shape[2] < 4:
            raise InputError(f"{path}: expected 4 channels (normal + depth), got shape {normal_depth.shape}")
        return ray_distance_to_z(normal_depth[..., 3], item.cameras[view], item.raw_distance[view], item.scale)


def ray_distance_to_z(distance: np.ndarray, camera: Cameras, raw_camera_distance: float, scale: float
                      ) -> torch.Tensor:
    """G-Objaverse depth (distance along the ray, raw units) -> camera z in normalised units, ``[1, h, w]``; values
    nearer than the object's bounding sphere allows are background (0)."""
    distance = torch.from_numpy(np.where(distance < raw_camera_distance - DEPTH_NEAR_MARGIN, 0.0, distance))
    _, directions = pixel_rays(camera)
    cosine = (directions * camera.forward[..., None, None, :]).sum(-1)
    if cosine.shape != distance.shape:
        raise InputError(f"depth map {tuple(distance.shape)} does not match the image {tuple(cosine.shape)}")
    return (distance.float() * cosine * scale)[None]


def _read_camera(path: Path) -> np.ndarray:
    try:
        payload = json.loads(path.read_text())
        c2w = np.eye(4)
        for column, key in enumerate(("x", "y", "z", "origin")):
            c2w[:3, column] = np.asarray(payload[key], dtype=np.float64).reshape(3)
    except FileNotFoundError as err:
        raise InputError(f"{path}: file not found") from err
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"{path}: expected keys x, y, z, origin with 3 numbers each ({err!r})") from err
    if np.linalg.det(c2w[:3, :3]) < 0.5:
        raise InputError(f"{path}: x, y, z are not a right-handed orthonormal frame")
    return c2w
