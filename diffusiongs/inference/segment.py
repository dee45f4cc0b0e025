"""Foreground masks for photos without an alpha channel.

Two methods, both offline:

* ``u2netp``: the U^2-Net-p salient-object network (Qin et al. 2020), 4.6 MB of ONNX shipped in
  ``diffusiongs/assets/segment/`` (source, licence and checksum in docs/segmentation.md), run with onnxruntime.
  Pre- and post-processing follow the U^2-Net reference code: resize to 320x320, divide by the image maximum,
  ImageNet mean/std; the first (fused) side output, min-max normalised, resized back: a soft mask.
* ``border-fill``: no network. The background is taken to be the colour of the image border; pixels close to it
  and connected to the border are background. It needs a plain backdrop and is the fallback when onnxruntime
  cannot be imported.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from jaxtyping import Float
from PIL import Image, ImageDraw

U2NETP_PATH = Path(__file__).resolve().parent.parent / "assets" / "segment" / "u2netp.onnx"
U2NETP_SHA256 = "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"
U2NETP_INPUT_SIDE = 320
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

BORDER_FILL_SIDE = 256
"""The border fill works on a copy whose longer side is at most this (the mask is resized back)."""
BORDER_FILL_MIN_TOLERANCE = 0.1
"""Smallest RGB distance (in [0, 1] units, Euclidean) from the border colour that still counts as background."""

SegmenterName = Literal["auto", "u2netp", "border-fill"]


@dataclass(frozen=True)
class Segmentation:
    """A foreground mask and the method that made it."""

    alpha: Float[np.ndarray, "h w"]
    """Foreground probability in [0, 1] at the input's size."""
    method: Literal["u2netp", "border-fill"]


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _u2netp_session():
    import onnxruntime

    digest = hashlib.sha256(U2NETP_PATH.read_bytes()).hexdigest()
    if digest != U2NETP_SHA256:
        raise RuntimeError(f"{U2NETP_PATH}: sha256 {digest} differs from the shipped file's {U2NETP_SHA256}")
    return onnxruntime.InferenceSession(str(U2NETP_PATH), providers=["CPUExecutionProvider"])


def _resize_float(image: Float[np.ndarray, "h w"], width: int, height: int) -> Float[np.ndarray, "h2 w2"]:
    return np.asarray(Image.fromarray(image.astype(np.float32)).resize((width, height), Image.BILINEAR))


def u2netp_mask(rgb: Float[np.ndarray, "h w 3"]) -> Float[np.ndarray, "h w"]:
    """The U^2-Net-p mask of an RGB image in [0, 1] (needs onnxruntime)."""
    height, width = rgb.shape[:2]
    image = Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB")
    small = np.asarray(image.resize((U2NETP_INPUT_SIDE, U2NETP_INPUT_SIDE), Image.LANCZOS), dtype=np.float32)
    small = small / max(float(small.max()), 1e-6)
    batch = ((small - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)[None].astype(np.float32)
    session = _u2netp_session()
    fused = session.run(None, {session.get_inputs()[0].name: batch})[0][0, 0]  # sigmoid outputs, [320, 320]
    low, high = float(fused.min()), float(fused.max())
    fused = (fused - low) / max(high - low, 1e-6)
    return np.clip(_resize_float(fused, width, height), 0.0, 1.0)


def border_fill_mask(rgb: Float[np.ndarray, "h w 3"]) -> Float[np.ndarray, "h w"]:
    """Foreground = everything not reachable from the image border through pixels of the border's colour.

    The border colour is the median of the outermost pixels; the tolerance grows with how much those pixels vary
    (three times their median distance from it), so that noise and soft shading of a plain backdrop still count as
    background.
    """
    height, width = rgb.shape[:2]
    scale = min(1.0, BORDER_FILL_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray((rgb * 255).round().astype(np.uint8), "RGB").resize(size, Image.BOX),
                       dtype=np.float32) / 255.0
    border = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]])
    colour = np.median(border, axis=0)
    spread = np.median(np.linalg.norm(border - colour, axis=-1))
    tolerance = max(BORDER_FILL_MIN_TOLERANCE, 3.0 * float(spread))
    passable = np.linalg.norm(small - colour, axis=-1) <= tolerance
    # Flood the passable pixels from a one-pixel passable frame around the image: what the fill reaches touches
    # the border through background-coloured pixels.
    canvas = np.pad(passable, 1, constant_values=True).astype(np.uint8) * 255
    flood = Image.fromarray(canvas, "L").copy()  # a copy owns its pixels (fromarray may share the array's)
    ImageDraw.floodfill(flood, (0, 0), 128, thresh=0)
    background = (np.asarray(flood)[1:-1, 1:-1] == 128).astype(np.float32)
    return np.clip(_resize_float(1.0 - background, width, height), 0.0, 1.0)


def segment(rgb: Float[np.ndarray, "h w 3"], segmenter: SegmenterName = "auto") -> Segmentation:
    """The foreground of an RGB image in [0, 1]. ``auto`` runs u2netp, or the border fill without onnxruntime."""
    if segmenter == "auto":
        segmenter = "u2netp" if onnxruntime_available() else "border-fill"
    if segmenter == "u2netp":
        return Segmentation(alpha=u2netp_mask(rgb), method="u2netp")
    return Segmentation(alpha=border_fill_mask(rgb), method="border-fill")
