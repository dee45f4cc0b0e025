"""``diffusiongs data convert``: any readable dataset into this project's format, decoded, cropped and resized
once, so that training reads small PNGs instead of re-running the public layouts' processing (MVImgNet masks and
crops, whole RealEstate10K chunks) in every DataLoader worker.

Parallel (each worker opens its own reader), shardable and resumable like the other jobs.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import tyro

from diffusiongs.data.images import center_crop_square, resize_example
from diffusiongs.data.jobs import JobReport, Task, failure_log_path, parse_shard, run_tasks, select_shard
from diffusiongs.data.reader import MultiViewReader
from diffusiongs.data.sources import SourceConfig, open_source
from diffusiongs.data.store import RenderedViews, build_manifest, item_dir, write_item
from diffusiongs.data.types import MultiViewExample

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertConfig:
    """Convert a dataset (G-Objaverse, RealEstate10K, MVImgNet, COLMAP scenes, ...) into this project's format."""

    out: Path
    """Output dataset folder (resumable)."""
    source: Annotated[SourceConfig, tyro.conf.OmitArgPrefixes] = field(default_factory=SourceConfig)
    res: int = 256
    """Output image size: views are centre-cropped to squares and resampled."""
    workers: int = 1
    """Worker processes, each with its own reader."""
    shard: str = "0/1"
    """Convert only shard i of n (``i/n``)."""
    progress: bool = True
    """Show a progress bar."""
    val_fraction: float = 0.02
    """Share of items in the val split."""
    test_fraction: float = 0.02
    """Share of items in the test split."""


_reader: MultiViewReader | None = None


def _open(source: SourceConfig) -> None:
    global _reader
    _reader = open_source(source)


def _safe_id(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", item_id)


def to_rendered_views(example: MultiViewExample) -> RenderedViews:
    """uint8 pixels of an example: RGBA with straight alpha for objects (the white composite undone where alpha > 0),
    RGB for scenes."""
    rgb = example.images
    if example.domain == "object" and example.masks is not None:
        alpha = example.masks
        straight = torch.where(alpha > 0, (rgb - (1 - alpha)) / alpha.clamp_min(1e-6), torch.zeros_like(rgb))
        rgb = torch.cat([straight.clamp(0, 1), alpha], dim=1)
    pixels = (rgb * 255).round().byte().permute(0, 2, 3, 1).numpy()
    depths = None if example.depths is None else example.depths[:, 0].numpy()
    return RenderedViews(np.ascontiguousarray(pixels), example.cameras, ("train",) * example.num_views, depths)


def _convert(task: Task) -> int:
    index, res = task.payload
    if _reader is None:
        raise RuntimeError("_convert: the worker has no reader")
    example = resize_example(center_crop_square(_reader.load(index)), res)
    write_item(task.directory, task.item_id, example.domain, to_rendered_views(example),
               {"generator": "diffusiongs data convert", "source": _reader.item_id(index)})
    return example.num_views


def run_convert(config: ConvertConfig) -> JobReport:
    reader = open_source(config.source)
    tasks = [Task(_safe_id(reader.item_id(i)), item_dir(config.out, reader.domain, _safe_id(reader.item_id(i))),
                  (i, config.res)) for i in range(len(reader))]
    shard = parse_shard(config.shard)
    report = run_tasks(select_shard(tasks, shard), _convert, _open, (config.source,), config.workers,
                       failure_log_path(config.out, shard), f"convert {config.source.kind}", config.progress)
    build_manifest(config.out, config.val_fraction, config.test_fraction, reuse=True)
    log.info("convert: %s", asdict(report))
    return report
