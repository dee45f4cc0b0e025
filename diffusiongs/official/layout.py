"""The official checkpoints' weight layout (reference §7) and its correspondence with our parameter names.

Official denoiser keys (``DGSDenoiser``), after the container prefix is removed::

    t_embedder.mlp.{0,2}.{weight,bias}                    Linear(256, d), Linear(d, d)
    image_tokenizer.1.weight                              Linear(p*p*9, d, bias=False) over (ph, pw, c) vectors
    gaussians_pos_embedding                               [G, d] (object model) or [1, G, d] (scene model)
    transformer_input_layernorm.weight                    LayerNorm(d, bias=False)
    transformer.{i}.{attn.qkv,attn.proj,mlp.fc1,mlp.fc2,adaLN_modulation.1}.{weight,bias}
    image_token_decoder.{layernorm.weight,linear.weight,adaLN_modulation.1.{weight,bias}}   -> p*p*14 per token
    upsampler.{layernorm.weight,linear.weight,adaLN_modulation.1.{weight,bias}}             -> 14 per global token

Containers: a Lightning checkpoint keeps them under ``state_dict`` with the prefix ``shape_model.`` (next to the
frozen loss networks ``loss_computer.*``); the internal format keeps them under ``model`` with the prefix
``denoiser.`` (loss networks under ``denoiser.loss_computer.*``). Our denoiser mirrors these names under ``net.``;
the two heads live in ``net.decoders.<domain>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor

from diffusiongs.errors import InputError
from diffusiongs.geometry import RayEmbedding
from diffusiongs.model.denoiser import RAY_CHANNELS, RGB_CHANNELS

OfficialKind = Literal["object", "scene"]

CONTAINERS = (("state_dict", "shape_model."), ("model", "denoiser."))
"""(top-level key, weight prefix) of the Lightning and the internal checkpoint formats."""
LOSS_NETWORK_PREFIX = "loss_computer."
"""The frozen LPIPS/SSIM networks stored next to the denoiser; not part of the model, dropped."""
OFFICIAL_HEAD_WIDTH = 64
"""``dim_heads`` of every released config: heads = width / 64 when no YAML config says otherwise."""
RAY_EMBEDDINGS: dict[OfficialKind, RayEmbedding] = {"object": "rppc", "scene": "plucker"}
"""The ray embedding of each released model when no YAML config says otherwise (``relative_plk`` / ``plk``)."""
TOKENIZER = "image_tokenizer.1.weight"
GLOBAL_TOKENS = "gaussians_pos_embedding"
HEADS = ("image_token_decoder.", "upsampler.")
HEAD_OUTPUTS = {"image_token_decoder.linear.weight": False, "upsampler.linear.weight": True}
"""The heads' output layers, and whether each decodes free (global) Gaussians rather than pixel-aligned ones."""
TRUNK = ("t_embedder.", "transformer.", "transformer_input_layernorm.")


@dataclass(frozen=True)
class OfficialWeights:
    """The denoiser tensors of an official checkpoint, keyed without the container prefix.

    Attributes:
        tensors: official key -> tensor.
        source_keys: official key -> the key as stored in the file (for error messages).
        dropped: how many loss-network tensors were left out.
    """

    tensors: dict[str, Tensor]
    source_keys: dict[str, str]
    dropped: int


@dataclass(frozen=True)
class OfficialArchitecture:
    """The network of an official checkpoint (reference §1.2: 1024 wide, 24 deep, 16 heads, patch 8, 2 global
    tokens). The weights give the sizes; the head count and the ray embedding come from the YAML config released
    with the checkpoint, or are the released models' values when there is none."""

    kind: OfficialKind
    width: int
    depth: int
    patch_size: int
    mlp_ratio: float
    num_global_tokens: int
    num_heads: int
    ray_embedding: RayEmbedding
    source: str = "the weights (heads = width / 64, ray embedding of the released model of this kind)"
    """Where the head count and the ray embedding come from (for the conversion report)."""


def _weights_container(obj: object, path: Path) -> tuple[dict, str]:
    """The dict holding the weights and the prefix of the denoiser's keys in it."""
    if not isinstance(obj, dict):
        raise InputError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    for key, prefix in CONTAINERS:
        if isinstance(obj.get(key), dict):
            return obj[key], prefix
    # A bare state dict: the system's (what `torch.load(...)["state_dict"]` gives), the internal one, or the
    # denoiser's own.
    for _, prefix in CONTAINERS:
        if any(isinstance(k, str) and k.startswith(prefix) for k in obj):
            return obj, prefix
    return obj, ""


