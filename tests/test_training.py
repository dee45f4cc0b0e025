import functools
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from blob_dataset import BlobDataset
from safetensors.torch import load_file, save_file
from tiny_training import run, tiny_config

from diffusiongs.cli.main import entrypoint
from diffusiongs.data.types import collate_examples
from diffusiongs.diffusion import NoiseSchedule
from diffusiongs.errors import InputError, TrainingDiverged
from diffusiongs.geometry import ViewLayout
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system.io import load_model, load_weights, read_model_config
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


def test_init_from_a_model_of_another_layout_says_so_in_one_line(tmp_path, capsys):
    run(tiny_config(tmp_path / "stage1", steps=2, layout=ViewLayout(mode="constrained")))
    capsys.readouterr()
    second = Trainer(tiny_config(tmp_path / "stage2", steps=2, init_from=tmp_path / "stage1" / "checkpoints" /
                                 "step_00000002"), BlobDataset(num_items=3, num_views=6, resolution=16))
    second._restore()
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "constrained" in notes[0] and "orbit" in notes[0]
    assert second.model_cfg.view_layout.mode == "orbit"


def test_ema_warmup_forgets_the_initialisation_at_any_run_length():
    """With the warm-up the initial weights' share of the EMA after s steps is prod_{k=1..s} (1+k)/(10+k) =
    10! (s+1)! / (s+10)! ~ 3.6e6 / s^9: negligible after a few dozen steps, whatever the decay; without it,
    0.9999^s."""
    warm = OptimConfig(ema_decay=0.9999)
    share = math.prod(ema_decay_at(s, warm) for s in range(1, 101))
    # 100 float64 factors, each rounded once: relative error <= 100 * 2^-53 ~ 1e-14 (abs=0: the share is ~2e-12)
    expected = math.factorial(10) * math.factorial(101) / math.factorial(110)
    assert share == pytest.approx(expected, rel=1e-12, abs=0)
    assert ema_warning(warm, 1000) is None
    cold = OptimConfig(ema_decay=0.9999, ema_warmup=False)
    assert ema_decay_at(5, cold) == 0.9999
    assert "90%" in ema_warning(cold, 1000)
    assert ema_warning(OptimConfig(ema_decay=None), 10) is None


def test_training_can_start_from_the_shipped_demo_model(tmp_path):
    demo = Path(__file__).resolve().parents[1] / "diffusiongs" / "assets" / "demo_model"
    depth = read_model_config(demo).denoiser.depth  # the small preset, grown (docs/DEMO_MODEL.md)
    trainer = Trainer(TrainConfig(out=tmp_path / "run", preset="small", depth=depth, init_from=demo, device="cpu",
                                  progress=False), BlobDataset(num_items=1))
    trainer._restore()
    shipped = load_weights(demo / "model.safetensors")  # int8 matrices dequantised, as every loader reads them
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, shipped[name].float()), name


def test_a_model_with_fewer_blocks_is_grown_and_the_grown_model_computes_the_same(tmp_path, tiny_model_f32):
    """The tiny model (2 blocks) grown to 4: its blocks keep their places, the added ones pass their input through
    (adaLN gates exactly 0), so the grown network's output is bit-identical; the added blocks still train (their
    adaLN layers get gradients)."""
    trainer = Trainer(tiny_config(tmp_path / "run", depth=4, init_from=tiny_model_f32, resolution=None),
                      BlobDataset(num_items=1))
    trainer._restore()
    source = load_model(tiny_model_f32)
    grown = trainer.model
    assert len(grown.net.transformer) == 4
    for name, value in source.state_dict().items():
        assert torch.equal(grown.state_dict()[name], value), name
    images, rays = torch.rand(2, 4, 3, 32, 32), torch.randn(2, 4, 6, 32, 32)
    timesteps, is_object = torch.tensor([10, 900]), torch.tensor([True, False])
    with torch.no_grad():
        a, b = source.net(images, rays, timesteps, is_object), grown.net(images, rays, timesteps, is_object)
    assert torch.equal(a.pixel_raw, b.pixel_raw)
    b = grown.net(images, rays, timesteps, is_object)
    b.pixel_raw.square().mean().backward()
    assert grown.net.transformer[3].adaLN_modulation[1].weight.grad.abs().sum() > 0


def test_init_from_a_deeper_model_names_the_depth_to_pass(tmp_path, tiny_model_f32):
    trainer = Trainer(tiny_config(tmp_path / "run", depth=1, init_from=tiny_model_f32, resolution=None),
                      BlobDataset(num_items=1))
    with pytest.raises(InputError, match="2 transformer blocks cannot start a run of 1; pass --depth 2"):
        trainer._restore()


def test_init_from_still_refuses_a_model_of_another_width(tmp_path, tiny_model_f32):
    trainer = Trainer(tiny_config(tmp_path / "run", preset="small", init_from=tiny_model_f32),
                      BlobDataset(num_items=1))
    with pytest.raises(InputError, match="weights do not match|has shape"):
        trainer._restore()


# ------------------------------------------------------------------------------------------- non-finite steps

def training_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Copies of every tensor a step may change: weights, EMA, AdamW's moments and step counts."""
    state = {f"model {k}": v.detach().clone() for k, v in trainer.model.state_dict().items()}
    state.update({f"ema {k}": v.clone() for k, v in trainer.ema.items()})
    for i, per_param in enumerate(trainer.optimizer.state.values()):
        state.update({f"optim {i} {k}": v.clone() for k, v in per_param.items()})
    return state


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, equal_nan=True, msg=name)


