"""Training losses (paper Sec. 4 / reference §4.2).

  L_de = L2(X0_hat, X0) + lambda L_perc(X0_hat, X0)      on the denoised views
  L_nv = L2(novel_hat, novel) + lambda L_perc(...)       on M novel views (supervision only)
  L_pd = E_k[(l_k - ((l_k - E l) / std(l) sigma0 + |o|))^2],  l_k = |mu_k - o|   (point-distribution warm-up)
  L    = (L_de + L_nv) 1[iter > iter0] + L_pd 1[iter <= iter0] 1[object]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jaxtyping import Float
from torch import Tensor

PerceptualFn = Callable[[Tensor, Tensor], Tensor]
"""(pred, target) images ``[n, 3, h, w]`` in [0, 1] -> per-image distance ``[n]`` (LPIPS-VGG)."""

_STD_EPS = 1e-8


@dataclass(frozen=True)
class LossConfig:
    """Weights and schedule of the training losses."""

    perceptual_weight: float = 0.5
    """lambda on the perceptual (LPIPS-VGG) term. The paper's value is not retrievable; the official code uses 0.5
    for objects and 0.1 for scenes."""
    point_warmup_steps: int = 150
    """iter0: steps that train only L_pd on objects (official: 150)."""
    point_std: float = 0.5
    """sigma0, the target standard deviation of Gaussian distances from the camera in L_pd."""
    supervise_condition_view: bool = True
    """Count the condition view's render in L_de, as the official code does (it supervises every rendered view)."""
    perceptual_resolution: int | None = 256
    """Images larger than this side are resized down to it before the perceptual network, as the official code
    resizes its 512-px renders to 256; smaller ones are scored at their own size (None: always their own size).
    Upsampling 64- or 128-px renders to 256 would cost 16x or 4x the VGG work and add no pixels; the price is a
    coarser deepest tap (4 x 4 features at 64 px, 8 x 8 at 128 px). docs/RESULTS.md states the choice."""


def per_sample_mse(pred: Float[Tensor, "b v 3 h w"], target: Float[Tensor, "b v 3 h w"]) -> Float[Tensor, " b"]:
    return (pred - target).square().flatten(1).mean(1)


def per_sample_perceptual(perceptual: PerceptualFn, pred: Float[Tensor, "b v 3 h w"],
                          target: Float[Tensor, "b v 3 h w"]) -> Float[Tensor, " b"]:
    b, v = pred.shape[:2]
    return perceptual(pred.flatten(0, 1), target.flatten(0, 1)).reshape(b, v).mean(1)


def point_distribution_loss(pixel_means: Float[Tensor, "b v h w 3"], origins: Float[Tensor, "b v 3"],
                            target_std: float) -> Float[Tensor, " b"]:
    """L_pd per sample: pull each view's distribution of Gaussian distances from its camera towards mean |o|
    (the distance of the camera from the object centre) and standard deviation ``target_std``."""
    dist = (pixel_means - origins[:, :, None, None, :]).norm(dim=-1).flatten(2)  # [b, v, h*w]
    detached = dist.detach()
    mean = detached.mean(-1, keepdim=True)
    std = detached.std(-1, keepdim=True)
    target = (detached - mean) / (std + _STD_EPS) * target_std + origins.norm(dim=-1)[..., None]
    return (dist - target).square().flatten(1).mean(1)
