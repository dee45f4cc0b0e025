"""DiffusionGS as a whole: network + Gaussian decoders + renderer (the x0 predictor), its config and presets."""

from diffusiongs.system.model import DiffusionGS, GaussianPrediction, ModelConfig
from diffusiongs.system.presets import PRESETS, preset

__all__ = ["PRESETS", "DiffusionGS", "GaussianPrediction", "ModelConfig", "preset"]