class Probe(Trainer):
    """A trainer that corrupts one step (a NaN input image, or a NaN weight from then on) and snapshots the state
    around every step."""

    def __init__(self, *args, nan_batch_at: int = 0, poison_at: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_batch_at, self.poison_at = nan_batch_at, poison_at
        self.before: dict[int, dict] = {}
        self.after: dict[int, dict] = {}

    def run_step(self, batch, seeds):
        if self.step == self.nan_batch_at:
            batch.images[0, 0, 0, 0, 0] = float("nan")
        if self.step == self.poison_at:
            with torch.no_grad():
                self.model.net.image_tokenizer.weight[0, 0] = float("nan")
        self.before[self.step] = training_state(self)
        out = super().run_step(batch, seeds)
        self.after[self.step] = training_state(self)
        return out


def test_a_step_with_a_nan_loss_is_skipped_and_logged(tmp_path, caplog):
    trainer = Probe(tiny_config(tmp_path / "run", steps=5, ckpt_every=5),
                    BlobDataset(num_items=5, num_views=6, resolution=16, scene_every=3), nan_batch_at=3)
    trainer.train()
    assert_same_state(trainer.before[3], trainer.after[3])  # weights, EMA, moments and step counts untouched
    assert all(torch.isfinite(v).all() for v in trainer.after[5].values())
    changed = [k for k in trainer.after[4] if not torch.equal(trainer.after[4][k], trainer.before[4][k])]
    assert any(k.startswith("model ") for k in changed) and any(k.startswith("ema ") for k in changed)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert all(a["time"] <= b["time"] for a, b in zip(records, records[1:]))  # every line, skipped ones too
    assert records[2]["skipped"] and records[2]["loss"] == "nan"
    assert not any("skipped" in r for r in records[:2] + records[3:])
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "step 3" in warnings[0] and "skipped" in warnings[0]


def test_steps_stay_skipped_while_a_weight_is_nan_and_the_run_stops(tmp_path):
    trainer = Probe(tiny_config(tmp_path / "run", steps=20, ckpt_every=6, max_skipped_steps=4),
                    BlobDataset(num_items=5, num_views=6, resolution=16, scene_every=3), poison_at=7)
    with pytest.raises(TrainingDiverged, match="steps 7-10 .*4 in a row.*the last good checkpoint is .*step_00000006"):
        trainer.train()
    for step in (7, 8, 9, 10):
        assert_same_state(trainer.before[step], trainer.after[step])


def test_a_non_finite_state_is_never_written_as_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    trainer = Probe(tiny_config(run_dir, steps=20, ckpt_every=2, keep_last=1), BlobDataset(num_items=5,
                    num_views=6, resolution=16, scene_every=3), poison_at=3)
    with pytest.raises(TrainingDiverged, match="step 4: net.image_tokenizer.weight holds non-finite values; "
                                               "refused to write a checkpoint.*step_00000002"):
        trainer.train()
    assert [p.name for p in (run_dir / "checkpoints").glob("step_*")] == ["step_00000002"]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step_00000002"
    for name in ("model.safetensors", "ema.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(run_dir / "checkpoints/step_00000002" / name))
                   .values())
    # Resuming from the good checkpoint works; a checkpoint holding a NaN is refused in one line.
    poisoned = load_file(str(run_dir / "checkpoints/step_00000002/model.safetensors"))
    poisoned["net.image_tokenizer.weight"][0, 0] = float("nan")
    save_file(poisoned, str(run_dir / "checkpoints/step_00000002/model.safetensors"))
    with pytest.raises(InputError, match="step_00000002: net.image_tokenizer.weight holds non-finite values"):
        run(tiny_config(run_dir, steps=4))


def cli_train_args(out: Path, *extra: str) -> list[str]:
    return ["train", "--out", str(out), "--data", "unused", "--preset", "tiny", "--batch-size", "2",
            "--num-workers", "0", "--resolution", "16", "--num-novel", "2", "--no-progress", "--device", "cpu",
            "--image-every", "0", "--log-every", "1", "--step.loss.perceptual-weight", "0",
            "--step.loss.point-warmup-steps", "1", "--optim.warmup-steps", "1", *extra]


def test_cli_stops_a_diverged_run_with_one_line_naming_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    import diffusiongs.cli.train as cli_train

    monkeypatch.setattr(cli_train, "build_dataset", lambda args: BlobDataset(num_items=5, num_views=6, resolution=16))
    monkeypatch.setattr(cli_train, "Trainer", functools.partial(Probe, poison_at=3))
    code = entrypoint(cli_train_args(tmp_path / "run", "--steps", "30", "--ckpt-every", "2", "--max-skipped-steps",
                                     "2"))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("diffusiongs train: error:")]
    assert code == TrainingDiverged.exit_code == 3 and "Traceback" not in err
    assert len(errors) == 1 and str(tmp_path / "run" / "checkpoints" / "step_00000002") in errors[0]
    assert len([line for line in err.splitlines() if "step skipped" in line]) == 2


@pytest.mark.parametrize("option", [("--optim.lr", "nan"), ("--optim.lr", "-0.5"), ("--optim.ema-decay", "1.0"),
                                    ("--optim.warmup-steps", "-1"), ("--steps", "0"), ("--batch-size", "0"),
                                    ("--optim.grad-clip", "-1.0"), ("--optim.betas", "0.9", "1.5"),
                                    ("--layout.theta1-deg", "0.0"), ("--int4-group", "3")])
def test_cli_refuses_invalid_hyperparameters_in_one_line(tmp_path, capsys, option):
    code = entrypoint(cli_train_args(tmp_path / "run", *option))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith(f"diffusiongs train: error: {option[0]} {' '.join(option[1:])}: ") and "must be" in err
    assert not (tmp_path / "run").exists()
