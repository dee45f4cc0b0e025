"""Chamfer distance, F-score and surface sampling against scipy's KD-tree and closed-form expectations."""

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from diffusiongs.metrics import chamfer_distance, f_score, nearest_neighbor_distances, sample_surface_points


def _clouds(dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(700, 3, generator=g, dtype=dtype) * 2 - 1
    target = torch.rand(450, 3, generator=g, dtype=dtype) * 2 - 1
    weights = torch.rand(700, generator=g, dtype=dtype)
    weights[::7] = 0  # points that must not count at all
    return pred, target, weights


def _kdtree_terms(pred, target, weights, threshold):
    """Accuracy/completeness and precision/recall computed with scipy, weights applied as documented."""
    pred, target, weights = pred.double().numpy(), target.double().numpy(), weights.double().numpy()
    keep = weights > 0
    pred, weights = pred[keep], weights[keep]
    d_pred, _ = cKDTree(target).query(pred)
    d_target, _ = cKDTree(pred).query(target)
    accuracy = np.sum(weights * d_pred) / weights.sum()
    completeness = d_target.mean()
    precision = np.sum(weights * (d_pred < threshold)) / weights.sum()
    recall = np.mean(d_target < threshold)
    return accuracy, completeness, precision, recall


@pytest.mark.parametrize("chunk_pairs", [2**24, 1000, 100])
def test_nearest_neighbor_distances_match_kdtree(chunk_pairs):
    pred, target, _ = _clouds()
    expected, _ = cKDTree(target.numpy()).query(pred.numpy())
    ours = nearest_neighbor_distances(pred, target, chunk_pairs=chunk_pairs)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=1e-12)


def test_nearest_neighbor_distances_are_exact_for_close_points():
    # Points 1e-4 apart far from the origin: the |a|^2 + |b|^2 - 2ab form of distance would lose them in float32.
    g = torch.Generator().manual_seed(4)
    target = torch.rand(300, 3, generator=g) + 10
    offset = torch.nn.functional.normalize(torch.randn(300, 3, generator=g), dim=-1) * 1e-4
    ours = nearest_neighbor_distances(target + offset, target)
    torch.testing.assert_close(ours, torch.full((300,), 1e-4), rtol=2e-2, atol=0)


@pytest.mark.parametrize("weighted", [False, True])
def test_chamfer_and_f_score_match_kdtree(weighted):
    pred, target, weights = _clouds()
    weights = weights if weighted else torch.ones_like(weights)
    threshold = 0.15
    accuracy, completeness, precision, recall = _kdtree_terms(pred, target, weights, threshold)
    pred_weights = weights if weighted else None
    cd = chamfer_distance(pred, target, pred_weights=pred_weights, chunk_pairs=5000)
    np.testing.assert_allclose(cd.item(), 0.5 * (accuracy + completeness), rtol=1e-12)
    fs = f_score(pred, target, threshold, pred_weights=pred_weights, chunk_pairs=5000)
    assert 0.2 < recall < 0.95 and 0.2 < precision < 0.95  # the threshold separates the points
    np.testing.assert_allclose([fs.precision.item(), fs.recall.item()], [precision, recall], rtol=1e-12)
    np.testing.assert_allclose(fs.f_score.item(), 2 * precision * recall / (precision + recall), rtol=1e-12)


def test_weights_scale_like_repeated_points():
    pred, target, _ = _clouds(torch.float32)
    pred = pred[:50]
    repeats = torch.randint(1, 4, (50,), generator=torch.Generator().manual_seed(5))
    # Integer weights act like repeated points (completeness is unaffected by duplicates).
    weighted = chamfer_distance(pred, target, pred_weights=repeats.float())
    repeated = chamfer_distance(pred.repeat_interleave(repeats, dim=0), target)
    torch.testing.assert_close(weighted, repeated)
    weighted_f = f_score(pred, target, 0.2, pred_weights=repeats.float())
    repeated_f = f_score(pred.repeat_interleave(repeats, dim=0), target, 0.2)
    torch.testing.assert_close(weighted_f.f_score, repeated_f.f_score)


