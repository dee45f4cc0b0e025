import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from blob_dataset import BlobDataset
from safetensors.torch import load_file

from diffusiongs.data.types import collate_examples
from diffusiongs.diffusion import NoiseSchedule
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.training.losses import LossConfig, point_distribution_loss
from diffusiongs.training.step import StepConfig, draw_step_noise, train_step
from diffusiongs.training.trainer import OptimConfig, TrainConfig, Trainer, ema_decay_at, ema_warning, lr_at


def mixed_batch(resolution: int = 16):
    ds = BlobDataset(num_items=2, num_views=6, resolution=resolution, scene_every=2)
    return collate_examples([ds[0], ds[1]], num_noisy=3)


def test_lr_schedule_warmup_then_cosine():
    cfg = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(5, cfg, 110) == pytest.approx(0.5)
    assert lr_at(10, cfg, 110) == pytest.approx(1.0)
    assert lr_at(60, cfg, 110) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_at(110, cfg, 110) == pytest.approx(0.1)


def test_point_distribution_loss_is_zero_at_its_target():
    origins = torch.tensor([[[0.0, 0.0, 3.0]]])
    g = torch.Generator().manual_seed(0)
    dist = torch.randn(1, 1, 4, 4, generator=g)
    dist = (dist - dist.mean()) / dist.flatten().std() * 0.5 + 3.0
    means = origins[:, :, None, None] + dist[..., None] * torch.tensor([0.0, 0.0, -1.0])
    assert point_distribution_loss(means, origins, 0.5).item() == pytest.approx(0.0, abs=1e-8)
    assert point_distribution_loss(means * 1.3, origins, 0.5).item() > 1e-3


def test_mixed_batch_trains_both_decoders_and_the_trunk():
    batch = mixed_batch()
    assert batch.is_object.tolist() == [True, False]
    model = DiffusionGS(preset("tiny"))
    schedule = NoiseSchedule()
    noise = draw_step_noise(batch, schedule, [torch.Generator().manual_seed(i) for i in range(2)])
    out = train_step(model, batch, schedule, noise, step=10_000, cfg=StepConfig(loss=LossConfig(perceptual_weight=0)))
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    for part in ("net.decoders.object.", "net.decoders.scene.", "net.transformer.0.", "net.image_tokenizer"):
        assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(part)), part
    assert {"l2_de", "l2_nv", "psnr_de", "loss"} <= set(out.metrics)


def test_warmup_trains_point_distribution_on_objects_only():
    batch = mixed_batch()
    model = DiffusionGS(preset("tiny"))
    schedule = NoiseSchedule()
    noise = draw_step_noise(batch, schedule, [torch.Generator().manual_seed(i) for i in range(2)])
    out = train_step(model, batch, schedule, noise, step=1, cfg=StepConfig())
    out.loss.backward()
    assert out.loss.item() > 0 and "point_distribution" in out.metrics
    scene_grads = [p.grad for n, p in model.named_parameters() if n.startswith("net.decoders.scene.")]
    assert all(g is None or g.abs().sum() == 0 for g in scene_grads)


def test_deterministic_baseline_ignores_noise():
    batch = mixed_batch()
    model = DiffusionGS(preset("tiny"))
    schedule = NoiseSchedule()
    cfg = StepConfig(loss=LossConfig(perceptual_weight=0))
    noises = [draw_step_noise(batch, schedule, [torch.Generator().manual_seed(s)] * 2) for s in (1, 2)]
    losses = [train_step(model, batch, schedule, n, 10_000, cfg, deterministic=True).loss.item() for n in noises]
    assert losses[0] == losses[1]


def tiny_config(out: Path, **kw) -> TrainConfig:
    base = TrainConfig(out=out, preset="tiny", steps=4, batch_size=2, num_workers=0, log_every=1, image_every=0,
                       ckpt_every=2, progress=False, device="cpu", resolution=16,
                       optim=OptimConfig(warmup_steps=2, lr=1e-3),
                       step=StepConfig(loss=LossConfig(perceptual_weight=0, point_warmup_steps=1)))
    return replace(base, **kw)


