import numpy as np
import pytest
import scipy.linalg
import torch

from diffusiongs.evaluation.scoring import LPIPS_CHUNK, image_scores
from diffusiongs.metrics import psnr
from diffusiongs.metrics.frechet import EMBEDDING_DIM, frechet_distance
from diffusiongs.metrics.lpips import LPIPS, LPIPSConfig


def reference(a: np.ndarray, b: np.ndarray) -> float:
    """The textbook formula with scipy's matrix square root."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_matrix_square_root_formula(seed):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(8, 8))
    a = rng.normal(size=(200, 8)) @ mix
    b = rng.normal(size=(150, 8)) @ (mix + 0.3 * rng.normal(size=(8, 8))) + rng.normal(size=8)
    expected = reference(a, b)
    # Both are float64 evaluations of one quantity of size ~trace(cov): they agree far above float64 rounding.
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-6, abs=1e-9 * np.trace(np.cov(a, rowvar=False)))


def test_zero_for_one_set_and_the_squared_shift_for_a_translated_one():
    a = np.random.default_rng(0).normal(size=(300, 6))
    assert abs(frechet_distance(a, a)) < 1e-9 * np.trace(np.cov(a, rowvar=False))
    shift = np.arange(6.0)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_needs_two_samples():
    with pytest.raises(ValueError, match="two samples"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_image_scores_take_lpips_and_the_fd_embeddings_from_one_vgg_pass():
    net = LPIPS(LPIPSConfig(resize_to=32))
    torch.manual_seed(0)
    for p in net.parameters():
        p.data.normal_(0, 0.05)
    pred = torch.rand(LPIPS_CHUNK + 3, 3, 16, 16) * 1.4 - 0.2  # beyond [0, 1] too; two chunks
    target = torch.rand(LPIPS_CHUNK + 3, 3, 16, 16)
    scores = image_scores(pred, target, net)
    clamped = pred.clamp(0, 1)

    def embeddings(images):  # the plain way: VGG16 once more on the clamped, resized images
        resized = torch.nn.functional.interpolate(images, size=(32, 32), mode="bilinear", align_corners=False)
        return net.features(resized)[-1].mean(dim=(-2, -1)).double()

    assert scores.pred_embeddings.shape == (len(pred), EMBEDDING_DIM) and scores.pred_embeddings.dtype == torch.float64
    # The same float32 arithmetic in batches of another size: CPU convolution kernels may sum in another order,
    # ~sqrt(K) eps relative per layer for K = 9 x 512 products, compounded over 13 layers: well within 1e-4.
    tolerance = {"rtol": 1e-4, "atol": 1e-7}
    torch.testing.assert_close(scores.pred_embeddings, embeddings(clamped), **tolerance)
    torch.testing.assert_close(scores.target_embeddings, embeddings(target), **tolerance)
    torch.testing.assert_close(torch.tensor(scores.lpips), net(clamped, target), **tolerance)
    assert scores.psnr == psnr(clamped, target).tolist()
    assert image_scores(pred, target, None).pred_embeddings is None
