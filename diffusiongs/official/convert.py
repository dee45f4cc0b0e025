"""Official Open-DiffusionGS checkpoints -> our model (config + state dict), in memory or as a model folder.

    file --safe_load--> tensors --layout--> architecture + key map --frames--> folded weights --> ModelConfig

The result is the preset ``official-object``/``official-scene`` sized by the weights. For objects, the camera rig
of the official template (``camera_template.pt``, or the built-in rebuild of it) becomes ``object_rig`` and the
template's world map is folded into the weights (see ``diffusiongs.official.cameras``), so ``Pipeline`` needs nothing
official-specific. Every official tensor must land on a parameter of the same shape; anything else is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from diffusiongs.errors import InputError
from diffusiongs.official.cameras import (
    OFFICIAL_TEMPLATE_RESOLUTION,
    TemplateFit,
    builtin_camera_template,
    fit_camera_template,
    load_camera_template,
)
from diffusiongs.official.frames import (
    fold_into_head,
    fold_into_tokenizer,
    official_pixel_from_ours,
    our_raw_from_official,
)
from diffusiongs.official.layout import (
    GLOBAL_TOKENS,
    HEAD_OUTPUTS,
    TOKENIZER,
    OfficialArchitecture,
    OfficialKind,
    OfficialWeights,
    extract_official_weights,
    infer_architecture,
    our_key,
)
from diffusiongs.official.safe_load import read_torch_file
from diffusiongs.official.yaml_config import architecture_with_config
from diffusiongs.system import PRESETS, DiffusionGS, ModelConfig
from diffusiongs.system.io import export_model

DEFAULT_RESOLUTION: dict[OfficialKind, int] = {"object": OFFICIAL_TEMPLATE_RESOLUTION, "scene": 256}
"""Image side per kind when neither given nor named by the file: that of ``obj_ckpt_512`` and ``scene_ckpt_256``."""
RELEASED_NAME = re.compile(r"(?:obj|scene)_ckpt_(256|512)")
"""The released files name their training resolution: ``obj_ckpt_512``, ``scene_ckpt_256``, ``scene_ckpt_512``. Only
these names count: a number in another name (a training step, say) is not a resolution."""
PRESET_NAMES: dict[OfficialKind, str] = {"object": "official-object", "scene": "official-scene"}


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion found and decided (printed by the CLI)."""

    architecture: OfficialArchitecture
    """The network the weights describe."""
    dropped_loss_tensors: int
    """Tensors of the frozen loss networks left out."""
    template: TemplateFit | None
    """The object rig fit (None for scene models)."""
    resolution: int
    """The model's image side."""


def _model_config(arch: OfficialArchitecture, resolution: int, template: TemplateFit | None) -> ModelConfig:
    base = PRESETS[PRESET_NAMES[arch.kind]]
    denoiser = replace(base.denoiser, width=arch.width, depth=arch.depth, num_heads=arch.num_heads,
                       mlp_ratio=arch.mlp_ratio, patch_size=arch.patch_size, num_global_tokens=arch.num_global_tokens)
    cfg = replace(base, denoiser=denoiser, resolution=resolution, ray_embedding=arch.ray_embedding)
    return replace(cfg, object_rig=template.rig) if template is not None else cfg


def map_official_weights(weights: OfficialWeights, arch: OfficialArchitecture, cfg: ModelConfig,
                         official_from_ours: Tensor, path: Path) -> dict[str, Tensor]:
    """Our state dict from the official tensors: renamed, the global-token embedding reshaped to ``[G, d]``, and
    the ray-channel order and world map folded into the tokenizer and heads (``diffusiongs.official.frames``).

    Raises:
        InputError: an official key has no counterpart, a parameter has no official tensor, or shapes differ.
    """
    decoder = cfg.denoiser.decoders[0]
    with torch.device("meta"):
        expected = {k: v.shape for k, v in DiffusionGS(cfg).state_dict().items()}
    pixel_map = official_pixel_from_ours(cfg.ray_embedding, official_from_ours)
    state = {}
    for key, value in weights.tensors.items():
        name = our_key(key, decoder)
        if name is None or name not in expected:
            raise InputError(f"{path}: '{weights.source_keys[key]}' has no counterpart in the "
                             f"{PRESET_NAMES[arch.kind]} model")
        if key == GLOBAL_TOKENS:
            value = value.reshape(value.shape[-2:])  # the scene model stores [1, G, d]
        if value.shape != expected[name]:
            raise InputError(f"{path}: '{weights.source_keys[key]}' has shape {list(value.shape)}, expected "
                             f"{list(expected[name])} for a {arch.width}-wide model with patch {arch.patch_size}")
        if key == TOKENIZER:
            value = fold_into_tokenizer(value, pixel_map)
        elif key in HEAD_OUTPUTS:
            value = fold_into_head(value, our_raw_from_official(official_from_ours, free=HEAD_OUTPUTS[key]))
        state[name] = value.float().contiguous()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise InputError(f"{path}: no weights for {missing[:3]}{' ...' if len(missing) > 3 else ''} "
                         f"(the checkpoint is incomplete)")
    return state


