"""Model folders: ``config.json`` (the ModelConfig) + ``model.safetensors`` (+ ``ema.safetensors``).

Exported models, training checkpoints and converted official checkpoints all share this layout. Weights are read
with safetensors only: loading a model never unpickles anything. A weights file may be split into shards
(``model-00001-of-00003.safetensors``, ...) listed by ``model.safetensors.index.json`` (``{"weight_map": {name:
shard}}``, the Hugging Face layout), for transports that limit file sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffusiongs.configio import config_from_dict, config_to_dict, read_json, write_json_atomic
from diffusiongs.errors import InputError
from diffusiongs.quantize import dequantize, quantize_int4, quantize_int8
from diffusiongs.system.model import DiffusionGS, ModelConfig

CONFIG = "config.json"
MODEL_WEIGHTS = "model.safetensors"
EMA_WEIGHTS = "ema.safetensors"


def _state_dict_for_saving(module: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    state = {}
    for k, v in module.state_dict().items():
        v = v.detach()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v.contiguous().cpu()
    return state


def _index_file(path: Path) -> Path:
    return path.with_name(path.name + ".index.json")


def _write_safetensors(state: dict[str, torch.Tensor], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(state, str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; give it the usual permissions
    os.replace(tmp, path)


def _shards(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, value in state.items():
        nbytes = value.numel() * value.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][key] = value
        size += nbytes
    return shards


def save_weights(module_or_state: nn.Module | dict[str, torch.Tensor], path: Path,
                 dtype: torch.dtype | None = None, max_shard_mb: float | None = None,
                 int4_group: int | None = None) -> None:
    """Write weights as one safetensors file, or as shards of at most ``max_shard_mb`` plus an index. ``torch.int8``
    quantises every matrix per output row (:mod:`diffusiongs.quantize`; for transport, e.g. as the start of a run
    on a GPU machine) and stores the rest as float16; ``int4_group`` stores the matrices in 4 bits with one scale
    per that many inputs instead (``dtype`` is then ignored)."""
    if dtype == torch.int8 or int4_group is not None:
        state = module_or_state.state_dict() if isinstance(module_or_state, nn.Module) else module_or_state
        state = {k: v.detach().cpu() for k, v in state.items()}
        module_or_state = (quantize_int4(state, int4_group) if int4_group is not None
                           else quantize_int8(state, lambda *_: True))
        dtype = None
    state = (_state_dict_for_saving(module_or_state, dtype) if isinstance(module_or_state, nn.Module)
             else {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().cpu()
                   for k, v in module_or_state.items()})
    shards = [state] if max_shard_mb is None else _shards(state, int(max_shard_mb * 2**20))
    if len(shards) == 1:
        _write_safetensors(state, path)
        _index_file(path).unlink(missing_ok=True)
        return
    weight_map = {}
    for number, shard in enumerate(shards, start=1):
        name = f"{path.stem}-{number:05d}-of-{len(shards):05d}{path.suffix}"
        _write_safetensors(shard, path.with_name(name))
        weight_map.update(dict.fromkeys(shard, name))
    write_json_atomic(_index_file(path), {"weight_map": weight_map})
    path.unlink(missing_ok=True)


def weights_exist(path: Path) -> bool:
    return path.is_file() or _index_file(path).is_file()


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise InputError(f"{path}: weights file not found") from None
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt headers
        raise InputError(f"{path}: not a readable safetensors file ({err})") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file (or its shards), int8 and 4-bit tensors dequantised (:mod:`diffusiongs.quantize`); a
    missing or corrupt one is an ``InputError`` naming it."""
    if path.is_file():
        return dequantize(_read_safetensors(path))
    index = _index_file(path)
    if not index.is_file():
        raise InputError(f"{path}: weights file not found")
    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict):
        raise InputError(f"{index}: no 'weight_map' in the shard index")
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        state.update(_read_safetensors(path.with_name(shard)))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise InputError(f"{index}: tensors listed but not found in the shards: {missing[:3]}")
    return dequantize(state)


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """Strict load: every key must exist and match in shape, or the file is refused with the first mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise InputError(f"{source}: weights do not match the model config "
                         f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                         f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise InputError(f"{source}: '{k}' has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state, strict=True)


def read_model_config(folder: Path) -> ModelConfig:
    return config_from_dict(ModelConfig, read_json(folder / CONFIG), where=str(folder / CONFIG))


def weights_file(folder: Path, prefer_ema: bool = True) -> Path:
    """The EMA weights of a model folder when present (and preferred), else its raw weights."""
    ema = folder / EMA_WEIGHTS
    return ema if prefer_ema and weights_exist(ema) else folder / MODEL_WEIGHTS


def load_model(folder: Path, prefer_ema: bool = True) -> DiffusionGS:
    """Build the model a folder's config describes and load its weights strictly (float32)."""
    cfg = read_model_config(folder)
    model = DiffusionGS(cfg)
    weights = weights_file(folder, prefer_ema)
    load_model_state(model, {k: v.float() for k, v in load_weights(weights).items()}, weights)
    return model


def export_model(folder: Path, cfg: ModelConfig, state: dict[str, torch.Tensor] | nn.Module,
                 dtype: torch.dtype | None = None, max_shard_mb: float | None = None,
                 int4_group: int | None = None) -> Path:
    """Write an inference folder (config + one set of weights, optionally cast, e.g. to float16, or quantised, and
    sharded)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(state, folder / MODEL_WEIGHTS, dtype, max_shard_mb, int4_group)
    write_json_atomic(folder / CONFIG, config_to_dict(cfg))
    return folder
