"""Input image -> the model's condition view: foreground mask, crop, recentre, rescale, white background."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

from diffusiongs.errors import InputError, InputWarning
from diffusiongs.inference.segment import SegmenterName, onnxruntime_available, segment

ImageInput = str | Path | Image.Image | np.ndarray
"""An image file's path, a PIL image, or an HxW / HxWx3 / HxWx4 array (uint8, or float in [0, 1])."""

ALPHA_FOREGROUND = 0.1
"""Alpha above which a pixel counts as object when measuring its bounding box."""
MIN_INPUT_FRACTION = 0.5
"""Inputs whose shorter side is below this fraction of the model resolution get a warning (they are upscaled)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How an input photo becomes the condition view."""

    foreground_ratio: float = 0.7
    """Side of the object's bounding box over the image side after rescaling. Match the training framing: an
    object in [-1, 1]^3 seen from distance 3 with a 50 degree FOV spans about 0.7 of the image. Results depend on
    it (the official model is reported to prefer smaller ratios than 0.825)."""
    background: Literal["auto", "remove", "keep"] = "auto"
    """``auto``: use the alpha channel of RGBA inputs and remove the background of RGB inputs; ``remove``: always
    remove the background; ``keep``: use the image as it is (no mask, no recentring)."""
    segmenter: SegmenterName = "auto"
    """How backgrounds are removed: ``u2netp`` (a small network shipped with the package, run by onnxruntime),
    ``border-fill`` (no network: the border's colour is the background; plain backdrops only) or ``auto``
    (u2netp, or border-fill with a warning when onnxruntime cannot be imported)."""


ForegroundSource = Literal["alpha", "u2netp", "border-fill", "none"]


@dataclass(frozen=True)
class ConditionImage:
    """The prepared condition view.

    Attributes:
        rgb: RGB in [0, 1] on a white background, ``[3, res, res]``.
        alpha: the foreground mask, ``[1, res, res]``.
        foreground: where the mask came from: the input's alpha channel, a background remover (``u2netp``,
            ``border-fill``), or ``none`` (``background="keep"``: the whole image).
    """

    rgb: Float[Tensor, "3 h w"]
    alpha: Float[Tensor, "1 h w"]
    foreground: ForegroundSource


def input_name(image: ImageInput) -> str:
    """How messages refer to an input: its path, or a description of an in-memory image."""
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, Image.Image):
        return f"<PIL image {image.width}x{image.height} {image.mode}>"
    if isinstance(image, np.ndarray):
        return f"<array {'x'.join(map(str, image.shape))} {image.dtype}>"
    return f"<{type(image).__name__}>"


SIXTEEN_BIT_FULL_SCALE = 65535.0
"""White in Pillow's integer grey modes ("I;16" and "I", as 16-bit grey PNGs and TIFFs open)."""


def _rgba_of_pil(image: Image.Image) -> tuple[Float[np.ndarray, "h w 4"], bool]:
    """float32 RGBA in [0, 1], upright (EXIF orientation applied), and whether the image has an alpha channel."""
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    upright = ImageOps.exif_transpose(image)
    if upright.mode.startswith("I") or upright.mode == "F":
        # High-bit-depth grey: Pillow's convert("RGBA") would clip every value above 255 to white.
        grey = np.asarray(upright, dtype=np.float32)
        grey = np.clip(grey if upright.mode == "F" else grey / SIXTEEN_BIT_FULL_SCALE, 0.0, 1.0)
        return np.stack([grey, grey, grey, np.ones_like(grey)], axis=-1), False
    return np.asarray(upright.convert("RGBA"), dtype=np.float32) / 255.0, has_alpha


def _rgba_of_array(array: np.ndarray, name: str) -> tuple[Float[np.ndarray, "h w 4"], bool]:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4) or 0 in array.shape:
        raise InputError(f"{name}: expected an HxW, HxWx3 or HxWx4 image array")
    if array.dtype == np.uint8:
        values = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.floating):
        values = array.astype(np.float32)
        if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
            raise InputError(f"{name}: float image values must be finite and in [0, 1]")
    else:
        raise InputError(f"{name}: dtype {array.dtype} is not supported (uint8, or float in [0, 1])")
    has_alpha = values.shape[-1] == 4
    rgb = np.repeat(values, 3, axis=-1) if values.shape[-1] == 1 else values[..., :3]
    alpha = values[..., 3:] if has_alpha else np.ones_like(values[..., :1])
    return np.concatenate([rgb, alpha], axis=-1), has_alpha


