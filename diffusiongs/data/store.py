"""This project's dataset format (docs/data.md): writing items, the manifest, and the reader.

Layout::

    ROOT/manifest.json                      items and train/val/test splits
    ROOT/objects/<item_id>/cameras.json     cameras and view list, written last: its presence marks a finished item
    ROOT/objects/<item_id>/images/00000.png RGBA (objects, straight alpha) or RGB (scenes), uint8
    ROOT/objects/<item_id>/depth/00000.png  optional uint16 camera z in units of ``depth_unit`` (0 = unknown)
    ROOT/objects/<item_id>/surface.npy      optional float32 [P, 3] points on the seen surface (geometry metrics)
    ROOT/scenes/<item_id>/...               the same for scenes

Cameras are stored in the conventions of docs/conventions.md (OpenCV camera-to-world, intrinsics in pixels,
z-up world; objects in [-1, 1]^3). Every file is written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, UInt8
from PIL import Image

from diffusiongs.data.images import decode_image, to_tensors
from diffusiongs.data.normalize import normalize_scene_cameras
from diffusiongs.data.types import Domain, MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras

log = logging.getLogger(__name__)

FORMAT = "diffusiongs-multiview"
FORMAT_VERSION = 1
CAMERAS_FILE = "cameras.json"
SURFACE_FILE = "surface.npy"
MANIFEST_FILE = "manifest.json"
DOMAIN_FOLDERS: dict[Domain, str] = {"object": "objects", "scene": "scenes"}
SPLITS = ("train", "val", "test")
PNG_COMPRESS_LEVEL = 1
"""zlib level for written PNGs: level 1 encodes a 256^2 RGBA view in about 1 ms; higher levels save ~1/3 of the
bytes at 1.5x the time, which matters more when thousands of objects are rendered on a few cores."""


# ----------------------------------------------------------------------------------------------- atomic files

def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_bytes(path, json.dumps(payload, indent=1).encode())


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def read_json(path: Path) -> Any:
    """Parsed JSON, or InputError naming the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise InputError(f"{path}: file not found") from err
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from err


# ----------------------------------------------------------------------------------------------- writing items

@dataclass(frozen=True)
class RenderedViews:
    """The views of one item as a renderer produced them.

    Attributes:
        pixels: uint8 RGBA with straight alpha (objects) or RGB (scenes), ``[view, h, w, 4|3]``.
        cameras: the views' cameras (OpenCV, batch shape ``[view]``).
        groups: per view, ``"train"`` (random views / scene frames) or ``"eval"`` (fixed evaluation orbits).
        depths: camera z per pixel, 0 where nothing was hit, ``[view, h, w]``.
    """

    pixels: UInt8[np.ndarray, "view h w c"]
    cameras: Cameras
    groups: tuple[str, ...]
    depths: Float[np.ndarray, "view h w"] | None = None


def item_dir(root: Path, domain: Domain, item_id: str) -> Path:
    return root / DOMAIN_FOLDERS[domain] / item_id


def is_complete(directory: Path) -> bool:
    """Whether an item folder is finished (its cameras.json, written last, exists)."""
    return (directory / CAMERAS_FILE).is_file()


def write_item(directory: Path, item_id: str, domain: Domain, views: RenderedViews,
               meta: dict[str, Any] | None = None, depth_unit: float | None = None) -> None:
    """Write one item's images (and depths), then its cameras.json: a crash leaves no cameras.json behind, so a
    resumed job redoes the item.

    Args:
        depth_unit: world units per uint16 step of the depth PNGs (depth is clipped to 65535 steps); by default the
            item's farthest depth is the last step, the finest steps that hold every value.
    """
    if views.depths is not None and depth_unit is None:
        depth_unit = max(float(views.depths.max()), 1e-6) / 65535
    num_views = views.pixels.shape[0]
    if len(views.groups) != num_views or tuple(views.cameras.batch_shape) != (num_views,):
        raise ValueError(f"write_item {item_id}: {num_views} images, {len(views.groups)} groups, "
                         f"cameras {tuple(views.cameras.batch_shape)}")
    records = []
    for v in range(num_views):
        record: dict[str, Any] = {"image": f"images/{v:05d}.png", "group": views.groups[v]}
        atomic_write_bytes(directory / record["image"], encode_png(views.pixels[v]))
        if views.depths is not None:
            record["depth"] = f"depth/{v:05d}.png"
            steps = np.clip(np.rint(views.depths[v] / depth_unit), 0, 65535).astype(np.uint16)
            atomic_write_bytes(directory / record["depth"], encode_png(steps))
        record["c2w"] = views.cameras.c2w[v].tolist()
        record["K"] = views.cameras.K[v].tolist()
        records.append(record)
    atomic_write_json(directory / CAMERAS_FILE, {
        "format": FORMAT, "version": FORMAT_VERSION, "item_id": item_id, "domain": domain,
        "width": views.cameras.width, "height": views.cameras.height,
        "depth_unit": depth_unit if views.depths is not None else None,
        "views": records, "meta": meta or {}})


