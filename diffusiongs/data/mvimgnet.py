"""MVImgNet objects: phone videos around an object, with COLMAP cameras and foreground masks.

Layout (one folder per object; the category level is optional)::

    ROOT/<category>/<object>/images/<frame>.jpg
    ROOT/<category>/<object>/sparse/0/{cameras,images,points3D}.{bin,txt}
    ROOT/<category>/<object>/masks/<frame>.png        (or <frame>.jpg.png; grey or alpha; > 0.5 = object)

Following the paper ("crop the object, remove the background, normalise the cameras, centre and scale into
[-1, 1]^3"), per object:

1. **up**: the world is rotated so that the mean camera up axis (-y) points along +z (captures are upright);
2. **object points**: the sparse points whose observations fall inside the masks in at least half of their
   observations (and at least two);
3. **centre and scale**: the 2nd-98th percentile box of those points is centred at the origin and its largest
   half-extent scaled to 1;
4. **crop**: each frame is cut to a square around its mask's bounding box (plus ``crop_margin`` on each side;
   outside the frame counts as background), resized to ``image_size`` and composited on white with its mask;
   intrinsics follow the crop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from diffusiongs.data.colmap import ColmapModel, find_model, read_model
from diffusiongs.data.images import composite_on_white, crop_resize_intrinsics, decode_image, decode_mask
from diffusiongs.data.normalize import rotation_between
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras, transform_world

log = logging.getLogger(__name__)

MIN_OBJECT_POINTS = 8
"""Fewer points inside the masks than this cannot give a reliable object box: the object is refused."""


@dataclass(frozen=True)
class _Frame:
    image: Path
    mask: Path
    box: tuple[float, float, float]
    """Square crop (left, top, side) in pixels of the original frame."""


@dataclass(frozen=True)
class _Object:
    frames: list[_Frame]
    cameras: Cameras


class MVImgNetReader:
    """Reads MVImgNet objects (see the module docstring for the layout and processing).

    Args:
        root: folder of ``<category>/<object>`` (or ``<object>``) folders.
        image_size: side of the square crops, in pixels.
        crop_margin: margin around the mask's bounding box, as a fraction of its longer side.
        mask_folder: name of the masks folder inside an object folder.
    """

    domain = "object"

    def __init__(self, root: Path, image_size: int = 512, crop_margin: float = 0.1, mask_folder: str = "masks"
                 ) -> None:
        self.root = Path(root)
        self.image_size = image_size
        self.crop_margin = crop_margin
        self.mask_folder = mask_folder
        self.folders = sorted({p.parent for pattern in ("*/images", "*/*/images") for p in self.root.glob(pattern)
                               if (p.parent / mask_folder).is_dir()})
        if not self.folders:
            raise InputError(f"{self.root}: no object folders with images/ and {mask_folder}/")
        self._objects: dict[int, _Object] = {}

    def __len__(self) -> int:
        return len(self.folders)

    def item_id(self, index: int) -> str:
        return self.folders[index].relative_to(self.root).as_posix()

    def _mask_path(self, folder: Path, image_name: str) -> Path:
        name = Path(image_name)
        candidates = [folder / self.mask_folder / name.with_suffix(".png"), folder / self.mask_folder / f"{name}.png"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputError(f"{candidates[0]}: mask not found (also tried {candidates[1].name})")
        return found

    def _object(self, index: int) -> _Object:
        if index in self._objects:
            return self._objects[index]
        folder = self.folders[index]
        model_dir = find_model(folder)
        model = read_model(model_dir)
        images = sorted(model.images.values(), key=lambda image: image.name)
        if not images:
            raise InputError(f"{model_dir}: no registered images")
        masks = [decode_mask(self._mask_path(folder, image.name)) > 0.5 for image in images]
        c2w = torch.linalg.inv(torch.from_numpy(np.stack([image.w2c() for image in images])))
        up = rotation_between(-c2w[:, :3, 1].mean(0).numpy(), np.array([0.0, 0.0, 1.0]))
        points = _object_points(model, images, masks) @ up.T
        if len(points) < MIN_OBJECT_POINTS:
            raise InputError(f"{folder}: only {len(points)} sparse points fall inside the masks "
                             f"(need {MIN_OBJECT_POINTS}) to place the object")
        lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
        half = float((hi - lo).max()) / 2
        if half <= 0:
            raise InputError(f"{folder}: the object's points have no extent")
        c2w = transform_world(c2w, torch.from_numpy(up), torch.from_numpy(-(lo + hi) / 2), 1.0 / half)
        frames, Ks = [], []
        for image, mask in zip(images, masks, strict=True):
            box = self._crop_box(mask, f"{folder / self.mask_folder} {image.name}")
            scale = self.image_size / box[2]
            Ks.append(crop_resize_intrinsics(torch.from_numpy(model.cameras[image.camera_id].intrinsics(model_dir)),
                                             box[0], box[1], scale, scale))
            frames.append(_Frame(folder / "images" / image.name, self._mask_path(folder, image.name), box))
        cameras = Cameras(c2w.float(), torch.stack(Ks).float(), self.image_size, self.image_size)
        self._objects[index] = _Object(frames, cameras)
        return self._objects[index]

    def _crop_box(self, mask: np.ndarray, label: str) -> tuple[float, float, float]:
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if len(rows) == 0:
            raise InputError(f"{label}: empty mask")
        top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        side = max(bottom - top, right - left) * (1 + 2 * self.crop_margin)
        return float((left + right - side) / 2), float((top + bottom - side) / 2), float(side)

    def cameras(self, index: int) -> Cameras:
        return self._object(index).cameras

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        obj = self._object(index)
        chosen = list(range(len(obj.frames))) if views is None else list(views)
        images, masks = [], []
        for v in chosen:
            frame = obj.frames[v]
            rgb = self._crop(Image.fromarray(decode_image(frame.image)[..., :3]), frame.box, Image.Resampling.BICUBIC)
            mask = self._crop(Image.fromarray((decode_mask(frame.mask) * 255).astype(np.uint8)), frame.box,
                              Image.Resampling.BILINEAR)
            alpha = torch.from_numpy(mask).float()[None] / 255.0
            images.append(composite_on_white(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0, alpha))
            masks.append(alpha)
        return MultiViewExample(self.item_id(index), "object", torch.stack(images),
                                obj.cameras[torch.tensor(chosen, dtype=torch.long)], torch.stack(masks))

    def _crop(self, image: Image.Image, box: tuple[float, float, float], resample: Image.Resampling) -> np.ndarray:
        # Image.transform with EXTENT samples the box at sub-pixel precision and fills outside the frame with 0
        # (black image, empty mask: the composite makes it white).
        left, top, side = box
        size = (self.image_size, self.image_size)
        return np.array(image.transform(size, Image.Transform.EXTENT, (left, top, left + side, top + side), resample))


def _object_points(model: ColmapModel, images: list, masks: list[np.ndarray]) -> np.ndarray:
    """Sparse points observed inside the masks in at least half of (and at least two of) their observations."""
    inside = np.zeros(len(model.point_ids))
    seen = np.zeros(len(model.point_ids))
    index = model.point_index()
    for image, mask in zip(images, masks, strict=True):
        valid = image.point3d_ids >= 0
        rows = np.array([index.get(int(i), -1) for i in image.point3d_ids[valid]], dtype=np.int64)
        xy = np.floor(image.xys[valid]).astype(np.int64)
        known = rows >= 0
        rows, xy = rows[known], xy[known]
        in_frame = (xy[:, 0] >= 0) & (xy[:, 1] >= 0) & (xy[:, 0] < mask.shape[1]) & (xy[:, 1] < mask.shape[0])
        hits = np.zeros(len(rows), bool)
        hits[in_frame] = mask[xy[in_frame, 1], xy[in_frame, 0]]
        np.add.at(seen, rows, 1)
        np.add.at(inside, rows, hits)
    keep = (seen >= 2) & (inside >= seen / 2)
    return model.points[keep]
