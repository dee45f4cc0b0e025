"""Run a predictor over prepared cases and collect per-item scores, the skipped items and contact-sheet images."""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from diffusiongs.evaluation.predictors import Predictor, synchronize
from diffusiongs.evaluation.protocol import EvalCase, Skipped
from diffusiongs.evaluation.scoring import (
    GeometryConfig,
    GeometryScores,
    ImageScores,
    geometry_scores,
    image_scores,
    mesh_geometry_scores,
)
from diffusiongs.gaussians import Gaussians
from diffusiongs.inference.mesh import MeshConfig, extract_mesh
from diffusiongs.metrics.frechet import frechet_distance
from diffusiongs.metrics.lpips import LPIPS

log = logging.getLogger(__name__)

IMAGE_METRICS = ("psnr", "ssim", "lpips")
GEOMETRY_METRICS = ("chamfer", "f_score", "precision", "recall")
MESH_METRICS = tuple(f"mesh_{name}" for name in GEOMETRY_METRICS)
"""The same scores of the mesh extracted from the Gaussians (``evaluate --mesh``)."""


@dataclass(frozen=True)
class ItemResult:
    """Scores of one item: image metrics are means over its target views (per view in ``views``)."""

    item_id: str
    target_views: tuple[int, ...]
    psnr: float
    ssim: float
    lpips: float | None
    """None when LPIPS weights are absent."""
    chamfer: float | None
    """Geometry is None without surface samples or without predicted Gaussians (image-only baselines)."""
    f_score: float | None
    precision: float | None
    recall: float | None
    num_points: int | None
    """Gaussians that took part in the geometry metrics."""
    seconds: float
    """Generation time."""
    views: dict[str, list[float] | None]
    """``psnr``/``ssim``/``lpips`` of every target view."""
    mesh_chamfer: float | None = None
    """Mesh scores are None unless a mesh was extracted and the item has surface samples."""
    mesh_f_score: float | None = None
    mesh_precision: float | None = None
    mesh_recall: float | None = None
    mesh_faces: int | None = None
    mesh_seconds: float | None = None
    """Extraction time of the mesh (device synchronised)."""


@dataclass(frozen=True)
class SheetEntry:
    """Images of one item for the contact sheet (a subset of its target views)."""

    item_id: str
    condition: Float[Tensor, "3 h w"]
    targets: Float[Tensor, "s 3 h w"]
    renders: Float[Tensor, "s 3 h w"]


@dataclass
class EvalResult:
    """Everything an evaluation produced; ``info`` holds the settings the report states."""

    items: list[ItemResult] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    sheet: list[SheetEntry] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    embeddings: dict[str, list[Tensor]] = field(default_factory=lambda: {"renders": [], "targets": []})
    """VGG16 embeddings of every scored view (with LPIPS weights only), for the FD-VGG16 distance."""

    def fd_vgg(self) -> float | None:
        """FD-VGG16 between all predicted and all ground-truth target views (:mod:`diffusiongs.metrics.frechet`);
        None without LPIPS weights or with fewer than two views."""
        renders, targets = (torch.cat(self.embeddings[k]) if self.embeddings[k] else None
                            for k in ("renders", "targets"))
        if renders is None or len(renders) < 2:
            return None
        return frechet_distance(renders.numpy(), targets.numpy())

    def summary(self) -> dict[str, Any]:
        """Means over scored items (geometry over items that have it; None where nothing was measured)."""
        out: dict[str, Any] = {"items": len(self.items), "skipped": len(self.skipped),
                               "views": sum(len(i.target_views) for i in self.items)}
        for name in (*IMAGE_METRICS, *GEOMETRY_METRICS):
            values = [getattr(i, name) for i in self.items]
            present = [v for v in values if v is not None]
            # LPIPS is all-or-nothing (weights present or not); geometry is averaged where it exists.
            out[name] = _mean(present) if present and (name in GEOMETRY_METRICS or len(present) == len(values)) \
                else None
        out["geometry_items"] = sum(i.chamfer is not None for i in self.items)
        out["fd_vgg"] = self.fd_vgg()
        meshed = [i for i in self.items if i.mesh_chamfer is not None]
        if meshed:
            out.update({name: _mean([getattr(i, name) for i in meshed]) for name in MESH_METRICS})
            out["mesh_items"] = len(meshed)
            out["mesh_seconds_median"] = statistics.median(i.mesh_seconds for i in meshed)
        seconds = [i.seconds for i in self.items]
        out["seconds_mean"] = _mean(seconds) if seconds else None
        out["seconds_median"] = statistics.median(seconds) if seconds else None
        out["psnr_by_view"] = self.psnr_by_view()
        return out

    def psnr_by_view(self) -> dict[str, float]:
        """Mean PSNR of each target view index over the items that score it (e.g. by azimuth on the orbit)."""
        by_view: dict[int, list[float]] = {}
        for item in self.items:
            for view, value in zip(item.target_views, item.views["psnr"]):
                by_view.setdefault(view, []).append(value)
        return {str(v): _mean(by_view[v]) for v in sorted(by_view)}


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def sheet_indices(num_targets: int, count: int) -> list[int]:
    """``count`` target indices spread evenly over ``num_targets`` (all of them when there are fewer)."""
    if count >= num_targets:
        return list(range(num_targets))
    return sorted({round(k * (num_targets - 1) / max(count - 1, 1)) for k in range(count)})


