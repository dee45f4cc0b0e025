"""Guards of a training run: hyper-parameters checked before any work, steps with a non-finite loss or gradient
skipped (and a run of them stopped), and non-finite states kept out of checkpoints.

A NaN that reaches the weights spreads to every tensor within a few steps (AdamW's moments, then the EMA), so the
trainer checks each step's loss and gradient norm before the update, and every state before it is written.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor

from diffusiongs.errors import InputError
from diffusiongs.quantize import INT4_GROUP_RULE, valid_int4_group
from diffusiongs.training.distributed import DistInfo

if TYPE_CHECKING:
    from diffusiongs.training.trainer import TrainConfig


# ------------------------------------------------------------------------------------------- hyper-parameters

def _flag(path: str) -> str:
    """The command-line option of a TrainConfig field path (``optim.warmup_steps`` -> ``--optim.warmup-steps``)."""
    return "--" + path.replace("_", "-")


def _leaf_fields(cfg: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, value) of every field of a nested config dataclass."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if is_dataclass(value):
            yield from _leaf_fields(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", value


# Allowed range of each numeric option, as (test, description). Options not listed take any value their type allows.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "steps": (lambda v: v > 0, "must be > 0"),
    "batch_size": (lambda v: v > 0, "must be > 0"),
    "num_noisy": (lambda v: v > 0, "must be > 0"),
    "resolution": (lambda v: v is None or v > 0, "must be > 0"),
    "num_workers": (lambda v: v >= 0, "must be >= 0"),
    "log_every": (lambda v: v > 0, "must be > 0"),
    "image_every": (lambda v: v >= 0, "must be >= 0 (0 disables)"),
    "ckpt_every": (lambda v: v > 0, "must be > 0"),
    "keep_last": (lambda v: v >= 0, "must be >= 0 (0 keeps every checkpoint)"),
    "max_minutes": (lambda v: v is None or (math.isfinite(v) and v > 0), "must be a number > 0"),
    "max_skipped_steps": (lambda v: v > 0, "must be > 0"),
    "int4_group": (lambda v: v is None or valid_int4_group(v), INT4_GROUP_RULE),
    "optim.lr": (lambda v: math.isfinite(v) and v > 0, "must be a number > 0"),
    "optim.warmup_steps": (lambda v: v >= 0, "must be >= 0"),
    "optim.min_lr_ratio": (lambda v: 0 <= v <= 1, "must be in [0, 1]"),
    "optim.betas": (lambda v: all(0 <= b < 1 for b in v), "each must be in [0, 1)"),
    "optim.weight_decay": (lambda v: math.isfinite(v) and v >= 0, "must be a number >= 0"),
    "optim.grad_clip": (lambda v: math.isfinite(v) and v >= 0, "must be a number >= 0 (0 disables clipping)"),
    "optim.ema_decay": (lambda v: v is None or 0 <= v < 1, "must be in [0, 1)"),
    "step.loss.perceptual_weight": (lambda v: math.isfinite(v) and v >= 0, "must be a number >= 0"),
    "step.loss.point_warmup_steps": (lambda v: v >= 0, "must be >= 0"),
    "step.loss.point_std": (lambda v: math.isfinite(v) and v > 0, "must be a number > 0"),
    "step.loss.perceptual_resolution": (lambda v: v is None or v > 0, "must be > 0"),
    **{f"layout.{angle}_deg": (lambda v: 0 < v <= 180, "must be an angle in (0, 180] degrees")
       for angle in ("theta1", "theta2", "phi1", "phi2")},
}


def validate_train_config(cfg: TrainConfig) -> None:
    """Refuse hyper-parameters no run can use (NaN or negative learning rate, EMA decay outside [0, 1), ...).

    Raises:
        InputError: naming the first offending option, e.g. ``--optim.lr nan: must be a number > 0``.
    """
    values = dict(_leaf_fields(cfg))
    for path, (valid, rule) in _RULES.items():
        value = values[path]
        # Comparisons with NaN are all False, so every rule refuses NaN.
        if not valid(value):
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else value
            raise InputError(f"{_flag(path)} {shown}: {rule}")


# ------------------------------------------------------------------------------------------ non-finite steps

def step_is_finite(loss: Tensor, grad_norm: Tensor, info: DistInfo) -> bool:
    """Whether every rank's loss and the (all-reduced) gradient norm are finite; all ranks get the same answer.

    Cost: one device-to-host copy of a scalar per step (plus, under DDP, an all-reduce of one scalar). It waits for
    the backward pass to finish before the optimizer step is queued; the GPU then idles only while the host queues
    the optimizer and EMA kernels and the next forward pass, which is small against a step. A device-side update
    masked by the flag would avoid the wait but not AdamW's side effects (its step count and moments change even
    for a zero gradient), so the update is skipped on the host instead.
    """
    finite = (torch.isfinite(loss.detach()) & torch.isfinite(grad_norm.detach())).float()
    if info.enabled:
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    return bool(finite.item())


@dataclass
class SkippedSteps:
    """Counts consecutive skipped steps; ``limit`` in a row ends the run."""

    limit: int
    in_a_row: int = 0
    first: int = 0
    """The first step of the current run of skipped steps."""

    def record(self, step: int, applied: bool) -> None:
        """Note whether ``step``'s update was applied."""
        if applied:
            self.in_a_row = 0
            return
        if self.in_a_row == 0:
            self.first = step
        self.in_a_row += 1

    @property
    def exhausted(self) -> bool:
        """Whether the current run of skipped steps has reached the limit."""
        return self.in_a_row >= self.limit


def json_number(value: float) -> float | str:
    """A float for metrics.jsonl: NaN and infinities as the strings ``"nan"``, ``"inf"``, ``"-inf"`` (strict JSON
    has no literal for them)."""
    return value if math.isfinite(value) else str(value)


# ------------------------------------------------------------------------------------------- finite states

def first_non_finite(tensors: Iterable[tuple[str, Tensor]]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None; one host sync."""
    named = [(name, t) for name, t in tensors if t.is_floating_point()]
    if not named:
        return None
    finite = torch.stack([torch.isfinite(t).all().to(named[0][1].device) for _, t in named])
    if bool(finite.all()):
        return None
    return named[int((~finite).nonzero()[0])][0]


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> Iterator[tuple[str, Tensor]]:
    """The optimizer's state tensors (AdamW: step, exp_avg, exp_avg_sq of every parameter), named for messages."""
    for index, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            if isinstance(value, Tensor):
                yield f"optimizer state {key} of parameter {index}", value


def all_ranks_agree(ok: bool, info: DistInfo, device: torch.device) -> bool:
    """True only if ``ok`` holds on every rank (one all-reduce under DDP)."""
    if not info.enabled:
        return ok
    flag = torch.tensor(float(ok), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
