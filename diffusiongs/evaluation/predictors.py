"""What the evaluation scores: a model (diffusion or the deterministic "w/o timestep" baseline) or a baseline that
needs no model."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.diffusion import SamplerConfig
from diffusiongs.evaluation.protocol import EvalCase
from diffusiongs.gaussians import Gaussians
from diffusiongs.inference.pipeline import GenerateConfig, Pipeline

RENDER_CHUNK = 8
"""Target views rendered per call."""


@dataclass(frozen=True)
class Prediction:
    """A predictor's answer for one case.

    Attributes:
        renders: the target views, RGB (about [0, 1]; the metrics clamp), ``[t, 3, h, w]``.
        gaussians: the raw (unfiltered) Gaussians in the case's world, or None for image-only baselines.
        seconds: wall-clock time of the generation (sampling, with the device synchronised), not of the renders.
    """

    renders: Float[Tensor, "t 3 h w"]
    gaussians: Gaussians | None
    seconds: float


class Predictor(Protocol):
    def describe(self) -> dict[str, Any]:
        """The method and its settings, for the report."""
        ...

    def predict(self, case: EvalCase) -> Prediction: ...


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that wall-clock times are the work's."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ModelPredictor:
    """Generates with a loaded model from the case's condition view and rig, then renders the target views.

    A deterministic model (``ModelConfig.deterministic``) predicts in one pass and ignores the sampler and seed.
    """

    def __init__(self, pipeline: Pipeline, sampler: SamplerConfig = SamplerConfig(), seed: int = 0):
        self.pipeline = pipeline
        self.generate_cfg = GenerateConfig(sampler=sampler, seed=seed)

    def describe(self) -> dict[str, Any]:
        if self.pipeline.cfg.deterministic:
            return {"method": "deterministic (w/o timestep)", "sampler": "none (one pass)", "steps": 1, "seed": None}
        sampler = self.generate_cfg.sampler
        return {"method": "diffusion", "sampler": sampler.name, "steps": sampler.num_steps, "eta": sampler.eta,
                "seed": self.generate_cfg.seed}

    @torch.no_grad()
    def predict(self, case: EvalCase) -> Prediction:
        pipeline = self.pipeline
        synchronize(pipeline.device)
        start = time.perf_counter()
        gaussians, _ = pipeline.generate_from_condition(case.condition, case.rig.to(pipeline.device), self.generate_cfg,
                                                        is_object=case.domain == "object")
        synchronize(pipeline.device)
        seconds = time.perf_counter() - start
        cameras = case.target_cameras.to(pipeline.device)
        renders = [pipeline.model.render(gaussians[None], cameras[i:i + RENDER_CHUNK].reshape(1, -1),
                                         pipeline.render_cfg).rgb[0]
                   for i in range(0, cameras.batch_shape[0], RENDER_CHUNK)]
        return Prediction(renders=torch.cat(renders).float(), gaussians=gaussians.float(), seconds=seconds)


class CopyConditionPredictor:
    """The trivial baseline: every target view is predicted to look like the condition view."""

    def describe(self) -> dict[str, Any]:
        return {"method": "copy-condition (baseline)", "sampler": "none", "steps": 0, "seed": None}

    def predict(self, case: EvalCase) -> Prediction:
        renders = case.condition[None].expand_as(case.targets).clone()
        return Prediction(renders=renders, gaussians=None, seconds=0.0)
