"""FP8 matrix products (diffusiongs.model.float8): which layers, their arithmetic, and that a model trained or
sampled with them is the same model.

The bounds are worst cases derived from the float8 formats, not fitted: an operand scaled by s and rounded to a
format with m mantissa bits is off by at most 2^-(m+1) of its value, or, below the smallest normal number, by half
the subnormal spacing divided by s.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from blob_dataset import BlobDataset
from safetensors.torch import load_file
from test_training import tiny_config

from diffusiongs.diffusion import SamplerConfig
from diffusiongs.inference.pipeline import GenerateConfig, Pipeline
from diffusiongs.model.denoiser import Denoiser, DenoiserConfig
from diffusiongs.model.float8 import Float8InferenceLinear, float8_layer_names, quantize_float8, train_in_float8
from diffusiongs.system import DiffusionGS
from diffusiongs.system.io import load_model
from diffusiongs.training.trainer import Trainer

E4M3 = {"unit": 2.0**-4, "max": 448.0, "half_subnormal_spacing": 2.0**-10}
E5M2 = {"unit": 2.0**-3, "max": 57344.0, "half_subnormal_spacing": 2.0**-17}
ACCUMULATION_UNIT = {"cpu": 2.0**-24, "cuda": 2.0**-14}
"""Relative error of one addition in the product's accumulator: float32 on the CPU; on Hopper the FP8 tensor
cores keep about 14 bits while accumulating (DeepSeek-V3 report, §3.3.2), which we take as the worst case."""

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
TRUNK = sorted(f"transformer.{i}.{layer}" for i in range(2)
               for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))


def worst_rounding(amax: float, fmt: dict) -> tuple[float, float]:
    """(relative, absolute) worst rounding error of an operand whose largest magnitude is ``amax``, scaled so that
    amax (or a row's smaller maximum) maps onto the format's maximum; the absolute term allows the scale to be
    rounded down to a power of two (a factor of 2 at most), as torchao's rowwise recipe does."""
    return fmt["unit"], 2.0 * fmt["half_subnormal_spacing"] * amax / fmt["max"]


def product_error_bound(a: torch.Tensor, b: torch.Tensor, fmt_a: dict, fmt_b: dict, device: str) -> torch.Tensor:
    """Worst-case |Q(a) @ Q(b)^T - a @ b^T| for a ``[m, k]``, b ``[n, k]``, elementwise ``[m, n]`` (float64).

    Per term: |Q(a)Q(b) - ab| <= |a||b|((1+ua)(1+ub)-1) + da|b|(1+ub) + db|a|(1+ua) + da db; then k additions
    with the accumulator's unit, and a few float32 roundings for the scales and the bias."""
    a, b = a.double().abs(), b.double().abs()
    ua, da = worst_rounding(a.max().item(), fmt_a)
    ub, db = worst_rounding(b.max().item(), fmt_b)
    k = a.shape[1]
    quantized = a @ b.T * ((1 + ua) * (1 + ub) - 1) + da * (1 + ub) * b.sum(1)[None] + \
        db * (1 + ua) * a.sum(1)[:, None] + k * da * db
    magnitude = (a * (1 + ua) + da) @ (b * (1 + ub) + db).T
    return quantized + (k * ACCUMULATION_UNIT[device] + 8 * 2.0**-24) * magnitude


def assert_within(name: str, got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor) -> None:
    excess = ((got.double() - ref).abs() - bound).max().item()
    assert excess <= 0, f"{name}: {excess:.3g} over the bound"


def tiny_net(device: str) -> Denoiser:
    torch.manual_seed(0)
    return Denoiser(DenoiserConfig(width=64, depth=2, num_heads=2)).to(device)


def spread_input(device: str) -> torch.Tensor:
    """Features of different magnitudes, some small enough to fall below the smallest normal fp8 number."""
    g = torch.Generator().manual_seed(1)
    return (torch.randn(96, 64, generator=g) * torch.logspace(-4, 0.5, 64)).to(device)


def test_only_the_trunk_matrix_products_are_converted():
    assert sorted(float8_layer_names(tiny_net("cpu"))) == TRUNK
    net = quantize_float8(tiny_net("cpu"))
    assert sorted(n for n, m in net.named_modules() if isinstance(m, Float8InferenceLinear)) == TRUNK
    # adaLN (one token per sample), the tokenizer and the Gaussian heads keep full precision
    assert type(net.transformer[0].adaLN_modulation[1]) is torch.nn.Linear
    assert type(net.image_tokenizer) is torch.nn.Linear


def test_a_width_fp8_cannot_multiply_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"transformer\.0\..*multiples of 16"):
        quantize_float8(Denoiser(DenoiserConfig(width=40, depth=1, num_heads=2)))


