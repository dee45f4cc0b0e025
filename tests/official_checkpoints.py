"""Checkpoints in the official Open-DiffusionGS layouts with random weights, shared by the official-checkpoint tests."""

from __future__ import annotations

import collections
import pathlib

import torch

WIDTH, DEPTH, PATCH, GLOBALS, RES = 128, 2, 8, 2, 16
"""The random denoiser's width, blocks, patch, global tokens and the resolution it is converted at."""


def official_tensors(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Denoiser tensors named as in the official DGSDenoiser. Scales are large enough that every modulation
    (shift/scale/gate) and every output channel visibly matters."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, std=0.1):
        return torch.randn(*shape, generator=g) * std

    d, hidden = WIDTH, 4 * WIDTH
    sd = {
        "t_embedder.mlp.0.weight": rand(d, 256), "t_embedder.mlp.0.bias": rand(d),
        "t_embedder.mlp.2.weight": rand(d, d), "t_embedder.mlp.2.bias": rand(d),
        "image_tokenizer.1.weight": rand(d, PATCH * PATCH * 9, std=0.05),
        "gaussians_pos_embedding": rand(GLOBALS, d, std=1.0) if kind == "object" else rand(1, GLOBALS, d, std=1.0),
        "transformer_input_layernorm.weight": 1 + rand(d),
    }
    for i in range(DEPTH):
        p = f"transformer.{i}."
        sd.update({p + "attn.qkv.weight": rand(3 * d, d), p + "attn.qkv.bias": rand(3 * d),
                   p + "attn.proj.weight": rand(d, d), p + "attn.proj.bias": rand(d),
                   p + "mlp.fc1.weight": rand(hidden, d), p + "mlp.fc1.bias": rand(hidden),
                   p + "mlp.fc2.weight": rand(d, hidden), p + "mlp.fc2.bias": rand(d),
                   p + "adaLN_modulation.1.weight": rand(6 * d, d, std=0.3),
                   p + "adaLN_modulation.1.bias": rand(6 * d, std=0.5)})
    for head, out in (("image_token_decoder.", PATCH * PATCH * 14), ("upsampler.", 14)):
        sd.update({head + "layernorm.weight": 1 + rand(d), head + "linear.weight": rand(out, d),
                   head + "adaLN_modulation.1.weight": rand(2 * d, d, std=0.3),
                   head + "adaLN_modulation.1.bias": rand(2 * d, std=0.5)})
    return sd


LOSS_TENSORS = {"loss_computer.lpips_loss_module.net.slice1.0.weight": torch.randn(4, 3, 3, 3),
                "loss_computer.lpips_loss_module.scaling_layer.shift": torch.randn(1, 3, 1, 1)}


def lightning_checkpoint(tensors: dict[str, torch.Tensor]) -> dict:
    """A Lightning-style checkpoint: weights under state_dict with the shape_model. prefix, plus trainer state."""
    state_dict = collections.OrderedDict({f"shape_model.{k}": v for k, v in tensors.items()} | LOSS_TENSORS)
    return {"epoch": 12, "global_step": 20000, "pytorch-lightning_version": "2.2.4", "state_dict": state_dict,
            "loops": {"fit_loop": {"epoch_loop.state_dict": {"_batches_that_stepped": 20000}}},
            "callbacks": {"ModelCheckpoint{'monitor': None}": {"best_model_score": torch.tensor(0.5)}},
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3), "step": torch.tensor(5.0)}},
                                  "param_groups": [{"lr": 1e-5, "betas": (0.9, 0.99), "params": [0]}]}],
            "lr_schedulers": [{"T_max": 500000, "eta_min": 1e-6, "base_lrs": [1e-5]}]}


def internal_checkpoint(tensors: dict[str, torch.Tensor]) -> dict:
    """The internal format: {'model': {'denoiser.<key>': ...}} with the loss networks under denoiser.loss_computer."""
    model = {f"denoiser.{k}": v for k, v in tensors.items()}
    model.update({f"denoiser.{k}": v for k, v in LOSS_TENSORS.items()})
    return {"model": model}


def save(obj, path: pathlib.Path) -> pathlib.Path:
    torch.save(obj, path)
    return path