def extract_official_weights(obj: object, path: Path) -> OfficialWeights:
    """The denoiser tensors of a loaded official checkpoint, with the loss networks dropped.

    Raises:
        InputError: a value is not a tensor, or a key belongs neither to the denoiser nor to the loss networks.
    """
    container, prefix = _weights_container(obj, path)
    tensors, source_keys, dropped, foreign = {}, {}, 0, []
    for key, value in container.items():
        if not isinstance(key, str):
            raise InputError(f"{path}: weight names must be strings, got {key!r}")
        if key.startswith((LOSS_NETWORK_PREFIX, prefix + LOSS_NETWORK_PREFIX)):
            dropped += 1
            continue
        if not key.startswith(prefix):
            foreign.append(key)
            continue
        if not isinstance(value, Tensor):
            raise InputError(f"{path}: '{key}' is a {type(value).__name__}, not a tensor")
        tensors[key[len(prefix):]] = value
        source_keys[key[len(prefix):]] = key
    if foreign:
        raise InputError(f"{path}: unexpected keys outside '{prefix}*' and the loss networks: {foreign[:3]}"
                         f"{' ...' if len(foreign) > 3 else ''}")
    if not tensors:
        raise InputError(f"{path}: no denoiser weights found (expected keys '{prefix}*' under "
                         f"{' or '.join(repr(k) for k, _ in CONTAINERS)})")
    return OfficialWeights(tensors=tensors, source_keys=source_keys, dropped=dropped)


def _require(weights: OfficialWeights, key: str, dims: int, path: Path) -> Tensor:
    if key not in weights.tensors:
        raise InputError(f"{path}: missing '{key}' (is this an Open-DiffusionGS checkpoint?)")
    value = weights.tensors[key]
    if value.dim() != dims:
        raise InputError(f"{path}: '{weights.source_keys[key]}' has shape {list(value.shape)}, expected {dims} dims")
    return value


def infer_architecture(weights: OfficialWeights, path: Path) -> OfficialArchitecture:
    """Width, depth, patch size, MLP ratio, global tokens and model kind, read off the tensors' shapes; the head
    count and ray embedding of the released models (see :mod:`diffusiongs.official.yaml_config` for reading them
    from the YAML config instead).

    The model kind follows the global-token embedding: ``[G, d]`` in the object model, ``[1, G, d]`` in the
    scene model. Every other shape is checked later against the model these values describe.
    """
    width = _require(weights, "t_embedder.mlp.2.weight", 2, path).shape[0]
    pixel_features = _require(weights, TOKENIZER, 2, path).shape[1]
    patch = round((pixel_features / (RGB_CHANNELS + RAY_CHANNELS)) ** 0.5)
    if patch * patch * (RGB_CHANNELS + RAY_CHANNELS) != pixel_features:
        raise InputError(f"{path}: '{weights.source_keys[TOKENIZER]}' takes {pixel_features} features, not "
                         f"patch x patch x {RGB_CHANNELS + RAY_CHANNELS} (RGB + 6 ray channels)")
    blocks = {int(m.group(1)) for k in weights.tensors if (m := re.match(r"transformer\.(\d+)\.", k))}
    if not blocks or blocks != set(range(len(blocks))):
        raise InputError(f"{path}: transformer blocks must be numbered 0..N-1, found {sorted(blocks)[:5]}...")
    hidden = _require(weights, "transformer.0.mlp.fc1.weight", 2, path).shape[0]
    tokens = weights.tensors.get(GLOBAL_TOKENS)
    if tokens is None or tokens.dim() not in (2, 3) or (tokens.dim() == 3 and tokens.shape[0] != 1):
        shape = None if tokens is None else list(tokens.shape)
        raise InputError(f"{path}: '{GLOBAL_TOKENS}' must be [G, d] (object) or [1, G, d] (scene), got {shape}")
    kind: OfficialKind = "object" if tokens.dim() == 2 else "scene"
    return OfficialArchitecture(kind=kind, width=width, depth=len(blocks), patch_size=patch, mlp_ratio=hidden / width,
                                num_global_tokens=tokens.shape[-2], num_heads=width // OFFICIAL_HEAD_WIDTH,
                                ray_embedding=RAY_EMBEDDINGS[kind])


def our_key(official_key: str, decoder: str) -> str | None:
    """Our parameter name for an official denoiser key (None if the key has no counterpart)."""
    if official_key == TOKENIZER:
        return "net.image_tokenizer.weight"
    if official_key == GLOBAL_TOKENS or official_key.startswith(TRUNK):
        return f"net.{official_key}"
    if official_key.startswith(HEADS):
        return f"net.decoders.{decoder}.{official_key}"
    return None
