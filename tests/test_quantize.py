"""4-bit weights (diffusiongs.quantize): storage, the rounding training sees, and a run trained through it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tiny_training import run, tiny_config
from torch import nn

from diffusiongs.quantize import (
    INT4_LEVELS,
    Int4AwareLinear,
    fits_int4,
    int4_roundtrip,
    int4_scales,
    make_int4_aware,
)
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system import io as model_io

F16_EPS = 2.0**-10


def test_int4_roundtrip_keeps_15_levels_per_group_within_half_a_step():
    weight = torch.randn(6, 96, generator=torch.Generator().manual_seed(0))
    weight[0, :32] = 0  # an all-zero group stays zero
    rounded = int4_roundtrip(weight, group=32)
    scales = int4_scales(weight, 32).repeat_interleave(32, dim=1)
    levels = rounded / scales
    assert torch.equal(levels, levels.round()) and (levels.abs() <= INT4_LEVELS).all()
    assert len(torch.unique(levels)) == 2 * INT4_LEVELS + 1
    assert torch.equal(rounded[0, :32], torch.zeros(32))
    assert torch.equal(int4_roundtrip(rounded, group=32), rounded)  # a run resumed from a 4-bit export
    largest = weight.abs().reshape(6, 3, 32).amax(2).repeat_interleave(32, dim=1)
    # half a step of the exact scale, plus the float16 rounding of the scale (relative 2^-11) over up to 7 steps
    assert ((rounded - weight).abs() <= largest / INT4_LEVELS * (0.5 + INT4_LEVELS * F16_EPS / 2) + 1e-7).all()


def test_int4_export_is_an_eighth_of_float32_and_loads_as_the_rounding_training_saw(tmp_path):
    cfg = preset("tiny")
    model = DiffusionGS(cfg)
    model_io.export_model(tmp_path / "m4", cfg, model, int4_group=32)
    model_io.export_model(tmp_path / "m32", cfg, model, torch.float32)
    size4 = (tmp_path / "m4" / "model.safetensors").stat().st_size
    assert size4 < 0.2 * (tmp_path / "m32" / "model.safetensors").stat().st_size
    back = model_io.load_model(tmp_path / "m4").state_dict()
    packed = 0
    for name, value in model.state_dict().items():
        if fits_int4(value, 32):
            assert torch.equal(back[name], int4_roundtrip(value, 32)), name  # bit for bit
            packed += 1
        elif value.dim() >= 2:  # int8 per row: half a step
            step = value.flatten(1).abs().amax(1, keepdim=True) / 127
            assert ((back[name] - value).flatten(1).abs() <= step / 2 + value.flatten(1).abs() * 2**-22 + 1e-12).all()
    assert packed > 0


def test_int4_aware_linear_computes_with_the_rounded_weight_and_passes_the_gradient_straight_through():
    torch.manual_seed(0)
    plain = nn.Linear(64, 8)
    aware = nn.Linear(64, 8)
    aware.load_state_dict(plain.state_dict())
    assert make_int4_aware(nn.Sequential(aware, nn.Linear(5, 3)), group=32) == 1  # 5 inputs do not fit
    assert isinstance(aware, Int4AwareLinear) and aware.weight is aware._parameters["weight"]
    x = torch.randn(4, 64, requires_grad=True)
    out = aware(x)
    assert torch.equal(out, F.linear(x, int4_roundtrip(plain.weight, 32), plain.bias))
    out.square().sum().backward()
    rounded = int4_roundtrip(plain.weight, 32).detach().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    F.linear(x2, rounded, plain.bias).square().sum().backward()
    torch.testing.assert_close(aware.weight.grad, rounded.grad)  # d/dW of the rounded layer, on the raw weight
    torch.testing.assert_close(x.grad, x2.grad)


def test_a_run_trained_through_int4_keeps_its_parameter_names_and_exports_what_it_computed(tmp_path, capsys):
    from diffusiongs.cli.main import entrypoint

    trainer = run(tiny_config(tmp_path / "run", steps=2, int4_group=16))
    layers = [m for m in trainer.model.modules() if isinstance(m, Int4AwareLinear)]
    assert layers and set(trainer.model.state_dict()) == set(DiffusionGS(trainer.model_cfg).state_dict())
    # the run's own group, read from its checkpoint, without being told again
    assert entrypoint(["export-model", str(tmp_path / "run"), "--out", str(tmp_path / "m4"), "--dtype", "int4",
                       "--weights", "raw"]) == 0
    exported = model_io.load_model(tmp_path / "m4").state_dict()
    for name, value in trainer.model.state_dict().items():
        if fits_int4(value, 16):
            assert torch.equal(exported[name], int4_roundtrip(value, 16)), name
    capsys.readouterr()
    assert entrypoint(["export-model", str(tmp_path / "run"), "--out", str(tmp_path / "m16")]) == 0
    assert "trained through 4-bit weights in groups of 16; --dtype int4 --int4-group 16" in capsys.readouterr().out


def test_export_model_cli_writes_int4_and_refuses_a_bad_group_in_one_line(tmp_path, tiny_model_f32, capsys):
    from diffusiongs.cli.main import entrypoint

    assert entrypoint(["export-model", str(tiny_model_f32), "--out", str(tmp_path / "m4"), "--dtype", "int4"]) == 0
    assert any(k.endswith(".int4_scale") for k in load_file(str(tmp_path / "m4" / "model.safetensors")))
    capsys.readouterr()
    code = entrypoint(["export-model", str(tiny_model_f32), "--out", str(tmp_path / "bad"), "--dtype", "int4",
                       "--int4-group", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--int4-group 3: must be an even number" in err
    assert not (tmp_path / "bad").exists()
    code = entrypoint(["export-model", str(tiny_model_f32), "--out", str(tmp_path / "bad"), "--dtype", "int8",
                       "--int4-group", "32"])  # a group that would be silently ignored
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "applies to --dtype int4 only" in err
    assert not (tmp_path / "bad").exists()
