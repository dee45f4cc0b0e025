"""Geometry metrics for objects: Chamfer distance and F-score between point sets, and mesh surface sampling.

Objects live in [-1, 1]^3 (docs/conventions.md) and distances are in those world units. The predicted set may carry
per-point weights (e.g. Gaussian centres weighted by opacity): a weight scales that point's share of the averages
over the predicted set, and points of weight 0 are left out entirely, also as neighbours of the target points.
Nearest neighbours are found by brute force in blocks (exact distances, memory bounded by ``chunk_pairs``), which
runs anywhere torch runs; on a GPU it handles a few hundred thousand points per side in seconds.
"""

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

DEFAULT_CHUNK_PAIRS = 2**24
"""Point pairs whose distances are held at once: 64 MB in float32."""

DEFAULT_F_SCORE_THRESHOLD = 0.05
"""A common F-score threshold for objects in [-1, 1]^3 (2.5 % of the bounding box side)."""


@dataclass(frozen=True)
class FScore:
    """F-score at a distance threshold, with its two halves (0-dim tensors in [0, 1])."""

    f_score: Tensor
    precision: Tensor
    """(Weighted) fraction of predicted points closer than the threshold to the target set."""
    recall: Tensor
    """Fraction of target points closer than the threshold to the predicted set."""


def nearest_neighbor_distances(
    query: Float[Tensor, "n 3"],
    reference: Float[Tensor, "m 3"],
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> Float[Tensor, " n"]:
    """Euclidean (not squared) distance from each query point to its nearest reference point."""
    if reference.shape[0] == 0:
        raise ValueError("nearest_neighbor_distances: the reference set is empty")
    reference_block = min(reference.shape[0], chunk_pairs)
    query_block = max(1, chunk_pairs // reference_block)
    nearest = []
    for queries in query.split(query_block):
        # The matrix-product form of cdist loses precision for close pairs (|a|^2 + |b|^2 - 2ab): use the direct one.
        blocks = [torch.cdist(queries, refs, compute_mode="donot_use_mm_for_euclid_dist").amin(dim=1)
                  for refs in reference.split(reference_block)]
        nearest.append(torch.stack(blocks).amin(dim=0))
    return torch.cat(nearest) if nearest else query.new_zeros(0)


def _weighted_pred(
    pred: Float[Tensor, "n 3"],
    target: Float[Tensor, "m 3"],
    pred_weights: Float[Tensor, " n"] | None,
) -> tuple[Float[Tensor, "k 3"], Float[Tensor, " k"]]:
    """The predicted points of positive weight, with their weights (all 1 without weights)."""
    if pred.ndim != 2 or pred.shape[-1] != 3 or target.ndim != 2 or target.shape[-1] != 3:
        raise ValueError(f"expected point sets [N, 3] and [M, 3], got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred_weights is None:
        pred_weights = torch.ones_like(pred[:, 0])
    elif pred_weights.shape != pred.shape[:1] or bool((pred_weights < 0).any()):
        raise ValueError(f"pred_weights must be [N] = [{pred.shape[0]}] and non-negative")
    keep = pred_weights > 0
    if not bool(keep.any()) or target.shape[0] == 0:
        raise ValueError("both point sets need at least one point (of positive weight)")
    return pred[keep], pred_weights[keep].to(pred.dtype)


def chamfer_distance(
    pred: Float[Tensor, "n 3"],
    target: Float[Tensor, "m 3"],
    pred_weights: Float[Tensor, " n"] | None = None,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> Float[Tensor, ""]:
    """Symmetric Chamfer distance: the average of the mean nearest-neighbour distances both ways.

    ``0.5 * (sum_p w_p d(p, target) / sum_p w_p + mean_t d(t, pred))`` with d the Euclidean distance, **not
    squared** (the "Chamfer-L1" of single-view reconstruction papers); lower is better. ``pred_weights`` (>= 0)
    weight the first term and remove points of weight 0 from both.
    """
    points, weights = _weighted_pred(pred, target, pred_weights)
    accuracy = (weights * nearest_neighbor_distances(points, target, chunk_pairs)).sum() / weights.sum()
    completeness = nearest_neighbor_distances(target, points, chunk_pairs).mean()
    return 0.5 * (accuracy + completeness)


def f_score(
    pred: Float[Tensor, "n 3"],
    target: Float[Tensor, "m 3"],
    threshold: float = DEFAULT_F_SCORE_THRESHOLD,
    pred_weights: Float[Tensor, " n"] | None = None,
    chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
) -> FScore:
    """F-score (harmonic mean of precision and recall) of points closer than ``threshold`` to the other set.

    ``pred_weights`` (>= 0) weight the precision and remove points of weight 0 from both terms. The F-score is 0
    when precision and recall both are.
    """
    points, weights = _weighted_pred(pred, target, pred_weights)
    pred_close = (nearest_neighbor_distances(points, target, chunk_pairs) < threshold).to(weights.dtype)
    precision = (weights * pred_close).sum() / weights.sum()
    recall = (nearest_neighbor_distances(target, points, chunk_pairs) < threshold).to(weights.dtype).mean()
    total = precision + recall
    f = torch.where(total > 0, 2 * precision * recall / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    return FScore(f_score=f, precision=precision, recall=recall)


def sample_surface_points(
    vertices: Float[Tensor, "vertex 3"],
    faces: Int[Tensor, "face 3"],
    n: int,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "n 3"]:
    """``n`` points uniformly distributed over the area of a triangle mesh.

    A face is drawn with probability proportional to its area, then a point uniformly inside it (a uniform point
    of the unit square, folded onto the triangle along its diagonal). ``generator`` must live on the vertices'
    device.
    """
    if faces.ndim != 2 or faces.shape[-1] != 3 or vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"expected vertices [V, 3] and faces [F, 3], got {tuple(vertices.shape)} and "
                         f"{tuple(faces.shape)}")
    corner_a, corner_b, corner_c = vertices[faces.long()].unbind(dim=1)
    edge_ab, edge_ac = corner_b - corner_a, corner_c - corner_a
    areas = 0.5 * torch.linalg.vector_norm(torch.linalg.cross(edge_ab, edge_ac), dim=-1)
    if not bool(areas.sum() > 0):
        raise ValueError("sample_surface_points: the mesh has no area")
    face = torch.multinomial(areas, n, replacement=True, generator=generator)
    u, v = torch.rand(2, n, 1, generator=generator, dtype=vertices.dtype, device=vertices.device)
    # (u, v) uniform in the unit square; the half with u + v > 1 maps onto the other by point reflection.
    outside = u + v > 1
    u, v = torch.where(outside, 1 - u, u), torch.where(outside, 1 - v, v)
    return corner_a[face] + u * edge_ab[face] + v * edge_ac[face]