def run(cfg: TrainConfig, dataset=None) -> Trainer:
    trainer = Trainer(cfg, dataset or BlobDataset(num_items=5, num_views=6, resolution=16, scene_every=3), )
    trainer.train()
    return trainer


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path):
    straight = run(tiny_config(tmp_path / "a"))
    # Simulate a crash after the step-2 checkpoint: drop the step-4 checkpoint and point `latest` back.
    crashed = tmp_path / "b"
    run(tiny_config(crashed))
    shutil.rmtree(crashed / "checkpoints" / "step_00000004")
    (crashed / "checkpoints" / "latest").write_text("step_00000002\n")
    resumed = run(tiny_config(crashed))
    assert resumed.step == 4
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for name in straight.ema:
        assert torch.equal(straight.ema[name], resumed.ema[name]), name
    losses = [json.loads(line)["loss"] for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(v == v for v in losses)


def test_checkpoint_folder_is_complete_and_loadable(tmp_path):
    trainer = run(tiny_config(tmp_path / "run", steps=2, keep_last=1))
    folders = sorted((tmp_path / "run" / "checkpoints").glob("step_*"))
    assert [f.name for f in folders] == ["step_00000002"]
    folder = folders[0]
    for name in ("config.json", "model.safetensors", "ema.safetensors", "optimizer.pt", "trainer_state.json"):
        assert (folder / name).is_file(), name
    weights = load_file(str(folder / "model.safetensors"))
    assert set(weights) == set(trainer.model.state_dict())
    opt = torch.load(folder / "optimizer.pt", weights_only=True)
    assert "state" in opt and "param_groups" in opt
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))


@pytest.mark.parametrize("name", ["tiny", "small", "base"])
def test_every_preset_smoke_trains_two_steps_shrunk(tmp_path, name, monkeypatch):
    import diffusiongs.training.trainer as trainer_module

    def shrunk(preset_name, **overrides):
        return preset(preset_name, **{**overrides, "width": 32, "depth": 1, "num_heads": 2})

    monkeypatch.setattr(trainer_module, "preset", shrunk)
    trainer = run(tiny_config(tmp_path / name, preset=name, steps=2))
    assert trainer.step == 2
    assert (tmp_path / name / "checkpoints" / "latest").is_file()


@pytest.mark.parametrize("from_ema", [False, True])
def test_init_from_loads_the_raw_weights_for_a_new_stage_unless_asked_for_the_ema(tmp_path, from_ema):
    """A 256 -> 512 px second stage starts from the weights the first stage trained (its EMA only on request): after
    a short first stage the EMA is still mostly its warm-up average."""
    first = run(tiny_config(tmp_path / "stage1", steps=3))
    second = Trainer(tiny_config(tmp_path / "stage2", steps=2, resolution=32, init_from_ema=from_ema,
                                 init_from=tmp_path / "stage1" / "checkpoints" / "step_00000003"),
                     BlobDataset(num_items=3, num_views=6, resolution=32))
    second._restore()
    expected = first.ema if from_ema else first.model.state_dict()
    differs = False
    for name, value in second.model.state_dict().items():
        assert torch.equal(value, expected[name].float()), name
        differs |= not torch.equal(first.ema[name], first.model.state_dict()[name].float())
    assert differs  # the two choices are distinguishable


def test_ema_warmup_forgets_the_initialisation_at_any_run_length():
    """With the warm-up the initial weights' share of the EMA after s steps is prod_k (1+k)/(10+k) = 10! s! /
    (s+9)! ~ 3.6e6 / s^9: negligible after a few dozen steps, whatever the decay; without it, 0.9999^s."""
    warm = OptimConfig(ema_decay=0.9999)
    share = math.prod(ema_decay_at(s, warm) for s in range(1, 101))
    assert share == pytest.approx(math.factorial(10) * math.factorial(100) / math.factorial(109), rel=1e-9)
    assert ema_warning(warm, 1000) is None
    cold = OptimConfig(ema_decay=0.9999, ema_warmup=False)
    assert ema_decay_at(5, cold) == 0.9999
    assert "90%" in ema_warning(cold, 1000)
    assert ema_warning(OptimConfig(ema_decay=None), 10) is None


def test_training_can_start_from_the_shipped_demo_model(tmp_path):
    demo = Path(__file__).resolve().parents[1] / "diffusiongs" / "assets" / "demo_model"
    trainer = Trainer(TrainConfig(out=tmp_path / "run", preset="small", init_from=demo, device="cpu", progress=False),
                      BlobDataset(num_items=1))
    trainer._restore()
    shipped = load_file(str(demo / "model.safetensors"))
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, shipped[name].float()), name
