"""Int8 and 4-bit storage of weights, for moving and shipping them where bytes are scarce (a GPU call carries at
most 64 MiB; the repository's demo model must fit 40 MB).

Int8: symmetric per-output-channel quantisation. A selected tensor ``w`` (output channels first) is stored as
``round(w / s)`` in int8 with ``s = max|w_row| / 127`` per output row, and ``s`` as ``name + INT8_SCALE_SUFFIX``;
each weight is then off by at most half a step, 1/254 of its row's largest magnitude. Unselected floating-point
tensors are stored as float16.

4-bit: symmetric per-group quantisation. Each output row of a matrix is cut into groups of ``group`` consecutive
inputs, and each group is stored as levels ``round(w / s)`` in [-7, 7] with one float16 scale ``s = max|w_group| / 7``
(``name + INT4_SCALE_SUFFIX``, ``[rows, inputs / group]``); two levels share a byte. Rounding a trained network so
costs it about a dB (docs/DEMO_MODEL.md), so a network meant for 4 bits is trained through the rounding
(:func:`make_int4_aware`), and :func:`int4_roundtrip` is the one definition of the rounding that training and
storage share.

Readers call :func:`dequantize`, which returns float32 tensors and leaves a state without quantised tensors
unchanged, so one loader reads every form.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

INT8_SCALE_SUFFIX = ".int8_scale"
"""Key suffix of the per-output-channel scales of an int8 tensor (``name`` -> ``name + suffix``)."""
INT4_SCALE_SUFFIX = ".int4_scale"
"""Key suffix of the per-group scales of a 4-bit matrix (``name`` -> ``name + suffix``)."""
INT4_LEVELS = 7
"""Largest magnitude of a 4-bit level (-8 is left unused, so that the grid is symmetric about 0)."""


def quantize_int8(state: dict[str, torch.Tensor], select: Callable[[str, torch.Tensor], bool]
                  ) -> dict[str, torch.Tensor]:
    """Int8 for the tensors ``select(name, tensor)`` picks (floating point, at least 2-D), float16 for the other
    floating-point tensors, anything else as it is."""
    out = {}
    for name, tensor in state.items():
        if tensor.is_floating_point() and tensor.dim() >= 2 and select(name, tensor):
            rows = tensor.float().flatten(1)
            scale = rows.abs().amax(dim=1).clamp_min(1e-12) / 127
            out[name] = torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8).reshape(tensor.shape)
            out[name + INT8_SCALE_SUFFIX] = scale
        elif tensor.is_floating_point():
            out[name] = tensor.to(torch.float16)
        else:
            out[name] = tensor
    return out


INT4_GROUP_RULE = "must be an even number > 0 (two levels a byte)"
"""What :func:`valid_int4_group` asks of a group, as the one-line errors say it."""


def valid_int4_group(group: int) -> bool:
    """Whether ``group`` inputs per scale can be stored: the levels pack two to a byte."""
    return group > 0 and group % 2 == 0


def fits_int4(tensor: Tensor, group: int) -> bool:
    """Whether ``tensor`` is a floating-point matrix whose rows divide into groups of ``group`` inputs, ``group``
    being :func:`valid_int4_group`."""
    return (tensor.is_floating_point() and tensor.dim() == 2 and valid_int4_group(group)
            and tensor.shape[1] % group == 0)


def int4_scales(weight: Float[Tensor, "rows inputs"], group: int) -> Float[Tensor, "rows groups"]:
    """One scale per group, rounded to float16 (as stored) so that training and storage use the same grid."""
    groups = weight.detach().float().reshape(weight.shape[0], -1, group)
    scale = groups.abs().amax(dim=2) / INT4_LEVELS
    return scale.clamp_min(1e-12).to(torch.float16).float().clamp_min(2**-24)  # float16's smallest step


def int4_levels(weight: Float[Tensor, "rows inputs"], scales: Float[Tensor, "rows groups"]) -> Tensor:
    """The integer levels in [-7, 7] of ``weight`` on the grid of ``scales`` (float tensor of whole numbers)."""
    group = weight.shape[1] // scales.shape[1]
    return torch.round(weight.float() / scales.repeat_interleave(group, dim=1)).clamp(-INT4_LEVELS, INT4_LEVELS)


def int4_roundtrip(weight: Float[Tensor, "rows inputs"], group: int) -> Float[Tensor, "rows inputs"]:
    """``weight`` as its 4-bit storage will hand it back (same dtype)."""
    scales = int4_scales(weight, group)
    levels = int4_levels(weight, scales)
    return (levels * scales.repeat_interleave(group, dim=1)).to(weight.dtype)


def quantize_int4(state: dict[str, Tensor], group: int) -> dict[str, Tensor]:
    """4 bits for every matrix that :func:`fits_int4`, int8 per row for the other matrices, float16 for the rest."""
    packed, rest = {}, {}
    for name, tensor in state.items():
        if not fits_int4(tensor, group):
            rest[name] = tensor
            continue
        scales = int4_scales(tensor, group)
        nibbles = (int4_levels(tensor, scales) + 8).to(torch.uint8)  # 1..15
        packed[name] = nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)
        packed[name + INT4_SCALE_SUFFIX] = scales.to(torch.float16)
    return {**packed, **quantize_int8(rest, lambda *_: True)}


def _unpack_int4(packed: Tensor, scales: Tensor) -> Float[Tensor, "rows inputs"]:
    levels = torch.stack([packed & 15, packed >> 4], dim=2).reshape(packed.shape[0], -1).float() - 8
    group = levels.shape[1] // scales.shape[1]
    return levels * scales.float().repeat_interleave(group, dim=1)


def dequantize(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Undo :func:`quantize_int8` and :func:`quantize_int4` (quantised tensors back to float32)."""
    scales = {k[:-len(suffix)]: (suffix, v) for k, v in state.items()
              for suffix in (INT8_SCALE_SUFFIX, INT4_SCALE_SUFFIX) if k.endswith(suffix)}
    out = {}
    for name, tensor in state.items():
        if name.endswith((INT8_SCALE_SUFFIX, INT4_SCALE_SUFFIX)):
            continue
        if name in scales:
            suffix, scale = scales[name]
            if suffix == INT4_SCALE_SUFFIX:
                tensor = _unpack_int4(tensor, scale)
            else:
                tensor = (tensor.float().flatten(1) * scale.float().reshape(-1, 1)).reshape(tensor.shape)
        out[name] = tensor
    return out


class Int4AwareLinear(nn.Linear):
    """A linear layer that computes with its weight as 4-bit storage will hand it back, and passes the gradient
    straight through the rounding to the full-precision weight it keeps (quantisation-aware training)."""

    group: int

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight
        return F.linear(x, weight + (int4_roundtrip(weight, self.group) - weight).detach(), self.bias)


def make_int4_aware(module: nn.Module, group: int) -> int:
    """Turn every ``nn.Linear`` in ``module`` whose weight :func:`fits_int4` into an :class:`Int4AwareLinear`, in
    place; returns how many. The layers change class rather than being replaced, so their parameters (and with
    them the optimizer's, the EMA's and the checkpoints' names) stay what they were."""
    count = 0
    for layer in module.modules():
        if type(layer) is nn.Linear and fits_int4(layer.weight, group):
            layer.__class__ = Int4AwareLinear
            layer.group = group
            count += 1
    return count