def default_resolution(path: Path, kind: OfficialKind) -> int:
    """The image side a checkpoint was trained at, when the caller does not give it: the number in a released file
    name (``scene_ckpt_512.ckpt`` -> 512), else the kind's default (:data:`DEFAULT_RESOLUTION`). The weights cannot
    tell: the position embedding is computed, not learned."""
    named = RELEASED_NAME.fullmatch(path.stem)
    return int(named.group(1)) if named else DEFAULT_RESOLUTION[kind]


def _template_fit(camera_template: Path | None, tolerance_deg: float) -> TemplateFit:
    if camera_template is None:
        return fit_camera_template(builtin_camera_template(), tolerance_deg, "built-in camera template")
    return fit_camera_template(load_camera_template(camera_template), tolerance_deg, str(camera_template))


def convert_official(path: str | Path, kind: OfficialKind | None = None, resolution: int | None = None,
                     camera_template: str | Path | None = None, template_tolerance_deg: float = 0.5,
                     config: str | Path | None = None) -> tuple[ModelConfig, dict[str, Tensor], ConversionReport]:
    """:func:`load_official_checkpoint` with a report of what was found (architecture, dropped tensors, rig fit)."""
    path = Path(path)
    weights = extract_official_weights(read_torch_file(path), path)
    arch = architecture_with_config(infer_architecture(weights, path), path, config)
    if kind is not None and kind != arch.kind:
        raise InputError(f"{path}: --kind {kind} was asked for, but the weights are the official {arch.kind} model's "
                         f"('{weights.source_keys[GLOBAL_TOKENS]}' is {list(weights.tensors[GLOBAL_TOKENS].shape)})")
    resolution = default_resolution(path, arch.kind) if resolution is None else resolution
    if resolution <= 0 or resolution % arch.patch_size:
        raise InputError(f"--resolution {resolution}: must be a positive multiple of the patch size {arch.patch_size}")
    if arch.kind == "scene" and camera_template is not None:
        raise InputError(f"{camera_template}: camera templates are for the object model; scene models take the "
                         "cameras of the scene")
    template = _template_fit(Path(camera_template) if camera_template else None, template_tolerance_deg) \
        if arch.kind == "object" else None
    cfg = _model_config(arch, resolution, template)
    official_from_ours = template.official_from_ours if template is not None else torch.eye(3, dtype=torch.float64)
    state = map_official_weights(weights, arch, cfg, official_from_ours, path)
    return cfg, state, ConversionReport(architecture=arch, dropped_loss_tensors=weights.dropped, template=template,
                                         resolution=resolution)


def load_official_checkpoint(path: str | Path, kind: OfficialKind | None = None, resolution: int | None = None,
                             camera_template: str | Path | None = None, template_tolerance_deg: float = 0.5,
                             config: str | Path | None = None) -> tuple[ModelConfig, dict[str, Tensor]]:
    """Read an official checkpoint (``obj_ckpt_512.ckpt``, ``scene_ckpt_256.ckpt``, ...) as our model, in memory.

    Nothing in the file is executed (``diffusiongs.official.safe_load``).

    Args:
        path: a Lightning checkpoint (``state_dict`` with ``shape_model.*``) or the internal format (``model`` with
            ``denoiser.*``).
        kind: ``object`` or ``scene``; None reads it off the weights (and a mismatch is refused).
        resolution: the model's image side; None takes it from a released file name (``scene_ckpt_512``), else
            512 (object) or 256 (scene).
        camera_template: the official ``camera_template.pt`` (objects); None rebuilds it from the training
            conventions.
        template_tolerance_deg: how far the template's cameras may be from an orbit a model config can hold.
        config: the YAML config released with the checkpoint (``obj_configs.yaml``): the head count and the ray
            embedding are taken from it, and its sizes must agree with the weights. None uses ``<name>.yaml`` or
            ``<prefix>_configs.yaml`` beside the checkpoint when there is one, else the released models' values
            (heads = width / 64; RPPC for objects, Plücker for scenes).

    Returns:
        The model config and a float32 state dict that ``DiffusionGS(cfg).load_state_dict(state, strict=True)``
        accepts.
    """
    cfg, state, _ = convert_official(path, kind, resolution, camera_template, template_tolerance_deg, config)
    return cfg, state


def convert_official_checkpoint(path: str | Path, out: str | Path, kind: OfficialKind | None = None,
                                resolution: int | None = None, camera_template: str | Path | None = None,
                                template_tolerance_deg: float = 0.5, config: str | Path | None = None
                                ) -> tuple[Path, ConversionReport]:
    """Convert an official checkpoint into a model folder (``config.json`` + ``model.safetensors``)."""
    cfg, state, report = convert_official(path, kind, resolution, camera_template, template_tolerance_deg, config)
    return export_model(Path(out), cfg, state), report
