"""The forward (noising) process: the noise schedule and q(x_t | x_0) (reference §2).

Notation: T steps, integer t in [0, T); beta_t; alpha-bar_t = prod_{i<=t} (1 - beta_i) (``alphas_cumprod``);
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, with x_0 the clean images in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

COSINE_OFFSET = 0.008
"""s in the cosine schedule abar(t) = cos^2(((t/T + s) / (1 + s)) pi/2) (Nichol & Dhariwal 2021): keeps beta_0
small but not zero."""
MAX_BETA = 0.999
"""Cap on beta_t: without it the last cosine step would have beta = 1 and abar = 0 exactly."""


@dataclass(frozen=True)
class NoiseScheduleConfig:
    """The noise schedule of training and sampling."""

    num_timesteps: int = 1000
    """T."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """``cosine`` (DiffusionGS, "squaredcos_cap_v2") or ``linear`` (DDPM, beta from 1e-4 to 0.02 at T = 1000)."""


def cosine_alpha_bar(t: Tensor, num_timesteps: int) -> Tensor:
    """The continuous cosine abar at (fractional) step t, before discretisation."""
    return torch.cos((t / num_timesteps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2


def make_betas(cfg: NoiseScheduleConfig) -> Float[Tensor, " T"]:
    """beta_t for t in [0, T), in float64."""
    steps = torch.arange(cfg.num_timesteps, dtype=torch.float64)
    if cfg.schedule == "cosine":
        ratio = cosine_alpha_bar(steps + 1, cfg.num_timesteps) / cosine_alpha_bar(steps, cfg.num_timesteps)
        return torch.clamp(1 - ratio, max=MAX_BETA)
    scale = 1000 / cfg.num_timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, cfg.num_timesteps, dtype=torch.float64)


class NoiseSchedule:
    """The discrete schedule and the forward process. A plain object, not an ``nn.Module``."""

    def __init__(self, cfg: NoiseScheduleConfig = NoiseScheduleConfig()):
        self.cfg = cfg
        self.betas = make_betas(cfg)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, dim=0)

    @property
    def num_timesteps(self) -> int:
        return self.cfg.num_timesteps

    def alpha_bar(self, t: Int[Tensor, " b"], like: Tensor) -> Float[Tensor, " b"]:
        """abar_t gathered for integer steps, in ``like``'s dtype and device."""
        return self.alphas_cumprod.to(like.device)[t.to(like.device)].to(like.dtype)

    def q_sample(self, x0: Float[Tensor, "b ..."], t: Int[Tensor, " b"], noise: Float[Tensor, "b ..."]
                 ) -> Float[Tensor, "b ..."]:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one t per sample (shared by all its views)."""
        abar = self.alpha_bar(t, x0).reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> Int[Tensor, " b"]:
        """Training steps drawn uniformly from [0, T)."""
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator)
        return t.to(device)
