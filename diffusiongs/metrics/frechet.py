"""FD-VGG16: the Fréchet distance between two sets of images, on VGG16 features.

The paper's largest diffusion gains are in FID (reference §6: 118 -> 48 on GSO from adding diffusion), a distance
between the distributions of rendered and real views rather than a per-pair error. FID needs Inception-v3 weights,
which this project cannot ship; the statistic itself is the same on any embedding. Here the embedding is the
deepest tap LPIPS already uses (VGG16 relu5_3, 512 channels) averaged over space, with images resized as LPIPS
resizes them (256 x 256 by default). Values are **not** comparable to FID numbers, only to each other on the
same image sets, and like FID they are biased upwards for small sets: compare methods on the same items.

    FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))        (Fréchet distance of two Gaussians)
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float
from torch import Tensor

EMBEDDING_DIM = 512
"""Channels of VGG16's relu5_3."""


def pooled_embeddings(relu5_3: Float[Tensor, "n 512 h w"]) -> Float[Tensor, "n 512"]:
    """Each image's embedding (float64, on the CPU) from its deepest LPIPS tap, as
    :meth:`~diffusiongs.metrics.lpips.LPIPS.distances_and_taps` returns it: evaluation takes the taps of its LPIPS
    call instead of running VGG16 twice."""
    return relu5_3.float().mean(dim=(-2, -1)).double().cpu()


def frechet_distance(a: Float[np.ndarray, "n d"], b: Float[np.ndarray, "m d"]) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a`` and of ``b`` (float64).

    Tr((S_a S_b)^(1/2)) is the sum of the square roots of the eigenvalues of S_a S_b, which are those of the
    symmetric positive semi-definite S_a^(1/2) S_b S_a^(1/2): real and non-negative up to rounding (clipped at 0).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        raise ValueError("frechet_distance needs at least two samples on each side")
    mean_a, mean_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    eigvals = np.linalg.eigvals(cov_a @ cov_b)
    trace_sqrt = float(np.sqrt(np.clip(eigvals.real, 0.0, None)).sum())
    return float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)
