"""Scores of one evaluated item: image metrics per target view, geometry of the predicted Gaussians (and of a mesh
extracted from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.inference.mesh import ColoredMesh, sample_mesh_points
from diffusiongs.metrics import chamfer_distance, f_score, psnr, ssim
from diffusiongs.metrics.frechet import pooled_embeddings
from diffusiongs.metrics.geometry import DEFAULT_F_SCORE_THRESHOLD
from diffusiongs.metrics.lpips import LPIPS

LPIPS_CHUNK = 8
"""Views per LPIPS call (VGG16 at 256^2 holds ~0.5 GB of activations per view)."""


@dataclass(frozen=True)
class GeometryConfig:
    """Chamfer distance and F-score between the predicted Gaussians and the ground-truth surface samples."""

    f_score_threshold: float = DEFAULT_F_SCORE_THRESHOLD
    """F-score distance threshold in world units (objects fill [-1, 1]^3: 0.05 is 2.5 % of the box side)."""
    min_opacity: float = 0.02
    """Gaussians at or below this opacity are dropped (the official exporter's threshold); the others count with
    their opacity as weight in the prediction-to-surface terms (precision, accuracy)."""
    max_points: int = 20_000
    """Random subsets (seeded) of at most this many Gaussians and surface points bound the exact (brute-force)
    nearest-neighbour search at max_points^2 distance pairs per direction."""
    seed: int = 0
    """Seed of those subsets."""


@dataclass(frozen=True)
class ImageScores:
    """Per target view, in the order of the case's targets (``lpips`` and the embeddings None without LPIPS
    weights)."""

    psnr: list[float]
    ssim: list[float]
    lpips: list[float] | None
    pred_embeddings: Float[Tensor, "t 512"] | None = None
    """FD-VGG16's embedding of each predicted view (:func:`~diffusiongs.metrics.frechet.pooled_embeddings`)."""
    target_embeddings: Float[Tensor, "t 512"] | None = None


@dataclass(frozen=True)
class GeometryScores:
    chamfer: float
    """Symmetric Chamfer-L1 (mean of the two mean nearest-neighbour distances), world units."""
    f_score: float
    precision: float
    recall: float
    num_points: int
    """Gaussians that took part (after the opacity cut and the subset), or points sampled on a mesh."""


NOTHING_PREDICTED = GeometryScores(chamfer=math.inf, f_score=0.0, precision=0.0, recall=0.0, num_points=0)


@torch.no_grad()
def image_scores(pred: Float[Tensor, "t 3 h w"], target: Float[Tensor, "t 3 h w"],
                 lpips: LPIPS | None) -> ImageScores:
    """PSNR, SSIM, LPIPS-VGG and the FD-VGG16 embeddings of every target view, all on the images clamped to
    [0, 1] (as they are saved); VGG16 runs once per image for both LPIPS and the embeddings."""
    pred, target = pred.clamp(0, 1), target.clamp(0, 1)
    scores = ImageScores(psnr=psnr(pred, target).tolist(), ssim=ssim(pred, target).tolist(), lpips=None)
    if lpips is None:
        return scores
    device = next(lpips.parameters()).device
    distances, pred_embeddings, target_embeddings = [], [], []
    for p, t in zip(pred.split(LPIPS_CHUNK), target.split(LPIPS_CHUNK)):
        chunk_distances, taps = lpips.distances_and_taps(p.to(device), t.to(device))
        distances.append(chunk_distances.cpu())
        chunk_pred, chunk_target = pooled_embeddings(taps[-1]).chunk(2)
        pred_embeddings.append(chunk_pred)
        target_embeddings.append(chunk_target)
    return replace(scores, lpips=torch.cat(distances).tolist(), pred_embeddings=torch.cat(pred_embeddings),
                   target_embeddings=torch.cat(target_embeddings))


def _subset(count: int, limit: int, generator: torch.Generator) -> Tensor | None:
    return None if count <= limit else torch.randperm(count, generator=generator)[:limit]


@torch.no_grad()
def geometry_scores(gaussians: Gaussians, surface: Float[Tensor, "p 3"], cfg: GeometryConfig) -> GeometryScores:
    """Opacity-weighted Gaussian centres against surface samples (both in one world frame, on any device).

    Without any Gaussian above ``min_opacity`` nothing was predicted: Chamfer is inf and the F-score 0.
    """
    keep = gaussians.opacities > cfg.min_opacity
    means, weights = gaussians.means[keep].float(), gaussians.opacities[keep].float()
    if len(means) == 0:
        return NOTHING_PREDICTED
    generator = torch.Generator().manual_seed(cfg.seed)
    chosen = _subset(len(means), cfg.max_points, generator)
    if chosen is not None:
        means, weights = means[chosen.to(means.device)], weights[chosen.to(means.device)]
    return _point_scores(means, weights, surface, cfg, generator)


@torch.no_grad()
def mesh_geometry_scores(mesh: ColoredMesh, surface: Float[Tensor, "p 3"], cfg: GeometryConfig) -> GeometryScores:
    """``cfg.max_points`` points drawn uniformly over the mesh's area (seeded), all of weight 1, against the
    surface samples, which are subset as in :func:`geometry_scores` (the same points when there are at most
    ``max_points``). An empty mesh scores as nothing predicted: Chamfer inf, F-score 0."""
    if mesh.num_faces == 0:
        return NOTHING_PREDICTED
    generator = torch.Generator().manual_seed(cfg.seed)
    points = sample_mesh_points(mesh, cfg.max_points, generator)
    return _point_scores(points, None, surface, cfg, generator)


def _point_scores(points: Float[Tensor, "n 3"], weights: Float[Tensor, " n"] | None, surface: Float[Tensor, "p 3"],
                  cfg: GeometryConfig, generator: torch.Generator) -> GeometryScores:
    surface = surface.to(points.device, torch.float32)
    chosen = _subset(len(surface), cfg.max_points, generator)
    if chosen is not None:
        surface = surface[chosen.to(surface.device)]
    fs = f_score(points, surface, cfg.f_score_threshold, pred_weights=weights)
    return GeometryScores(chamfer=float(chamfer_distance(points, surface, pred_weights=weights)),
                          f_score=float(fs.f_score), precision=float(fs.precision), recall=float(fs.recall),
                          num_points=len(points))
