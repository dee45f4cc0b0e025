"""The YAML config released beside an official checkpoint (``obj_configs.yaml``; the repository's
``diffusionGS/configs/diffusionGS_*.yaml``): what it says about the network, checked against the weights.

The files are OmegaConf YAML (reference §7). The network is described by::

    system:
      shape_model_type: diffusion-gs-model          # objects; diffusion-gs-model-scene for scenes
      shape_model:
        width: 1024
        in_channels: 9                               # RGB + 6 ray channels
        patch_size: 8
        n_gaussians: 2                               # global tokens
        dim_heads: 64                                # heads = width / dim_heads
        num_layers: 24
        ray_pe_type: plk                             # scenes; absent in the object configs (class default
                                                     # relative_plk)
        range_setting_near: 0                        # scenes: u = 500 sigmoid(raw)
        range_setting_far: 500

The file is parsed with ``yaml.safe_load``, which builds plain values only. OmegaConf interpolations (``${...}``)
stay strings; a value the converter needs that is not a plain number is refused.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffusiongs.errors import InputError
from diffusiongs.geometry import RayEmbedding
from diffusiongs.official.layout import OFFICIAL_HEAD_WIDTH, OfficialArchitecture, OfficialKind

log = logging.getLogger(__name__)

RAY_PE_TYPES: dict[str, RayEmbedding] = {"relative_plk": "rppc", "plk": "plucker"}
"""``ray_pe_type`` -> our ray embedding (``relative_plk`` is RPPC in the official channel order)."""
DEFAULT_RAY_PE_TYPE = "relative_plk"
"""``DGSDenoiser``'s default, which the object configs leave in place."""
SHAPE_MODEL_TYPES: dict[str, OfficialKind] = {"diffusion-gs-model": "object", "diffusion-gs-model-scene": "scene"}
SCENE_DEPTH_RANGE = (0.0, 500.0)
"""``(range_setting_near, range_setting_far)`` of the released scene configs: the only range the converter maps
(onto u = 500 sigmoid(raw), ``DECODE_PRESETS["scene_official"]``)."""
SHAPE_MODEL = "system.shape_model"


@dataclass(frozen=True)
class OfficialYaml:
    """The network an official YAML config describes."""

    path: Path
    kind: OfficialKind | None
    """From ``shape_model_type``; None when the file does not name it."""
    width: int
    depth: int
    num_heads: int
    patch_size: int
    num_global_tokens: int
    ray_embedding: RayEmbedding


def find_official_yaml(checkpoint: Path) -> Path | None:
    """The YAML config beside ``checkpoint`` in the official layout: ``<name>.yaml``, or ``<prefix>_configs.yaml``
    for ``<prefix>_*.ckpt`` (the Hugging Face repo ships ``obj_configs.yaml`` beside ``obj_ckpt_512.ckpt``)."""
    prefix = checkpoint.stem.split("_")[0]
    candidates = [checkpoint.with_suffix(".yaml"), checkpoint.with_name(f"{prefix}_configs.yaml")]
    return next((c for c in candidates if c.is_file()), None)


def _load_yaml(path: Path) -> Any:
    try:
        import yaml
    except ImportError:
        raise InputError(f"{path}: reading official YAML configs needs PyYAML: pip install 'diffusiongs[official]'") \
            from None
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise InputError(f"{path}: not a readable YAML file ({str(err).splitlines()[0]})") from None


def _integer(model: dict, key: str, path: Path, default: int | None = None) -> int:
    value = model.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InputError(f"{path}: {SHAPE_MODEL}.{key} must be a positive integer, got {value!r}")
    return value


