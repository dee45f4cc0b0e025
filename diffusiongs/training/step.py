"""One training step, as a pure function of (model, batch, schedule, noise, step): CPU-testable and free of host
synchronisation (the step count is a Python int; domain masks stay on the device)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from diffusiongs.data.types import TrainingBatch
from diffusiongs.diffusion.schedule import NoiseSchedule
from diffusiongs.render import RenderConfig
from diffusiongs.system.model import DETERMINISTIC_INPUT, DiffusionGS
from diffusiongs.training.losses import (
    LossConfig,
    PerceptualFn,
    per_sample_mse,
    per_sample_perceptual,
    point_distribution_loss,
)


@dataclass(frozen=True)
class StepConfig:
    """How a batch becomes a loss."""

    loss: LossConfig = field(default_factory=LossConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    """Rasterizer settings (backend, deferred rendering)."""


@dataclass(frozen=True)
class StepNoise:
    """The randomness of one step: per-sample timesteps and noise for the N noisy views."""

    timesteps: Int[Tensor, " b"]
    noise: Float[Tensor, "b n 3 h w"]


def draw_step_noise(batch: TrainingBatch, schedule: NoiseSchedule, generators: list[torch.Generator]) -> StepNoise:
    """One generator per sample, so a sample's noise does not depend on how the batch is split across ranks."""
    _, _, c, h, w = batch.images.shape
    device = batch.images.device
    t = torch.stack([torch.randint(0, schedule.num_timesteps, (), generator=g, device=g.device) for g in generators])
    noise = torch.stack([torch.randn(batch.num_noisy, c, h, w, generator=g, device=g.device) for g in generators])
    return StepNoise(timesteps=t.to(device), noise=noise.to(device))


@dataclass(frozen=True)
class StepOutput:
    loss: Tensor
    """The scalar to backpropagate."""
    metrics: dict[str, Tensor]
    """Detached scalars for logging (on the device; read them only when logging)."""
    renders: Float[Tensor, "b v 3 h w"]
    """Renders of all views (detached), for sample images."""


def model_inputs(batch: TrainingBatch, schedule: NoiseSchedule, noise: StepNoise, deterministic: bool
                 ) -> tuple[Tensor, Tensor]:
    """[condition | x_t] images and the timesteps the network is told (see ``ModelConfig.deterministic``)."""
    x0 = batch.images
    targets = x0[:, 1:1 + batch.num_noisy]
    if deterministic:
        return (torch.cat([x0[:, :1], torch.full_like(targets, DETERMINISTIC_INPUT)], dim=1),
                torch.full_like(noise.timesteps, schedule.num_timesteps - 1))
    noisy = schedule.q_sample(targets, noise.timesteps, noise.noise.to(x0.dtype))
    return torch.cat([x0[:, :1], noisy], dim=1), noise.timesteps


def train_step(model: DiffusionGS | torch.nn.parallel.DistributedDataParallel, batch: TrainingBatch,
               schedule: NoiseSchedule, noise: StepNoise, step: int,
               cfg: StepConfig, perceptual: PerceptualFn | None = None, deterministic: bool = False) -> StepOutput:
    """Forward pass and loss of one batch (views ordered [condition | N noisy | M novel]).

    ``deterministic`` trains the no-diffusion baseline (``ModelConfig.deterministic``).
    """
    n_in = 1 + batch.num_noisy
    inputs, timesteps = model_inputs(batch, schedule, noise, deterministic)
    pred, rendered = model(inputs, batch.cameras[:, :n_in], timesteps, batch.is_object, batch.cameras, cfg.render)
    renders = rendered.rgb
    lcfg = cfg.loss
    first = 0 if lcfg.supervise_condition_view else 1
    groups = {"de": slice(first, n_in), "nv": slice(n_in, batch.images.shape[1])}
    metrics: dict[str, Tensor] = {}
    recon = torch.zeros(batch.images.shape[0], device=renders.device)
    for name, views in groups.items():
        if views.stop <= views.start:
            continue
        pred_views, target_views = renders[:, views], batch.images[:, views].float()
        mse = per_sample_mse(pred_views, target_views)
        metrics[f"l2_{name}"] = mse.mean().detach()
        metrics[f"psnr_{name}"] = (-10 * torch.log10(mse.detach().clamp_min(1e-10))).mean()
        recon = recon + mse
        if perceptual is not None and lcfg.perceptual_weight > 0:
            perc = per_sample_perceptual(perceptual, pred_views, target_views)
            metrics[f"lpips_{name}"] = perc.mean().detach()
            recon = recon + lcfg.perceptual_weight * perc
    if step <= lcfg.point_warmup_steps:
        is_object = batch.is_object.to(renders.dtype)
        pd = point_distribution_loss(pred.pixel_means, pred.ray_origins, lcfg.point_std)
        metrics["point_distribution"] = pd.mean().detach()
        loss = (pd * is_object).sum() / is_object.sum().clamp_min(1.0)
    else:
        loss = recon.mean()
    metrics["loss"] = loss.detach()
    return StepOutput(loss=loss, metrics=metrics, renders=renders.detach())
