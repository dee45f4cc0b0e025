"""PSNR and SSIM against scikit-image and torchmetrics on random and structured images."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from torchmetrics.functional.image import structural_similarity_index_measure

from diffusiongs.metrics import psnr, ssim


def _structured_pairs(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image pairs [4, 3, H, W] in [0, 1] with edges, gradients and periodic texture, and degraded copies."""
    g = torch.Generator().manual_seed(1)
    y, x = torch.meshgrid(torch.linspace(0, 1, height, dtype=torch.float64),
                          torch.linspace(0, 1, width, dtype=torch.float64), indexing="ij")
    checker = ((torch.floor(x * 7) + torch.floor(y * 5)) % 2).expand(3, -1, -1)
    gradient = torch.stack([x, y, 1 - x * y])
    disc = ((x - 0.4) ** 2 + (y - 0.6) ** 2 < 0.08).to(torch.float64) * torch.tensor([0.9, 0.3, 0.1])[:, None, None]
    rings = 0.5 + 0.5 * torch.sin(40 * torch.sqrt((x - 0.5) ** 2 + (y - 0.5) ** 2)).expand(3, -1, -1)
    clean = torch.stack([checker, gradient, disc + 0.05, rings])
    blurred = torch.nn.functional.avg_pool2d(clean, 3, stride=1, padding=1, count_include_pad=False)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    shifted = torch.roll(clean, shifts=(2, -3), dims=(-2, -1))
    degraded = torch.stack([blurred[0], noisy[1], shifted[2], 0.7 * clean[3] + 0.2])
    return degraded.clamp(0, 1), clean


def _random_pairs(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    target = torch.rand(3, 3, height, width, generator=g, dtype=torch.float64)
    noise_levels = torch.tensor([0.02, 0.2, 1.0], dtype=torch.float64)[:, None, None, None]
    pred = target + noise_levels * torch.randn(target.shape, generator=g, dtype=torch.float64)
    return pred.clamp(0, 1), target


@pytest.mark.parametrize("make_pairs", [_structured_pairs, _random_pairs])
@pytest.mark.parametrize("sample_covariance", [False, True])
def test_ssim_matches_skimage(make_pairs, sample_covariance):
    pred, target = make_pairs(37, 52)  # not square, so a swapped axis would show
    ours = ssim(pred, target, sample_covariance=sample_covariance)
    expected = [structural_similarity(p.numpy(), t.numpy(), gaussian_weights=True, sigma=1.5,
                                      use_sample_covariance=sample_covariance, data_range=1, channel_axis=0)
                for p, t in zip(pred, target, strict=True)]
    assert ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make_pairs", [_structured_pairs, _random_pairs])
def test_ssim_matches_torchmetrics_inside_border(make_pairs):
    # torchmetrics averages its map over the whole image, borders included (computed on a reflection-padded image);
    # skimage and we average the pixels whose 11x11 window lies inside the image. The maps agree there.
    pred, target = make_pairs(40, 31)
    _, full_map = structural_similarity_index_measure(pred, target, gaussian_kernel=True, sigma=1.5, kernel_size=11,
                                                      data_range=1.0, k1=0.01, k2=0.03, return_full_image=True)
    expected = full_map[..., 5:-5, 5:-5].mean(dim=(-3, -2, -1))
    torch.testing.assert_close(ssim(pred, target), expected.float(), rtol=0, atol=1e-6)


def test_ssim_properties():
    pred, target = _structured_pairs(32, 32)
    torch.testing.assert_close(ssim(target, target), torch.ones(4))
    assert bool((ssim(pred, target) < 0.99).all())
    torch.testing.assert_close(ssim(pred, target), ssim(target, pred))
    # Leading dimensions are kept; values outside [0, 1] are clamped first.
    batched = ssim(pred.view(2, 2, 3, 32, 32), target.view(2, 2, 3, 32, 32))
    torch.testing.assert_close(batched, ssim(pred, target).view(2, 2))
    torch.testing.assert_close(ssim(2 * target - 0.5, target), ssim((2 * target - 0.5).clamp(0, 1), target))
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(3, 10, 40), torch.rand(3, 10, 40))


@pytest.mark.parametrize("data_range", [1.0, 255.0])
def test_psnr_matches_skimage_and_formula(data_range):
    pred, target = _random_pairs(20, 24)
    pred, target = pred * data_range, target * data_range
    ours = psnr(pred, target, data_range=data_range)
    expected = [peak_signal_noise_ratio(t.numpy(), p.numpy(), data_range=data_range)
                for p, t in zip(pred, target, strict=True)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-6)
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    np.testing.assert_allclose(ours.numpy(), [10 * math.log10(data_range**2 / m) for m in mse.tolist()], rtol=1e-6)


def test_psnr_clamps_and_keeps_batch_dims():
    target = torch.full((2, 1, 3, 8, 8), 0.5)
    pred = target.clone()
    pred[..., 0, 0] = 3.0  # clamped to 1: the pixel is off by 0.5 in each channel, not 2.5
    expected = 10 * math.log10(1 / (3 * 0.25 / (3 * 64)))
    torch.testing.assert_close(psnr(pred, target), torch.full((2, 1), expected))
    assert torch.isinf(psnr(target, target)).all()