@pytest.mark.parametrize("device", DEVICES)
def test_fp8_inference_layer_stays_within_the_e4m3_bound(device):
    """The inference layer against float64 arithmetic on the layer's original weights, in float32 and under bf16
    autocast (then also one bf16 rounding of the output, 2^-9 relative)."""
    net = tiny_net(device)
    linear = net.transformer[0].mlp.fc1
    w, bias = linear.weight.detach().double(), linear.bias.detach().double()
    layer = quantize_float8(net).transformer[0].mlp.fc1
    x = spread_input(device)
    ref = F.linear(x.double(), w, bias)
    bound = product_error_bound(x.double(), w, E4M3, E4M3, device)
    with torch.no_grad():
        y = layer(x)
        assert y.dtype == torch.float32
        assert_within("float32 output", y, ref, bound)
        with torch.autocast(device, dtype=torch.bfloat16):
            y16 = layer(x)
    assert y16.dtype == torch.bfloat16
    assert_within("bf16 output", y16, ref, bound + 2.0**-9 * (ref.abs() + bound))
    # the products really were quantised (a full-precision path would be ~1e-7 off)
    assert (y.double() - ref).abs().max() > 1e-3 * ref.abs().max()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("recipe", ["tensorwise", "rowwise"])
def test_fp8_training_layer_forward_and_backward_stay_within_the_format_bounds(recipe, device):
    """torchao's layer against float64 arithmetic on the same weights: output, input gradient and weight gradient
    each within the worst case of their operands' formats (gradients may be e5m2: 2 mantissa bits)."""
    pytest.importorskip("torchao")
    net = train_in_float8(tiny_net(device), recipe)
    assert sorted(n for n, m in net.named_modules() if type(m).__name__ == "Float8Linear") == TRUNK
    layer = net.transformer[0].mlp.fc1
    x = spread_input(device).requires_grad_()
    upstream = torch.randn(96, 256, generator=torch.Generator().manual_seed(2)).to(device)
    y = layer(x)
    y.backward(upstream)
    w, x64, up = layer.weight.detach().double(), x.detach().double(), upstream.double()
    assert_within("output", y.detach(), F.linear(x64, w, layer.bias.detach().double()),
                  product_error_bound(x64, w, E4M3, E4M3, device))
    assert_within("input gradient", x.grad, up @ w, product_error_bound(up, w.T, E5M2, E4M3, device))
    assert_within("weight gradient", layer.weight.grad, up.T @ x64,
                  product_error_bound(up.T, x64.T, E5M2, E4M3, device))


def test_a_model_trained_with_fp8_saves_full_precision_weights_a_plain_model_loads(tmp_path):
    pytest.importorskip("torchao")
    trainer = Trainer(tiny_config(tmp_path / "run", steps=2, float8="tensorwise"),
                      BlobDataset(num_items=5, num_views=6, resolution=16, scene_every=3))
    trainer.train()
    assert type(trainer.model.net.transformer[0].attn.qkv).__name__ == "Float8Linear"
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "step_00000002" / "model.safetensors"))
    plain = DiffusionGS(trainer.model_cfg)
    assert set(weights) == set(plain.state_dict())
    assert all(v.dtype == torch.float32 for v in weights.values())
    plain.load_state_dict(weights)


def test_a_pipeline_samples_in_fp8(tiny_model_f32):
    """The same model and seed in FP8 and in float32: the FP8 pipeline runs its trunk in FP8 (its renders differ)
    and gives finite renders of as many Gaussians. Its quality on a trained model is measured, not tested
    (docs/BENCHMARKS.md): the layer arithmetic is what the bound tests above pin down."""
    gen = GenerateConfig(sampler=SamplerConfig(num_steps=3))
    results = {}
    for float8 in (False, True):
        pipe = Pipeline(load_model(tiny_model_f32), float8=float8)
        condition = torch.rand(3, pipe.cfg.resolution, pipe.cfg.resolution, generator=torch.Generator().manual_seed(0))
        results[float8] = pipe.generate_from_condition(condition, pipe.rig_cameras(), gen)
    (plain, plain_x0), (fp8, fp8_x0) = results[False], results[True]
    assert fp8.num_gaussians == plain.num_gaussians
    assert torch.isfinite(fp8_x0).all()
    assert (fp8_x0 - plain_x0).abs().max() > 0
