"""A tiny CPU training run on BlobDataset, shared by the training and quantisation tests."""

from dataclasses import replace
from pathlib import Path

from blob_dataset import BlobDataset

from diffusiongs.training.losses import LossConfig
from diffusiongs.training.step import StepConfig
from diffusiongs.training.trainer import OptimConfig, TrainConfig, Trainer


def tiny_config(out: Path, **kw) -> TrainConfig:
    """Four steps of the tiny preset at 16 px, a checkpoint every two; `kw` replaces any field."""
    base = TrainConfig(out=out, preset="tiny", steps=4, batch_size=2, num_workers=0, log_every=1, image_every=0,
                       ckpt_every=2, progress=False, device="cpu", resolution=16,
                       optim=OptimConfig(warmup_steps=2, lr=1e-3),
                       step=StepConfig(loss=LossConfig(perceptual_weight=0, point_warmup_steps=1)))
    return replace(base, **kw)


def run(cfg: TrainConfig, dataset=None) -> Trainer:
    """Train `cfg` to its end (on five blob items, every third a scene, unless `dataset` is given)."""
    trainer = Trainer(cfg, dataset or BlobDataset(num_items=5, num_views=6, resolution=16, scene_every=3))
    trainer.train()
    return trainer
