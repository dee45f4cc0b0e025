"""Training checkpoints: one model folder (``diffusiongs.system.io``) per save plus the optimizer and trainer
state, written atomically; nothing in them needs unpickling code.

    RUN/checkpoints/step_00001000/
        config.json          model config
        model.safetensors    raw weights (float32)
        ema.safetensors      EMA weights, if EMA is on (inference prefers them)
        optimizer.pt         optimizer state; read back with torch.load(weights_only=True)
        trainer_state.json   step and train config
    RUN/checkpoints/latest   the name of the newest complete folder (rewritten last)

A folder is first written as ``.step_…tmp`` and renamed when complete, so a crash never leaves a half checkpoint
that looks finished; ``latest`` is updated only after the rename.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffusiongs.configio import config_to_dict, write_json_atomic
from diffusiongs.errors import InputError
from diffusiongs.system.io import CONFIG, EMA_WEIGHTS, MODEL_WEIGHTS, save_weights
from diffusiongs.system.model import ModelConfig

LATEST = "latest"
OPTIMIZER = "optimizer.pt"
TRAINER_STATE = "trainer_state.json"


def save_checkpoint(run_dir: Path, step: int, model: nn.Module, model_cfg: ModelConfig,
                    optimizer: torch.optim.Optimizer, ema_state: dict[str, torch.Tensor] | None,
                    trainer_state: dict[str, Any], keep_last: int = 3) -> Path:
    """Write ``step_XXXXXXXX`` atomically, point ``latest`` at it and prune older folders beyond ``keep_last``."""
    ckpt_root = run_dir / "checkpoints"
    ckpt_root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = ckpt_root / f".{name}.tmp{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    write_json_atomic(tmp / CONFIG, config_to_dict(model_cfg))
    save_weights(model, tmp / MODEL_WEIGHTS)
    if ema_state is not None:
        save_weights(ema_state, tmp / EMA_WEIGHTS)
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER)
    write_json_atomic(tmp / TRAINER_STATE, {"step": step, **trainer_state})
    final = ckpt_root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = ckpt_root / f".{LATEST}.tmp{os.getpid()}"
    latest_tmp.write_text(name + "\n")
    os.replace(latest_tmp, ckpt_root / LATEST)
    _prune(ckpt_root, keep_last)
    return final


def _prune(ckpt_root: Path, keep_last: int) -> None:
    folders = sorted(p for p in ckpt_root.glob("step_*") if p.is_dir())
    for old in folders[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    pointer = run_dir / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load_optimizer_state(folder: Path) -> dict[str, Any]:
    path = folder / OPTIMIZER
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: optimizer state not found") from None
