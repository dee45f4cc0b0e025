"""Int8 storage of weights, for moving them where bytes are scarce (a GPU call carries at most 64 MiB).

Symmetric per-output-channel quantisation: a selected tensor ``w`` (output channels first) is stored as
``round(w / s)`` in int8 with ``s = max|w_row| / 127`` per output row, and ``s`` as ``name + INT8_SCALE_SUFFIX``;
each weight is then off by at most half a step, 1/254 of its row's largest magnitude. Unselected floating-point
tensors are stored as float16. Readers call :func:`dequantize_int8`, which returns float32 tensors and leaves a
state without int8 tensors unchanged, so one loader reads either form.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

INT8_SCALE_SUFFIX = ".int8_scale"
"""Key suffix of the per-output-channel scales of an int8 tensor (``name`` -> ``name + suffix``)."""


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


def dequantize_int8(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Undo :func:`quantize_int8` (int8 tensors back to float32)."""
    scales = {k[:-len(INT8_SCALE_SUFFIX)]: v for k, v in state.items() if k.endswith(INT8_SCALE_SUFFIX)}
    out = {}
    for name, tensor in state.items():
        if name.endswith(INT8_SCALE_SUFFIX):
            continue
        if name in scales:
            tensor = (tensor.float().flatten(1) * scales[name].float().reshape(-1, 1)).reshape(tensor.shape)
        out[name] = tensor
    return out
