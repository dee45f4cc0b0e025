"""Image metrics of the evaluation protocol: PSNR and SSIM on RGB images in [0, 1].

Both clamp their inputs to [0, data range] first, as the official evaluation (`MetricComputer`) does for PSNR:
renders of Gaussians can leave [0, 1] slightly, and the score of what a viewer displays is wanted.
They compute in float64 (SSIM's variances are differences of nearly equal averages) and return float32.
"""

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

SSIM_SIGMA = 1.5
"""Standard deviation of SSIM's Gaussian window, in pixels (Wang et al. 2004)."""

SSIM_RADIUS = 5
"""Half-width of the window: skimage truncates its Gaussian at 3.5 sigma, int(3.5 * 1.5 + 0.5) = 5, i.e. 11x11."""

SSIM_K1, SSIM_K2 = 0.01, 0.03
"""Stabilising constants: C1 = (K1 * data range)^2, C2 = (K2 * data range)^2."""


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")
    if pred.ndim < 3:
        raise ValueError(f"expected images [..., channel, height, width], got shape {tuple(pred.shape)}")


def psnr(
    pred: Float[Tensor, "*batch channel height width"],
    target: Float[Tensor, "*batch channel height width"],
    data_range: float = 1.0,
) -> Float[Tensor, "*batch"]:
    """Peak signal-to-noise ratio in dB, one value per image: ``10 log10(data_range^2 / MSE)``.

    Both images are clamped to ``[0, data_range]`` first. Identical images give ``inf``.
    """
    _check_pair(pred, target)
    x = pred.double().clamp(0.0, data_range)
    y = target.double().clamp(0.0, data_range)
    mse = (x - y).square().mean(dim=(-3, -2, -1))
    return (10.0 * torch.log10(data_range**2 / mse)).float()


def _gaussian_window(dtype: torch.dtype, device: torch.device) -> Float[Tensor, " window"]:
    offsets = torch.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=dtype, device=device)
    window = torch.exp(-offsets.square() / (2 * SSIM_SIGMA**2))
    return window / window.sum()


def _local_mean(x: Float[Tensor, "n 1 height width"]) -> Float[Tensor, "n 1 height-10 width-10"]:
    """Gaussian-weighted local means at every pixel whose window lies inside the image.

    skimage filters the whole image with reflected borders and then crops SSIM_RADIUS pixels on each side, so the
    values it averages never see the reflection: a 'valid' convolution gives exactly those values.
    """
    window = _gaussian_window(x.dtype, x.device)
    x = F.conv2d(x, window.view(1, 1, -1, 1))
    return F.conv2d(x, window.view(1, 1, 1, -1))


def ssim(
    pred: Float[Tensor, "*batch channel height width"],
    target: Float[Tensor, "*batch channel height width"],
    sample_covariance: bool = False,
) -> Float[Tensor, "*batch"]:
    """Structural similarity with an 11x11 Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, data range 1.

    Images in [0, 1] (both clamped first). SSIM is computed per channel, averaged over the pixels at least 5 px from
    the border and then over channels: the value of skimage's ``structural_similarity(pred, target,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=...)``.

    Args:
        sample_covariance: scale variances by N / (N - 1) with N = 121, as skimage does by default
            (``use_sample_covariance=True``), which is what the official Open-DiffusionGS evaluation calls.
            The default (False) is the population form of Wang et al. 2004, torchmetrics' and pytorch-msssim's.
    """
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < 2 * SSIM_RADIUS + 1:
        raise ValueError(f"ssim needs images of at least {2 * SSIM_RADIUS + 1}x{2 * SSIM_RADIUS + 1} pixels, "
                         f"got {tuple(pred.shape[-2:])}")
    batch_shape, (channels, height, width) = pred.shape[:-3], pred.shape[-3:]
    x = pred.double().clamp(0.0, 1.0).reshape(-1, 1, height, width)
    y = target.double().clamp(0.0, 1.0).reshape(-1, 1, height, width)
    n = x.shape[0]
    # One convolution pass over all five moments.
    moments = _local_mean(torch.cat([x, y, x * x, y * y, x * y], dim=0))
    mean_x, mean_y, mean_xx, mean_yy, mean_xy = moments.split(n, dim=0)
    window_pixels = (2 * SSIM_RADIUS + 1) ** 2
    cov_norm = window_pixels / (window_pixels - 1) if sample_covariance else 1.0
    var_x = cov_norm * (mean_xx - mean_x.square())
    var_y = cov_norm * (mean_yy - mean_y.square())
    cov_xy = cov_norm * (mean_xy - mean_x * mean_y)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    ssim_map = ((2 * mean_x * mean_y + c1) * (2 * cov_xy + c2)) / (
        (mean_x.square() + mean_y.square() + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).view(*batch_shape, channels).mean(dim=-1).float()