def read_official_yaml(path: Path) -> OfficialYaml:
    """Parse the network description of an official YAML config.

    Raises:
        InputError: the file is unreadable, has no ``system.shape_model``, or holds values the converter cannot use.
    """
    root = _load_yaml(path)
    system = root.get("system") if isinstance(root, dict) else None
    model = system.get("shape_model") if isinstance(system, dict) else None
    if not isinstance(model, dict):
        raise InputError(f"{path}: no '{SHAPE_MODEL}' section (is this an Open-DiffusionGS config?)")
    type_name = system.get("shape_model_type")
    if type_name is not None and type_name not in SHAPE_MODEL_TYPES:
        raise InputError(f"{path}: system.shape_model_type {type_name!r} is not one of {sorted(SHAPE_MODEL_TYPES)}")
    ray_pe = model.get("ray_pe_type", DEFAULT_RAY_PE_TYPE)
    if ray_pe not in RAY_PE_TYPES:
        raise InputError(f"{path}: {SHAPE_MODEL}.ray_pe_type {ray_pe!r} is not one of {sorted(RAY_PE_TYPES)}")
    in_channels = _integer(model, "in_channels", path, default=9)
    if in_channels != 9:
        raise InputError(f"{path}: {SHAPE_MODEL}.in_channels is {in_channels}; the official models take 9 (RGB and "
                         "6 ray channels)")
    width, head_dim = _integer(model, "width", path), _integer(model, "dim_heads", path)
    if width % head_dim:
        raise InputError(f"{path}: {SHAPE_MODEL}.width {width} is not a multiple of dim_heads {head_dim}")
    kind = SHAPE_MODEL_TYPES.get(type_name)
    if kind == "scene":
        depth_range = (model.get("range_setting_near", 0), model.get("range_setting_far", 500))
        if depth_range != SCENE_DEPTH_RANGE:
            raise InputError(f"{path}: {SHAPE_MODEL}.range_setting_near/far are {list(depth_range)}; the converter "
                             f"maps only the released {list(SCENE_DEPTH_RANGE)} (u = 500 sigmoid)")
    return OfficialYaml(path=path, kind=kind, width=width, depth=_integer(model, "num_layers", path),
                        num_heads=width // head_dim, patch_size=_integer(model, "patch_size", path),
                        num_global_tokens=_integer(model, "n_gaussians", path), ray_embedding=RAY_PE_TYPES[ray_pe])


def apply_official_yaml(arch: OfficialArchitecture, config: OfficialYaml, checkpoint: Path) -> OfficialArchitecture:
    """The architecture read off the weights with the heads and ray embedding the YAML states (the weights cannot
    tell either), after checking that everything both describe agrees.

    Raises:
        InputError: naming the first YAML value that contradicts the weights.
    """
    stated = {"shape_model_type": (config.kind, arch.kind), "width": (config.width, arch.width),
              "num_layers": (config.depth, arch.depth), "patch_size": (config.patch_size, arch.patch_size),
              "n_gaussians": (config.num_global_tokens, arch.num_global_tokens)}
    for key, (in_yaml, in_weights) in stated.items():
        if in_yaml is not None and in_yaml != in_weights:
            where = f"system.{key}" if key == "shape_model_type" else f"{SHAPE_MODEL}.{key}"
            raise InputError(f"{config.path}: {where} says {in_yaml}, but the weights in {checkpoint} are of a model "
                             f"with {in_weights}; give the config that belongs to this checkpoint (--config)")
    return OfficialArchitecture(kind=arch.kind, width=arch.width, depth=arch.depth, patch_size=arch.patch_size,
                                mlp_ratio=arch.mlp_ratio, num_global_tokens=arch.num_global_tokens,
                                num_heads=config.num_heads, ray_embedding=config.ray_embedding,
                                source=str(config.path))


def architecture_with_config(arch: OfficialArchitecture, checkpoint: Path, config: str | Path | None
                             ) -> OfficialArchitecture:
    """``arch`` completed by ``config``, or by the YAML found beside the checkpoint when ``config`` is None.

    A YAML found beside the checkpoint is skipped with a warning when PyYAML is missing; a given one is required.
    """
    found = Path(config) if config is not None else find_official_yaml(checkpoint)
    if found is not None and config is None and importlib.util.find_spec("yaml") is None:
        log.warning("%s: not read (PyYAML is not installed: pip install 'diffusiongs[official]'); the architecture "
                    "is read off the weights alone", found)
        found = None
    if found is not None:
        return apply_official_yaml(arch, read_official_yaml(found), checkpoint)
    if arch.width % OFFICIAL_HEAD_WIDTH:
        raise InputError(f"{checkpoint}: width {arch.width} is not a multiple of the released head width "
                         f"{OFFICIAL_HEAD_WIDTH}; give the checkpoint's YAML config (--config) for its dim_heads")
    return arch
