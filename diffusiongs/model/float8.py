"""FP8 matrix products in the transformer trunk.

The trunk's four matrix products per block (attention qkv and output projection, the two MLP layers) hold all
but ~1 % of the network's weight FLOPs; on GPUs with FP8 tensor cores (Ada, Hopper) they can run at up to twice the
bf16 rate. Both operands are scaled so that their largest magnitude maps onto float8 e4m3's 448, rounded to e4m3,
multiplied with float32 accumulation and scaled back.

- Inference (:func:`quantize_float8`, ours): the weights are quantised once, per output row; each token's
  activations are quantised per row on the fly (one fused pass under torch.compile), and ``torch._scaled_mm``
  multiplies with both row scales.
- Training (:func:`train_in_float8`, torchao's float8 layers): both operands are re-quantised at every step from the
  full-precision master weights (gradients in e5m2 or e4m3, by recipe), so the optimizer, the EMA and the
  checkpoints see ordinary weights and parameter names.

Everything else keeps the network's dtype: the adaLN linears (one token per sample), the tokenizer, the Gaussian
heads, attention, LayerNorm. Both paths also run on the CPU (``torch._scaled_mm`` has a CPU kernel), which is how
the tests check their arithmetic; they pay off only on FP8 tensor cores.
"""

from __future__ import annotations

import re
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from diffusiongs.model.denoiser import Denoiser

Float8Recipe = Literal["tensorwise", "rowwise"]
"""torchao's float8 training recipes: dynamic scaling per tensor, or per row of each operand."""

TRUNK_MATMUL = re.compile(r"^transformer\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))$")
"""Qualified names of the trunk's matrix products inside a :class:`Denoiser`."""

MATMUL_ALIGNMENT = 16
"""FP8 matrix products need both feature counts divisible by this."""

E4M3_MAX = float(torch.finfo(torch.float8_e4m3fn).max)
"""448: the largest float8 e4m3 value (the format has no infinity: larger values would become NaN)."""

_MIN_AMAX = 1e-12
"""Floor on a row's largest magnitude, so that an all-zero row gets a finite scale."""


def float8_layer_names(net: Denoiser) -> list[str]:
    """The linear layers the FP8 paths convert: the trunk's matrix products (checked for FP8's alignment).

    Raises:
        ValueError: a layer's feature counts are not multiples of 16.
    """
    names = [name for name, module in net.named_modules() if isinstance(module, nn.Linear) and TRUNK_MATMUL.match(name)]
    for name in names:
        layer = net.get_submodule(name)
        if layer.in_features % MATMUL_ALIGNMENT or layer.out_features % MATMUL_ALIGNMENT:
            raise ValueError(f"float8: layer {name} is {layer.in_features} -> {layer.out_features}; FP8 matrix "
                             f"products need multiples of {MATMUL_ALIGNMENT} (choose another width)")
    return names


def rowwise_e4m3(x: Float[Tensor, "rows k"]) -> tuple[Tensor, Float[Tensor, "rows 1"]]:
    """``x`` in float8 e4m3 scaled per row so that each row's largest magnitude becomes 448, and the float32
    scales that undo it (x ~= q * scale)."""
    scale = x.abs().amax(-1, keepdim=True).float().clamp(min=_MIN_AMAX) / E4M3_MAX
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn), scale


class Float8InferenceLinear(nn.Module):
    """A frozen linear layer with e4m3 weights (one scale per output row) and per-token e4m3 activations."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight, scale = rowwise_e4m3(linear.weight.detach())
        self.register_buffer("weight_e4m3", weight)
        self.register_buffer("weight_scale", scale.T.contiguous())  # [1, out]: torch._scaled_mm's layout
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: Float[Tensor, "... k"]) -> Float[Tensor, "... n"]:
        device = x.device.type
        # The output dtype follows autocast as nn.Linear's would (Hopper's row-scaled FP8 kernels write bf16).
        out_dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        rows, scale = rowwise_e4m3(x.reshape(-1, self.in_features))
        y = torch._scaled_mm(rows, self.weight_e4m3.T, scale_a=scale, scale_b=self.weight_scale, out_dtype=out_dtype)
        if self.bias is not None:
            y = y + self.bias.to(out_dtype)
        return y.reshape(*x.shape[:-1], self.out_features)


def quantize_float8(net: Denoiser) -> Denoiser:
    """Replace the trunk's linear layers by :class:`Float8InferenceLinear`, in place (inference only: the new layers
    have no parameters; call before torch.compile)."""
    for name in float8_layer_names(net):
        parent, _, child = name.rpartition(".")
        module = net.get_submodule(parent)
        setattr(module, child, Float8InferenceLinear(getattr(module, child)))
    return net


def train_in_float8(net: Denoiser, recipe: Float8Recipe = "tensorwise") -> Denoiser:
    """Swap the trunk's linear layers for torchao's float8 training layers, in place (call before torch.compile).

    Raises:
        ImportError: torchao is not installed (the ``fp8`` extra).
        ValueError: a layer's feature counts are not multiples of 16.
    """
    try:
        from torchao.float8 import Float8LinearConfig, convert_to_float8_training
    except ImportError as exc:
        raise ImportError("float8 training needs torchao: pip install 'diffusiongs[fp8]'") from exc
    names = set(float8_layer_names(net))
    convert_to_float8_training(net, module_filter_fn=lambda _module, name: name in names,
                               config=Float8LinearConfig.from_recipe_name(recipe))
    return net