def _mesh_scores(gaussians: Gaussians, surface: Float[Tensor, "p 3"], geometry: GeometryConfig, mesh: MeshConfig
                 ) -> tuple[GeometryScores, int, float]:
    """Extract a mesh from the Gaussians and score it; returns the scores, its face count and the extraction time
    (the mesh ends on the CPU, so the clock stops after the device's work)."""
    synchronize(gaussians.device)
    start = time.perf_counter()
    extracted = extract_mesh(gaussians, mesh)
    seconds = time.perf_counter() - start
    return mesh_geometry_scores(extracted, surface, geometry), extracted.num_faces, seconds


def score_case(case: EvalCase, predictor: Predictor, lpips: LPIPS | None,
               geometry: GeometryConfig | None, mesh: MeshConfig | None = None
               ) -> tuple[ItemResult, Float[Tensor, "t 3 h w"], ImageScores]:
    """Predict one case and score it; returns the result, the predicted target views (on the CPU) and the
    per-view image scores (with the FD-VGG16 embeddings).

    With ``mesh`` (and geometry, surface samples and Gaussians) a mesh is extracted and scored as well."""
    prediction = predictor.predict(case)
    renders = prediction.renders.detach().float().cpu()
    images = image_scores(renders, case.targets, lpips)
    geo = None
    mesh_extra: dict[str, float | int | None] = {}
    if geometry is not None and case.surface is not None and prediction.gaussians is not None:
        geo = geometry_scores(prediction.gaussians, case.surface, geometry)
        if mesh is not None:
            mesh_geo, faces, seconds = _mesh_scores(prediction.gaussians, case.surface, geometry, mesh)
            mesh_extra = {"mesh_chamfer": mesh_geo.chamfer, "mesh_f_score": mesh_geo.f_score,
                          "mesh_precision": mesh_geo.precision, "mesh_recall": mesh_geo.recall,
                          "mesh_faces": faces, "mesh_seconds": seconds}
    result = ItemResult(
        item_id=case.item_id, target_views=case.target_views, psnr=_mean(images.psnr), ssim=_mean(images.ssim),
        lpips=None if images.lpips is None else _mean(images.lpips),
        chamfer=None if geo is None else geo.chamfer, f_score=None if geo is None else geo.f_score,
        precision=None if geo is None else geo.precision, recall=None if geo is None else geo.recall,
        num_points=None if geo is None else geo.num_points, seconds=prediction.seconds,
        views={"psnr": images.psnr, "ssim": images.ssim, "lpips": images.lpips}, **mesh_extra)
    return result, renders, images


def evaluate(predictor: Predictor, cases: Iterable[EvalCase | Skipped], lpips: LPIPS | None = None,
             geometry: GeometryConfig | None = GeometryConfig(), sheet_items: int = 4, sheet_views: int = 5,
             progress: bool = False, total: int | None = None, mesh: MeshConfig | None = None) -> EvalResult:
    """Score every case; :class:`Skipped` entries are collected (their loader already logged them).

    Args:
        lpips: an LPIPS-VGG module (:func:`diffusiongs.metrics.load_lpips`), or None to report LPIPS as n/a.
        geometry: how to score geometry, or None to skip it.
        mesh: also extract a mesh from the Gaussians and score its geometry (needs ``geometry``), or None.
        sheet_items, sheet_views: the first ``sheet_items`` scored items and ``sheet_views`` of their targets go
            to the contact sheet.
        progress, total: show a progress bar; ``total`` cases (:func:`~diffusiongs.evaluation.protocol.case_count`)
            gives it a percentage and an ETA.
    """
    result = EvalResult(info=dict(predictor.describe()))
    # Log lines (skipped items) print above the bar instead of being glued to its line.
    with logging_redirect_tqdm():
        for case in tqdm(cases, desc="evaluate", unit="item", total=total, disable=not progress):
            if isinstance(case, Skipped):
                result.skipped.append(case)
                continue
            item, renders, images = score_case(case, predictor, lpips, geometry, mesh)
            result.items.append(item)
            if images.pred_embeddings is not None:
                result.embeddings["renders"].append(images.pred_embeddings)
                result.embeddings["targets"].append(images.target_embeddings)
            log.info("%s: PSNR %.2f SSIM %.4f", item.item_id, item.psnr, item.ssim)
            if len(result.sheet) < sheet_items:
                chosen = sheet_indices(len(case.target_views), sheet_views)
                result.sheet.append(SheetEntry(case.item_id, case.condition.cpu(), case.targets[chosen].cpu(),
                                               renders[chosen]))
    return result
