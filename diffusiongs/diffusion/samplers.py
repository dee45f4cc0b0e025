"""Reverse-process samplers driven by an x0 predictor (DiffusionGS predicts x0 by rendering its Gaussians).

Every sampler walks the same respaced chain of K original steps t_0 > t_1 > ... > t_{K-1} = 0 (for K = 30:
999, 965, ..., 34, 0, the official chain) and exposes ``step(x0_pred, i, x_t) -> x at t_{i+1}``; the step
after t_{K-1} lands on the clean sample and returns x0_pred itself. The caller owns the loop (it also needs
the Gaussians of the last prediction), see :func:`run_reverse_process`.

Notation (reference §2): abar_t = ``alphas_cumprod[t]``, alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t),
lambda_t = log(alpha_t / sigma_t); eps_hat = (x_t - alpha_t x0_hat) / sigma_t.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.diffusion.schedule import NoiseSchedule

SamplerName = Literal["ddim", "ddpm", "dpmpp2m"]


@dataclass(frozen=True)
class SamplerConfig:
    """Which sampler, and how many network evaluations."""

    name: SamplerName = "ddim"
    """``ddim`` (paper, deterministic with eta 0), ``ddpm`` (official code: ancestral sampling on the respaced
    chain, fixed-large variance) or ``dpmpp2m`` (DPM-Solver++ 2M, a second-order multistep solver)."""
    num_steps: int = 30
    """Network evaluations K."""
    eta: float = 0.0
    """DDIM stochasticity: 0 is deterministic DDIM, 1 matches DDPM's posterior variance."""


def respaced_timesteps(num_timesteps: int, num_steps: int) -> list[int]:
    """K steps from T-1 down to 0, evenly spaced and rounded (the official respaced chain for K = 30)."""
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
    if num_steps == 1:
        return [num_timesteps - 1]
    points = torch.linspace(0, num_timesteps - 1, num_steps, dtype=torch.float64).round().long()
    return points.flip(0).tolist()


