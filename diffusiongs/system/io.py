"""Model folders: ``config.json`` (the ModelConfig) + ``model.safetensors`` (+ ``ema.safetensors``).

Exported models, training checkpoints and converted official checkpoints all share this layout. Weights are read
with safetensors only: loading a model never unpickles anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from diffusiongs.configio import config_from_dict, config_to_dict, read_json, write_json_atomic
from diffusiongs.errors import InputError
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


def save_weights(module_or_state: nn.Module | dict[str, torch.Tensor], path: Path,
                 dtype: torch.dtype | None = None) -> None:
    state = (_state_dict_for_saving(module_or_state, dtype) if isinstance(module_or_state, nn.Module)
             else {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous().cpu()
                   for k, v in module_or_state.items()})
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(state, str(tmp))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # safetensors creates the file owner-only; give it the usual permissions
    os.replace(tmp, path)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt one is an ``InputError`` naming it."""
    if not path.is_file():
        raise InputError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated/corrupt headers
        raise InputError(f"{path}: not a readable safetensors file ({err})") from None


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
    return ema if prefer_ema and ema.is_file() else folder / MODEL_WEIGHTS


def load_model(folder: Path, prefer_ema: bool = True) -> DiffusionGS:
    """Build the model a folder's config describes and load its weights strictly (float32)."""
    cfg = read_model_config(folder)
    model = DiffusionGS(cfg)
    weights = weights_file(folder, prefer_ema)
    load_model_state(model, {k: v.float() for k, v in load_weights(weights).items()}, weights)
    return model


def export_model(folder: Path, cfg: ModelConfig, state: dict[str, torch.Tensor] | nn.Module,
                 dtype: torch.dtype | None = None) -> Path:
    """Write an inference folder (config + one set of weights, optionally cast, e.g. to float16)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(state, folder / MODEL_WEIGHTS, dtype)
    write_json_atomic(folder / CONFIG, config_to_dict(cfg))
    return folder