def test_geometry_metric_edge_cases():
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    assert chamfer_distance(points, points).item() == 0
    assert f_score(points, points, 0.01).f_score.item() == 1
    far = f_score(points, points + 5, 0.1)
    assert far.f_score.item() == 0 and far.precision.item() == 0 and far.recall.item() == 0
    # A shifted copy: every nearest neighbour is the shifted twin, 0.1 away.
    np.testing.assert_allclose(chamfer_distance(points, points + torch.tensor([0.0, 0.1, 0.0])).item(), 0.1,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="at least one point"):
        chamfer_distance(points, points, pred_weights=torch.zeros(2))
    with pytest.raises(ValueError, match="non-negative"):
        f_score(points, points, pred_weights=torch.tensor([1.0, -1.0]))


def _unit_cube_mesh() -> tuple[torch.Tensor, torch.Tensor]:
    corners = torch.tensor([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)],
                           dtype=torch.float64)
    faces = []
    for axis in range(3):
        for side in (-1.0, 1.0):
            quad = [i for i in range(8) if corners[i, axis] == side]  # 4 corners of one face, in bit order
            faces += [[quad[0], quad[1], quad[3]], [quad[0], quad[3], quad[2]]]
    return corners, torch.tensor(faces)


def test_surface_samples_lie_on_the_cube_and_cover_it_evenly():
    vertices, faces = _unit_cube_mesh()
    points = sample_surface_points(vertices, faces, 60_000, generator=torch.Generator().manual_seed(6))
    assert points.shape == (60_000, 3)
    np.testing.assert_allclose(points.abs().amax(dim=-1).numpy(), 1.0, rtol=0, atol=1e-12)
    # Each of the 6 sides holds 1/6 of the points, and each of the 24 quarter-squares 1/24 (within 5 sigma).
    side = points.abs().argmax(dim=-1) * 2 + (points.gather(1, points.abs().argmax(dim=-1, keepdim=True))[:, 0] > 0)
    quadrant = ((points > 0).long() * torch.tensor([1, 2, 4])).sum(-1)
    cells = side * 8 + quadrant
    counts = torch.bincount(cells, minlength=48).float()
    counts = counts[counts > 0]
    assert counts.numel() == 24
    expected = 60_000 / 24
    assert (counts - expected).abs().max().item() < 5 * (expected * (1 - 1 / 24)) ** 0.5


def test_surface_samples_follow_triangle_areas_and_fill_triangles_uniformly():
    # Two triangles with areas 1 and 3 (ratio 1:3); in each, the 4 midpoint sub-triangles have equal area.
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 2, 0], [0, 0, 1], [3, 0, 1], [0, 2, 1]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.int32)
    n = 40_000
    points = sample_surface_points(vertices, faces, n, generator=torch.Generator().manual_seed(7))
    upper = points[:, 2] > 0.5
    p = 0.75
    assert abs(upper.float().mean().item() - p) < 5 * (p * (1 - p) / n) ** 0.5
    for mask, width in ((~upper, 1.0), (upper, 3.0)):
        u, v = points[mask, 0] / width, points[mask, 1] / 2.0  # barycentric coordinates of the right triangle
        assert bool((u >= 0).all() and (v >= 0).all() and (u + v <= 1 + 1e-12).all())
        # Sub-triangle index: corner at the origin, at (1,0), at (0,1), or the middle one.
        sub = torch.where(u > 0.5, 1, torch.where(v > 0.5, 2, torch.where(u + v < 0.5, 0, 3)))
        fractions = torch.bincount(sub, minlength=4).double() / mask.sum()
        sigma = (0.25 * 0.75 / mask.sum().item()) ** 0.5
        assert (fractions - 0.25).abs().max().item() < 5 * sigma


def test_surface_sampling_is_reproducible_and_rejects_flat_meshes():
    vertices, faces = _unit_cube_mesh()
    a = sample_surface_points(vertices, faces, 100, generator=torch.Generator().manual_seed(8))
    b = sample_surface_points(vertices, faces, 100, generator=torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="no area"):
        sample_surface_points(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]), 10)
