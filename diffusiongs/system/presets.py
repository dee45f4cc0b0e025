"""Named model presets."""

from __future__ import annotations

from dataclasses import replace

from diffusiongs.gaussians import DECODE_PRESETS
from diffusiongs.model.denoiser import DenoiserConfig
from diffusiongs.system.model import ModelConfig

PRESETS: dict[str, ModelConfig] = {
    # CPU tests: a few hundred thousand parameters.
    "tiny": ModelConfig(denoiser=DenoiserConfig(width=64, depth=2, num_heads=2), resolution=32),
    # The demo model shipped in the repo: trained on procedural objects, sampled on CPU at 128 px.
    "small": ModelConfig(denoiser=DenoiserConfig(width=320, depth=10, num_heads=5), resolution=128),
    # The official size (~460 M parameters): width 1024, depth 24, 16 heads, patch 8.
    "base": ModelConfig(denoiser=DenoiserConfig(width=1024, depth=24, num_heads=16), resolution=256),
    # The released Open-DiffusionGS object model's architecture (loads converted official checkpoints).
    "official-object": ModelConfig(
        denoiser=DenoiserConfig(width=1024, depth=24, num_heads=16, num_global_tokens=2, position_embedding="none",
                                decoders=("object",)),
        ray_embedding="rppc", object_decode=DECODE_PRESETS["object_official"],
        scene_decode=DECODE_PRESETS["scene_official"], resolution=512),
    # The released scene models: plain Plücker rays, u = 500 sigmoid(raw).
    "official-scene": ModelConfig(
        denoiser=DenoiserConfig(width=1024, depth=24, num_heads=16, num_global_tokens=2, position_embedding="none",
                                decoders=("scene",)),
        ray_embedding="plucker", object_decode=DECODE_PRESETS["object_official"],
        scene_decode=DECODE_PRESETS["scene_official"], resolution=256),
}


def preset(name: str, **denoiser_overrides) -> ModelConfig:
    """A named preset, optionally with some denoiser fields replaced (e.g. ``depth=1`` in tests)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}'; choose one of {sorted(PRESETS)}")
    cfg = PRESETS[name]
    if denoiser_overrides:
        cfg = replace(cfg, denoiser=replace(cfg.denoiser, **denoiser_overrides))
    return cfg
