"""Image decoding, compositing, cropping and resizing for the readers and training datasets.

Everything here keeps cameras and pixels consistent: a crop shifts the principal point, a resize scales the
intrinsics (docs/conventions.md: pixel (i, j) covers [j, j+1) x [i, i+1)).
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, UInt8
from PIL import Image
from torch import Tensor

from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras


def decode_image(source: Path | bytes, name: str | None = None) -> UInt8[np.ndarray, "h w c"]:
    """Decode a PNG/JPEG file (or its bytes) into uint8 ``[h, w, 3|4]`` (RGB or RGBA; grey becomes RGB).

    Raises:
        InputError: the file is missing or not a readable image (``name`` labels bytes in the message).
    """
    label = name or str(source)
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            if image.mode not in ("RGB", "RGBA"):
                image = image.convert("RGBA" if "A" in image.getbands() or "transparency" in image.info else "RGB")
            return np.array(image)
    except (OSError, ValueError) as err:
        raise InputError(f"{label}: cannot read image ({err})") from err


def image_size(source: Path | bytes, label: str) -> tuple[int, int]:
    """(width, height) from an image header, without decoding the pixels."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size
    except OSError as err:
        raise InputError(f"{label}: cannot read image ({err})") from err


def decode_mask(path: Path) -> Float[np.ndarray, "h w"]:
    """A mask image (grey, or the alpha/first channel of a colour image) as float in [0, 1]."""
    try:
        with Image.open(path) as image:
            band = "A" if "A" in image.getbands() else image.getbands()[0]
            return np.asarray(image.getchannel(band), dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read mask ({err})") from err


def to_tensors(pixels: UInt8[np.ndarray, "h w c"], white_background: bool
               ) -> tuple[Float[Tensor, "3 h w"], Float[Tensor, "1 h w"]]:
    """RGB in [0, 1] and alpha of a decoded image; with ``white_background`` the RGB is composited on white.

    Images without alpha get a mask of ones.
    """
    array = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
    rgb = array[:3]
    mask = array[3:4] if array.shape[0] == 4 else torch.ones_like(array[:1])
    if white_background:
        rgb = composite_on_white(rgb, mask)
    return rgb, mask


def composite_on_white(rgb: Float[Tensor, "*batch 3 h w"], alpha: Float[Tensor, "*batch 1 h w"]
                       ) -> Float[Tensor, "*batch 3 h w"]:
    """``rgb * alpha + (1 - alpha)``: straight-alpha colour over a white background."""
    return rgb * alpha + (1.0 - alpha)


def crop_resize_intrinsics(K: Float[Tensor, "*batch 3 3"], left: float | Tensor, top: float | Tensor,
                           scale_x: float | Tensor, scale_y: float | Tensor) -> Float[Tensor, "*batch 3 3"]:
    """Intrinsics after cropping at (``left``, ``top``) pixels and then scaling the crop by (``scale_x``,
    ``scale_y``)."""
    K = K.clone()
    sx = torch.as_tensor(scale_x, dtype=K.dtype)
    sy = torch.as_tensor(scale_y, dtype=K.dtype)
    K[..., 0, 0] = K[..., 0, 0] * sx
    K[..., 0, 2] = (K[..., 0, 2] - torch.as_tensor(left, dtype=K.dtype)) * sx
    K[..., 1, 1] = K[..., 1, 1] * sy
    K[..., 1, 2] = (K[..., 1, 2] - torch.as_tensor(top, dtype=K.dtype)) * sy
    return K


def center_crop_square(example: MultiViewExample) -> MultiViewExample:
    """The largest centred square of every view (a no-op for square images)."""
    height, width = example.images.shape[-2:]
    size = min(height, width)
    if height == width:
        return example
    top, left = (height - size) // 2, (width - size) // 2

    def crop(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[..., top:top + size, left:left + size]

    K = crop_resize_intrinsics(example.cameras.K, left, top, 1.0, 1.0)
    return replace(example, images=crop(example.images), masks=crop(example.masks), depths=crop(example.depths),
                   cameras=Cameras(example.cameras.c2w, K, size, size))


def resample_square(images: Float[Tensor, "n c h w"], size: int) -> Float[Tensor, "n c size size"]:
    """Images resampled to ``size`` x ``size`` by area averaging (antialiased bilinear), values kept in [0, 1]."""
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def resize_example(example: MultiViewExample, size: int) -> MultiViewExample:
    """Square views resampled to ``size`` x ``size``: area-averaged (antialiased bilinear) colour and masks,
    nearest-neighbour depth (averaging depth across an edge would invent surfaces)."""
    height, width = example.images.shape[-2:]
    if height != width:
        raise ValueError(f"resize_example: {example.item_id} has non-square views {width}x{height}; crop first")
    if size == height:
        return example

    masks = None if example.masks is None else resample_square(example.masks, size)
    depths = None if example.depths is None else F.interpolate(example.depths, size=(size, size), mode="nearest")
    return replace(example, images=resample_square(example.images, size), masks=masks, depths=depths,
                   cameras=example.cameras.resized(size, size))