def write_surface(directory: Path, points: Float[np.ndarray, "p 3"]) -> None:
    """Store an object's ground-truth surface samples (world frame of its cameras) as ``surface.npy``."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(points, dtype=np.float32), allow_pickle=False)
    atomic_write_bytes(directory / SURFACE_FILE, buffer.getvalue())


def read_surface(path: Path) -> Float[torch.Tensor, "p 3"]:
    """Surface samples written by :func:`write_surface`; InputError naming the file when it is not ``[P, 3]``."""
    try:
        points = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read surface samples ({err})") from err
    if points.ndim != 2 or points.shape[1] != 3 or len(points) == 0 or not np.isfinite(points).all():
        raise InputError(f"{path}: expected finite float points [P, 3] with P > 0, got shape {points.shape}")
    return torch.from_numpy(points.astype(np.float32))


# ----------------------------------------------------------------------------------------------- manifest

@dataclass(frozen=True)
class Manifest:
    """Which items a dataset holds and how they are split.

    Attributes:
        items: item id -> (folder relative to the root, domain).
        splits: split name -> item ids.
    """

    items: dict[str, tuple[str, Domain]]
    splits: dict[str, list[str]]


def split_of(item_id: str, val_fraction: float, test_fraction: float) -> str:
    """The split of an item, from a hash of its id: stable across runs, shards and dataset sizes."""
    u = int(hashlib.sha256(item_id.encode()).hexdigest()[:12], 16) / 16**12
    if u < val_fraction:
        return "val"
    return "test" if u < val_fraction + test_fraction else "train"


def build_manifest(root: Path, val_fraction: float = 0.02, test_fraction: float = 0.02,
                   reuse: bool = False) -> Manifest:
    """Scan ``root`` for finished items and write ``root/manifest.json`` (atomically). An item whose meta names its
    split (e.g. a mesh bundle's held-out meshes) keeps it; the others are split by a hash of their id.

    ``reuse``: for items the existing manifest already indexes at the same folder, take the split their meta states
    from it instead of reading their cameras.json again (a finished item is never rewritten), so that each shard's
    run reads only its new items; ``diffusiongs data manifest`` re-reads everything."""
    known = _stated_splits(root) if reuse else {}
    items: dict[str, tuple[str, Domain]] = {}
    stated: dict[str, str | None] = {}
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
    for domain, folder in DOMAIN_FOLDERS.items():
        for marker in sorted((root / folder).glob(f"*/{CAMERAS_FILE}")):
            item_id = marker.parent.name
            if item_id in items:
                raise InputError(f"{root}: item id '{item_id}' exists as an object and as a scene")
            items[item_id] = (f"{folder}/{item_id}", domain)
            if known.get(item_id, (None,))[0] == items[item_id][0]:
                stated[item_id] = known[item_id][1]
            else:
                split = read_json(marker).get("meta", {}).get("split")
                stated[item_id] = split if split in SPLITS else None
            splits[stated[item_id] or split_of(item_id, val_fraction, test_fraction)].append(item_id)
    atomic_write_json(root / MANIFEST_FILE, {
        "format": f"{FORMAT}-manifest", "version": FORMAT_VERSION,
        "items": {k: {"path": path, "domain": domain, "stated_split": stated[k]}
                  for k, (path, domain) in items.items()},
        "splits": splits})
    return Manifest(items, splits)


def _stated_splits(root: Path) -> dict[str, tuple[str, str | None]]:
    """item id -> (folder, split its meta states or None) from an existing manifest; empty when there is none, it is
    unreadable, or it predates the record (then every item is read)."""
    try:
        entries = read_json(root / MANIFEST_FILE)["items"]
        return {k: (v["path"], v["stated_split"]) for k, v in entries.items() if "stated_split" in v}
    except (InputError, KeyError, TypeError, AttributeError):
        return {}


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise InputError(f"{path}: no manifest (run `diffusiongs data manifest {root}` to index finished items)")
    payload = read_json(path)
    try:
        items = {k: (v["path"], v["domain"]) for k, v in payload["items"].items()}
        splits = {k: list(v) for k, v in payload["splits"].items()}
    except (KeyError, TypeError, AttributeError) as err:
        raise InputError(f"{path}: not a {FORMAT} manifest ({err!r} missing or malformed)") from err
    return Manifest(items, splits)


# ----------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class _ItemRecord:
    directory: Path
    cameras: Cameras
    views: list[dict[str, Any]]
    depth_unit: float | None


def parse_cameras_file(path: Path) -> tuple[Cameras, list[dict[str, Any]], float | None, Domain]:
    """Cameras, view records, depth unit and domain of one item's cameras.json."""
    payload = read_json(path)
    try:
        views = payload["views"]
        c2w = torch.tensor([v["c2w"] for v in views], dtype=torch.float32)
        K = torch.tensor([v["K"] for v in views], dtype=torch.float32)
        cameras = Cameras(c2w, K, int(payload["width"]), int(payload["height"]))
        domain = payload["domain"]
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path}: malformed cameras file ({err!r})") from err
    if not views or domain not in DOMAIN_FOLDERS:
        raise InputError(f"{path}: no views or unknown domain {domain!r}")
    return cameras, views, payload.get("depth_unit"), domain


