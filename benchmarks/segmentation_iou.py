"""Mask quality of the background removers (``diffusiongs.inference.segment``) against true alpha.

Every RGBA view of the given datasets (this project's format: ``DIR/objects/*/images/*.png``, e.g. made by
``diffusiongs data synth`` or ``data render``) is composited over three backdrops, then segmented:

* ``white``: the training and README framing;
* ``plain``: one random colour per image;
* ``cloudy``: smooth random colour variation (8x8 random colours, bicubic upsampled), a stand-in for a real room.

IoU of (mask > 0.5) with (alpha > 0.5) per image; reported as the mean and the minimum per method and backdrop, and
the mean per item (object folder).

    python benchmarks/segmentation_iou.py DIR [DIR ...] --out benchmarks/results/segmentation_iou.json
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import tyro
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffusiongs.evaluation.report import machine_info, utc_now  # noqa: E402
from diffusiongs.inference.segment import segment  # noqa: E402

METHODS = ("u2netp", "border-fill")
BACKDROPS = ("white", "plain", "cloudy")


@dataclass(frozen=True)
class IoUConfig:
    """Segment composited RGBA renders and score the masks against their alpha."""

    data: tyro.conf.Positional[tuple[Path, ...]]
    """Dataset folders in this project's format."""
    out: Path = Path("segmentation_iou.json")
    seed: int = 0
    """Seed of the random backdrops."""


def backdrop(kind: str, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "white":
        return np.ones((height, width, 3), np.float32)
    if kind == "plain":
        return np.broadcast_to(rng.uniform(0.1, 0.9, 3).astype(np.float32), (height, width, 3)).copy()
    coarse = (rng.uniform(0.1, 0.9, (8, 8, 3)) * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32) / 255.0


def iou(mask: np.ndarray, alpha: np.ndarray) -> float:
    predicted, truth = mask > 0.5, alpha > 0.5
    return float((predicted & truth).sum() / max((predicted | truth).sum(), 1))


def main(cfg: IoUConfig) -> dict:
    rng = np.random.default_rng(cfg.seed)
    images = sorted(p for folder in cfg.data for p in folder.glob("objects/*/images/*.png"))
    scores: dict[str, list[float]] = defaultdict(list)
    by_item: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    seconds: dict[str, float] = defaultdict(float)
    for path in images:
        rgba = np.asarray(Image.open(path).convert("RGBA"), np.float32) / 255.0
        alpha = rgba[..., 3:]
        for kind in BACKDROPS:
            rgb = rgba[..., :3] * alpha + backdrop(kind, *rgba.shape[:2], rng) * (1 - alpha)
            for method in METHODS:
                start = time.perf_counter()
                mask = segment(rgb, method).alpha
                seconds[method] += time.perf_counter() - start
                score = iou(mask, alpha[..., 0])
                scores[f"{method}/{kind}"].append(score)
                by_item[path.parent.parent.name][f"{method}/{kind}"].append(score)
    report = {
        "command": " ".join(sys.argv), "date": utc_now(), "machine": machine_info("cpu"),
        "onnxruntime": onnxruntime.__version__,
        "images": len(images), "datasets": [str(d) for d in cfg.data],
        "iou": {key: {"mean": float(np.mean(v)), "min": float(np.min(v)), "n": len(v)} for key, v in scores.items()},
        "mean_iou_per_item": {item: {key: float(np.mean(v)) for key, v in per_key.items()}
                              for item, per_key in by_item.items()},
        "seconds_per_image": {m: seconds[m] / max(len(images) * len(BACKDROPS), 1) for m in METHODS},
    }
    cfg.out.parent.mkdir(parents=True, exist_ok=True)
    cfg.out.write_text(json.dumps(report, indent=2) + "\n")
    for key, value in report["iou"].items():
        print(f"{key:22s} mean IoU {value['mean']:.3f}  min {value['min']:.3f}  ({value['n']} images)")
    return report


if __name__ == "__main__":
    main(tyro.cli(IoUConfig))