class Sampler(ABC):
    """One reverse-process algorithm over a respaced chain. Stateless between calls except where noted."""

    def __init__(self, schedule: NoiseSchedule, cfg: SamplerConfig):
        self.schedule = schedule
        self.cfg = cfg
        self.timesteps = respaced_timesteps(schedule.num_timesteps, cfg.num_steps)

    def abar(self, index: int) -> float:
        """abar at chain position ``index``; 1.0 past the end (the clean sample)."""
        if index >= len(self.timesteps):
            return 1.0
        return float(self.schedule.alphas_cumprod[self.timesteps[index]])

    def reset(self) -> None:
        """Forget the history of a previous run (multistep solvers)."""

    @abstractmethod
    def step(self, x0_pred: Tensor, index: int, x_t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x at chain position ``index + 1`` from x at ``index`` and the x0 prediction made there."""


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Noise drawn on the generator's device, then moved to x's: a CPU generator gives the same noise whatever
    device the chain runs on."""
    device = x.device if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, Eq. 12), written for an x0 predictor."""

    def step(self, x0_pred, index, x_t, generator=None):
        abar_t, abar_prev = self.abar(index), self.abar(index + 1)
        if abar_prev == 1.0:
            return x0_pred
        eps_hat = (x_t - abar_t ** 0.5 * x0_pred) / (1 - abar_t) ** 0.5
        sigma = self.cfg.eta * ((1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)) ** 0.5
        x_prev = abar_prev ** 0.5 * x0_pred + max(1 - abar_prev - sigma ** 2, 0.0) ** 0.5 * eps_hat
        return x_prev + sigma * _noise_like(x_t, generator) if sigma > 0 else x_prev


class DDPMSampler(Sampler):
    """Ancestral sampling on the respaced chain with the fixed-large variance sigma_k^2 = beta_k (official code).

    beta_k = 1 - abar_k / abar_{k-1}; mean = c1 x0_hat + c2 x_k with c1 = beta_k sqrt(abar_{k-1}) / (1 - abar_k),
    c2 = (1 - abar_{k-1}) sqrt(1 - beta_k) / (1 - abar_k) (DDPM Eq. 7); no noise on the last step.
    """

    def step(self, x0_pred, index, x_t, generator=None):
        abar_t, abar_prev = self.abar(index), self.abar(index + 1)
        beta = 1 - abar_t / abar_prev
        c1 = beta * abar_prev ** 0.5 / (1 - abar_t)
        c2 = (1 - abar_prev) * (1 - beta) ** 0.5 / (1 - abar_t)
        mean = c1 * x0_pred + c2 * x_t
        if abar_prev == 1.0:
            return mean
        return mean + beta ** 0.5 * _noise_like(x_t, generator)


class DPMSolverPP2MSampler(Sampler):
    """DPM-Solver++(2M) for x0 predictions (Lu et al. 2022, Alg. 2), first order on the first and last steps.

    x_{t} = (sigma_t / sigma_s) x_s - alpha_t (e^{-h} - 1) D,  h = lambda_t - lambda_s,
    D = x0_s + (x0_s - x0_prev) / (2 r),  r = h_prev / h   (D = x0_s on first-order steps).
    """

    def __init__(self, schedule: NoiseSchedule, cfg: SamplerConfig):
        super().__init__(schedule, cfg)
        self._previous: tuple[Tensor, float] | None = None  # (x0 prediction, lambda) of the last step

    def reset(self) -> None:
        self._previous = None

    def _lambda(self, index: int) -> float:
        abar = self.abar(index)
        return 0.5 * (math.log(abar) - math.log(1 - abar))

    def step(self, x0_pred, index, x_t, generator=None):
        if index == 0:
            self.reset()
        abar_s, abar_t = self.abar(index), self.abar(index + 1)
        if abar_t == 1.0:  # the last step lands on the clean sample: sigma_t = 0, e^{-h} = 0
            return x0_pred
        lam_s, lam_t = self._lambda(index), self._lambda(index + 1)
        h = lam_t - lam_s
        D = x0_pred
        if self._previous is not None:
            x0_prev, lam_prev = self._previous
            r = (lam_s - lam_prev) / h
            D = x0_pred + (x0_pred - x0_prev) / (2 * r)
        self._previous = (x0_pred, lam_s)
        sigma_s, sigma_t = (1 - abar_s) ** 0.5, (1 - abar_t) ** 0.5
        return (sigma_t / sigma_s) * x_t - abar_t ** 0.5 * math.expm1(-h) * D


SAMPLERS: dict[str, type[Sampler]] = {"ddim": DDIMSampler, "ddpm": DDPMSampler, "dpmpp2m": DPMSolverPP2MSampler}


def make_sampler(schedule: NoiseSchedule, cfg: SamplerConfig) -> Sampler:
    if cfg.name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{cfg.name}'; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[cfg.name](schedule, cfg)


ProgressCallback = Callable[[int, int], None]
"""Called as ``progress(done, total)`` after each unit of work (here: network evaluations)."""


def run_reverse_process(sampler: Sampler, predict_x0: Callable[[Tensor, int], Tensor],
                        x_T: Float[Tensor, "..."], generator: torch.Generator | None = None,
                        progress: ProgressCallback | None = None) -> Tensor:
    """Run the whole chain from x_T: at each step call ``predict_x0(x_t, t)`` with the original step t, then
    ``sampler.step``, then ``progress(steps done, steps in all)``. Returns the final sample (the last x0
    prediction)."""
    sampler.reset()
    x = x_T
    total = len(sampler.timesteps)
    for index, t in enumerate(sampler.timesteps):
        x = sampler.step(predict_x0(x, t), index, x, generator)
        if progress is not None:
            progress(index + 1, total)
    return x
