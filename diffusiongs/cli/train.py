"""``diffusiongs train``: train on datasets in this project's format, alone or under ``torchrun`` (DDP).

    diffusiongs train --preset tiny --data DIR --out RUN
    torchrun --nproc_per_node=8 -m diffusiongs.cli.main train --preset base --data OBJ --scene-data SCN --out RUN

Public layouts (G-Objaverse, RealEstate10K, MVImgNet, DL3DV) are converted first with ``diffusiongs data convert``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import tyro

from diffusiongs.data.dataset import MixedDataset, MultiViewDataset, SampleConfig, check_view_counts
from diffusiongs.data.store import NativeReader
from diffusiongs.errors import InputError
from diffusiongs.geometry.layout import SCENE_SELECTION
from diffusiongs.training.distributed import cleanup_distributed, setup_distributed
from diffusiongs.training.guard import validate_train_config
from diffusiongs.training.trainer import TrainConfig, Trainer, model_config_for


@dataclass(frozen=True)
class TrainArgs:
    """Train a DiffusionGS model."""

    train: Annotated[TrainConfig, tyro.conf.arg(name="")] = field(default_factory=TrainConfig)
    data: tuple[Path, ...] = ()
    """Object datasets (this project's format, e.g. from `diffusiongs data synth`)."""
    scene_data: tuple[Path, ...] = ()
    """Scene datasets (this project's format)."""
    scene_weight: float = 1.0
    """Mixed training: how often a scene is drawn relative to an object (1.0 = as often); each dataset within a
    domain is drawn in proportion to its size."""
    num_novel: int = 6
    """M, novel views supervised per sample (official: 6 for objects, 3 for scenes)."""


def build_dataset(args: TrainArgs) -> MultiViewDataset | MixedDataset:
    if not args.data and not args.scene_data:
        raise InputError("give at least one dataset with --data (objects) or --scene-data (scenes)")
    model_cfg = model_config_for(args.train)
    sample = SampleConfig(resolution=model_cfg.resolution, num_noisy=model_cfg.num_noisy_views,
                          num_novel=args.num_novel, layout=model_cfg.view_layout, seed=args.train.seed)
    layouts = {"object": model_cfg.view_layout, "scene": SCENE_SELECTION}
    parts: list[tuple[MultiViewDataset, float]] = []
    for paths, domain, weight in ((args.data, "object", 1.0), (args.scene_data, "scene", args.scene_weight)):
        domain_sample = replace(sample, layout=layouts[domain])
        datasets = [MultiViewDataset(NativeReader(path, "train", domain), domain_sample) for path in paths]
        for path, dataset in zip(paths, datasets):
            check_view_counts(dataset, str(path))
        total = sum(len(d) for d in datasets)
        parts += [(d, weight * len(d) / total) for d in datasets]
    if len(parts) == 1:
        return parts[0][0]
    return MixedDataset([d for d, _ in parts], [w for _, w in parts], seed=args.train.seed)


def main(argv: list[str]) -> int:
    args = tyro.cli(TrainArgs, args=argv, prog="diffusiongs train")
    validate_train_config(args.train)  # before any data or model work
    if args.num_novel < 0:
        raise InputError(f"--num-novel {args.num_novel}: must be >= 0")
    info = setup_distributed(args.train.device)
    try:
        dataset = build_dataset(args)
        train_cfg = replace(args.train, progress=args.train.progress and info.is_main)
        Trainer(train_cfg, dataset, info).train()
    finally:
        cleanup_distributed(info)
    return 0
