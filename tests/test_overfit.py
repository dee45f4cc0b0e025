"""A `slow` end-to-end check that the method learns: overfit one synthetic object, then sample it back."""

import pytest
import torch
from blob_dataset import BlobDataset

from diffusiongs.diffusion import SamplerConfig
from diffusiongs.geometry import orbit_cameras
from diffusiongs.inference.pipeline import GenerateConfig, Pipeline
from diffusiongs.metrics import psnr
from diffusiongs.render import RenderConfig, render
from diffusiongs.training.losses import LossConfig
from diffusiongs.training.step import StepConfig
from diffusiongs.training.trainer import OptimConfig, TrainConfig, Trainer

PSNR_FLOOR_DB = 22.0
"""Measured on 2026-11-25 (project CPU machine, 2 cores, torch 2.13.0+cpu; 95 s for the test): the trained model
scored 26.8, 29.1 and 30.1 dB on the three scored views, the untrained one 8.9-9.6 dB, a blank white image
10.9-12.8 dB. The floor leaves room for other platforms' arithmetic and still fails a model that did not learn."""


@pytest.mark.slow
def test_overfitting_one_object_reproduces_its_views(tmp_path):
    dataset = BlobDataset(num_items=1, num_views=8, resolution=32)
    cfg = TrainConfig(out=tmp_path / "run", preset="tiny", steps=600, batch_size=4, num_workers=0, log_every=50,
                      image_every=0, ckpt_every=600, progress=False, device="cpu", resolution=32, seed=0,
                      optim=OptimConfig(lr=2e-3, warmup_steps=30, ema_decay=None),
                      step=StepConfig(loss=LossConfig(perceptual_weight=0, point_warmup_steps=30)))
    trainer = Trainer(cfg, dataset)
    trainer.train()

    cameras = orbit_cameras(4, 3.0, 20.0, 50.0, 32)
    truth = render(dataset._object(0)[None], cameras.reshape(1, -1), torch.ones(3),
                   RenderConfig(backend="torch")).rgb[0]
    pipeline = Pipeline(trainer.model, device="cpu")
    gen = GenerateConfig(sampler=SamplerConfig("ddim", 20), seed=1)
    gaussians, _ = pipeline.generate_from_condition(truth[0], cameras, gen)
    views = pipeline.model.render(gaussians[None], cameras.reshape(1, -1)).rgb[0]
    scores = psnr(views[1:], truth[1:])  # the condition view is not scored
    print(f"overfit PSNR by view: {scores.tolist()}, mean {scores.mean():.2f} dB")
    assert scores.mean() > PSNR_FLOOR_DB, scores