def read_rgba(image: ImageInput) -> tuple[Float[np.ndarray, "h w 4"], bool]:
    """An image file, PIL image or array as float32 RGBA in [0, 1], and whether it had an alpha channel.

    Files and PIL images are turned upright by their EXIF orientation (phone photos are stored sideways).
    """
    name = input_name(image)
    if isinstance(image, np.ndarray):
        return _rgba_of_array(image, name)
    if isinstance(image, Image.Image):
        return _rgba_of_pil(image)
    if not isinstance(image, (str, Path)):
        raise InputError(f"{name}: expected an image path, a PIL image or a numpy array")
    try:
        with Image.open(image) as opened:
            return _rgba_of_pil(opened)
    except FileNotFoundError:
        raise InputError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{name}: is a folder, not an image") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"{name}: not a readable image ({err})") from None


def _remove_background(rgba: np.ndarray, name: str, segmenter: SegmenterName) -> tuple[np.ndarray, str]:
    if segmenter == "u2netp" and not onnxruntime_available():
        raise InputError(f"{name}: the u2netp background remover needs onnxruntime (`pip install onnxruntime`); "
                         "or use the border-fill remover")
    result = segment(rgba[..., :3], segmenter)
    if result.method == "border-fill":
        why = ", used because onnxruntime cannot be imported," if segmenter == "auto" else ""
        if result.alpha.max() <= ALPHA_FOREGROUND:
            raise InputError(f"{name}: the border-colour background remover{why} found no object (it needs a plain "
                             "backdrop); pass an RGBA image with a transparent background, or --background keep")
        if why:
            warnings.warn(f"{name}: onnxruntime cannot be imported, so the background was removed with the "
                          "border-colour fallback (plain backdrops only; `pip install onnxruntime` for the network)",
                          InputWarning, stacklevel=3)
    return np.concatenate([rgba[..., :3], result.alpha[..., None]], axis=-1), result.method


def _frame_object(rgba: np.ndarray, ratio: float, name: str) -> np.ndarray:
    """Crop to the foreground's bounding box and paste it centred on a square canvas, scaled to ``ratio``."""
    ys, xs = np.nonzero(rgba[..., 3] > ALPHA_FOREGROUND)
    if len(ys) == 0:
        raise InputError(f"{name}: no foreground found (empty alpha channel or mask)")
    crop = rgba[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    side = int(np.ceil(max(crop.shape[:2]) / ratio))
    canvas = np.zeros((side, side, 4), dtype=np.float32)
    top, left = (side - crop.shape[0]) // 2, (side - crop.shape[1]) // 2
    canvas[top:top + crop.shape[0], left:left + crop.shape[1]] = crop
    return canvas


def _resize_premultiplied(rgba: np.ndarray, resolution: int) -> np.ndarray:
    """Resample with colour premultiplied by alpha, so transparent pixels do not bleed into the edges."""
    premultiplied = np.concatenate([rgba[..., :3] * rgba[..., 3:], rgba[..., 3:]], axis=-1)
    channels = [np.asarray(Image.fromarray(premultiplied[..., c]).resize((resolution, resolution), Image.LANCZOS))
                for c in range(4)]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def _square(rgba: np.ndarray) -> np.ndarray:
    h, w = rgba.shape[:2]
    side = max(h, w)
    canvas = np.ones((side, side, 4), dtype=np.float32)
    canvas[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = rgba
    return canvas


def _warn_if_small(rgba: np.ndarray, name: str, resolution: int) -> None:
    height, width = rgba.shape[:2]
    if min(height, width) < resolution * MIN_INPUT_FRACTION:
        warnings.warn(f"{name}: {width}x{height} pixels is small for this model, which works at {resolution} px; "
                      "the result will be blurry", InputWarning, stacklevel=3)


def prepare_condition_image(image: ImageInput, resolution: int, cfg: PreprocessConfig = PreprocessConfig()
                            ) -> ConditionImage:
    """Read an image (path, PIL image or array) and frame it as the model's condition view."""
    name = input_name(image)
    rgba, has_alpha = read_rgba(image)
    _warn_if_small(rgba, name, resolution)
    foreground: ForegroundSource = "alpha"
    if cfg.background == "keep":
        rgba = _square(np.concatenate([rgba[..., :3], np.ones_like(rgba[..., 3:])], axis=-1))
        foreground = "none"
    else:
        if cfg.background == "remove" or not has_alpha:
            rgba, foreground = _remove_background(rgba, name, cfg.segmenter)
        rgba = _frame_object(rgba, cfg.foreground_ratio, name)
    rgba = _resize_premultiplied(rgba, resolution)
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] + (1.0 - alpha)  # premultiplied colour over white
    return ConditionImage(rgb=torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().clamp(0, 1),
                          alpha=torch.from_numpy(np.ascontiguousarray(alpha)).permute(2, 0, 1).float(),
                          foreground=foreground)