class NativeReader:
    """Reads datasets in this project's format (made by ``diffusiongs data synth|render|convert``).

    Scene cameras (and depths) are normalised over the item's exposed views like RealEstate10K's
    (:func:`normalize_scene_cameras`); object cameras are returned as stored.

    Args:
        root: the dataset folder (with manifest.json).
        split: ``"train"``, ``"val"`` or ``"test"``.
        domain: the reader yields only items of this domain (a folder may hold both).
        groups: the view groups to expose: ``"train"`` views (random viewpoints, scene frames) and/or ``"eval"``
            (fixed evaluation orbits).
    """

    def __init__(self, root: Path, split: str = "train", domain: Domain = "object",
                 groups: Sequence[str] = ("train",)) -> None:
        self.root = Path(root)
        self.domain: Domain = domain
        self.groups = tuple(groups)
        manifest = read_manifest(self.root)
        if split not in manifest.splits:
            raise InputError(f"{self.root / MANIFEST_FILE}: no split '{split}' (has {sorted(manifest.splits)})")
        self._ids = [i for i in manifest.splits[split] if manifest.items[i][1] == domain]
        self._paths = {i: manifest.items[i][0] for i in self._ids}
        self._records: dict[int, _ItemRecord] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def item_id(self, index: int) -> str:
        return self._ids[index]

    def _record(self, index: int) -> _ItemRecord:
        # cameras.json is parsed once per item and process: view selection asks for the cameras every sample.
        if index not in self._records:
            directory = self.root / self._paths[self._ids[index]]
            cameras, views, depth_unit, _ = parse_cameras_file(directory / CAMERAS_FILE)
            keep = [i for i, v in enumerate(views) if v.get("group", "train") in self.groups]
            if not keep:
                raise InputError(f"{directory / CAMERAS_FILE}: no views in groups {self.groups}")
            cameras = cameras[torch.tensor(keep)]
            if self.domain == "scene":
                # Scenes are stored in their own units; readers yield them normalised (depths scale along).
                c2w, scale = normalize_scene_cameras(cameras.c2w)
                cameras = Cameras(c2w, cameras.K, cameras.width, cameras.height)
                depth_unit = None if depth_unit is None else depth_unit * scale
            self._records[index] = _ItemRecord(directory, cameras, [views[i] for i in keep], depth_unit)
        return self._records[index]

    def cameras(self, index: int) -> Cameras:
        return self._record(index).cameras

    def surface(self, index: int) -> Float[torch.Tensor, "p 3"] | None:
        """The object's ground-truth surface samples (``surface.npy``, in the frame of :meth:`cameras`), or None
        when the item has none (scenes, datasets made before the file existed, ``--surface-points 0``)."""
        path = self.root / self._paths[self._ids[index]] / SURFACE_FILE
        if self.domain != "object" or not path.is_file():
            return None
        return read_surface(path)

    def load(self, index: int, views: Sequence[int] | None = None) -> MultiViewExample:
        record = self._record(index)
        chosen = list(range(len(record.views))) if views is None else list(views)
        images, masks, depths = [], [], []
        for v in chosen:
            rgb, mask = to_tensors(decode_image(record.directory / record.views[v]["image"]),
                                   white_background=self.domain == "object")
            images.append(rgb)
            masks.append(mask)
            if record.depth_unit is not None and "depth" in record.views[v]:
                depths.append(_read_depth(record.directory / record.views[v]["depth"], record.depth_unit))
        cameras = record.cameras[torch.tensor(chosen, dtype=torch.long)]
        if tuple(images[0].shape[-2:]) != (cameras.height, cameras.width):
            raise InputError(f"{record.directory}: images are {tuple(images[0].shape[-2:])}, cameras.json says "
                             f"{cameras.height}x{cameras.width}")
        return MultiViewExample(item_id=self._ids[index], domain=self.domain, images=torch.stack(images),
                                cameras=cameras, masks=torch.stack(masks),
                                depths=torch.stack(depths) if len(depths) == len(chosen) else None)


def _read_depth(path: Path, unit: float) -> torch.Tensor:
    try:
        with Image.open(path) as image:
            steps = np.asarray(image, dtype=np.float32)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read depth ({err})") from err
    return torch.from_numpy(steps * unit)[None]
