"""Evaluation with the paper's protocol (docs/RESULTS.md): generate from one view of each held-out item, render
the other views, score them (PSNR, SSIM, LPIPS-VGG) and the Gaussians' geometry (Chamfer distance, F-score).

Modules:
    protocol     which views are input and targets, the noisy-view rig, cases prepared from a NativeReader
    predictors   a model (diffusion or deterministic) or the copy-condition baseline
    scoring      image metrics per view, geometry against surface samples
    runner       evaluate(): predict and score every case, collect skipped items and contact-sheet images
    report       items.csv, views.csv, summary.json, report.md, contact_sheet.png
"""

from diffusiongs.evaluation.predictors import CopyConditionPredictor, ModelPredictor, Prediction, Predictor
from diffusiongs.evaluation.protocol import (
    EvalCase,
    ProtocolConfig,
    Skipped,
    case_count,
    describe_protocol,
    iter_cases,
    load_case,
    open_reader,
)
from diffusiongs.evaluation.report import write_report
from diffusiongs.evaluation.runner import EvalResult, ItemResult, evaluate
from diffusiongs.evaluation.scoring import GeometryConfig, geometry_scores, image_scores

__all__ = [
    "CopyConditionPredictor", "EvalCase", "EvalResult", "GeometryConfig", "ItemResult", "ModelPredictor",
    "Prediction", "Predictor", "ProtocolConfig", "Skipped", "case_count", "describe_protocol", "evaluate",
    "geometry_scores", "image_scores", "iter_cases", "load_case", "open_reader", "write_report",
]
