"""The DiffusionGS denoiser network (reference §1.2): a DiT over the patches of all views.

Input: 1 clean condition view + N noisy views, each pixel carrying [rgb | 6-channel ray embedding].
Tokens are 8 x 8 patches of every view, linearly projected; all tokens of all views attend to each other; the
timestep conditions every block through adaLN. Two Gaussian decoders (object, scene) turn the final tokens into a
raw 14-channel map per pixel (``diffusiongs.gaussians.layout``); each sample uses the decoder of its domain.

The network knows nothing of noise schedules, Gaussians' activations or rendering.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from diffusiongs.gaussians.layout import GAUSSIAN_CHANNELS
from diffusiongs.model.embeddings import TimestepEmbedder, patch_sincos_embedding, patchify, unpatchify

RGB_CHANNELS = 3
RAY_CHANNELS = 6
LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class DenoiserConfig:
    """Size and variant of the denoiser network. Named presets: ``diffusiongs.system.PRESETS``."""

    width: int = 1024
    """Token width d."""
    depth: int = 24
    """Number of transformer blocks L."""
    num_heads: int = 16
    """Attention heads (head width = width / num_heads)."""
    mlp_ratio: float = 4.0
    """MLP hidden width = mlp_ratio * width."""
    patch_size: int = 8
    """Side of the square patches that become tokens."""
    num_global_tokens: int = 0
    """Learned tokens prepended to the image tokens, each decoded into one free Gaussian (official: 2)."""
    position_embedding: Literal["sincos", "none"] = "sincos"
    """Patch-position embedding added to image tokens: the paper's "concatenated with a positional embedding";
    the official code has none (positions come only from the ray embedding)."""
    decoders: tuple[Literal["object", "scene"], ...] = ("object", "scene")
    """The Gaussian decoders (one per domain, as in the paper's mixed training); a model with one decoder (the
    released checkpoints) uses it for every sample."""
    grad_checkpointing: bool = False
    """Recompute each block's activations in the backward pass ("sublinear memory" training)."""

    def __post_init__(self) -> None:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if not self.decoders or len(set(self.decoders)) != len(self.decoders):
            raise ValueError(f"decoders must name distinct domains, got {self.decoders}")


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x (1 + scale) + shift, with the per-sample shift/scale broadcast over tokens."""
    return x * (1 + scale[:, None]) + shift[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention over all tokens through ``scaled_dot_product_attention`` (flash/cuDNN on GPU)."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(width, 3 * width, bias=True)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """MSA + MLP, each after a LayerNorm modulated by the timestep (adaLN) and scaled by a learned gate."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=LAYER_NORM_EPS, elementwise_affine=False)
        self.attn = SelfAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=LAYER_NORM_EPS, elementwise_affine=False)
        self.mlp = Mlp(width, int(width * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))

    def forward(self, x: Float[Tensor, "b n d"], cond: Float[Tensor, "b d"]) -> Float[Tensor, "b n d"]:
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = self.adaLN_modulation(cond).chunk(6, dim=-1)
        x = x + gate_a[:, None] * self.attn(_modulate(self.norm1(x), shift_a, scale_a))
        return x + gate_m[:, None] * self.mlp(_modulate(self.norm2(x), shift_m, scale_m))


class ModulatedHead(nn.Module):
    """LayerNorm -> adaLN shift/scale from the timestep -> bias-free linear map to ``out_features``."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.layernorm = nn.LayerNorm(width, bias=False)  # PyTorch's default eps 1e-5, as the official heads
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_features, bias=False)

    def forward(self, x: Float[Tensor, "b n d"], cond: Float[Tensor, "b d"]) -> Float[Tensor, "b n out"]:
        shift, scale = self.adaLN_modulation(cond).chunk(2, dim=-1)
        return self.linear(_modulate(self.layernorm(x), shift, scale))


class GaussianDecoder(nn.Module):
    """One domain's Gaussian decoder: a raw Gaussian per pixel from image tokens, one per global token."""

    def __init__(self, width: int, patch_size: int, num_global_tokens: int):
        super().__init__()
        self.image_token_decoder = ModulatedHead(width, patch_size * patch_size * GAUSSIAN_CHANNELS)
        self.upsampler = ModulatedHead(width, GAUSSIAN_CHANNELS) if num_global_tokens else None


@dataclass(frozen=True)
class DenoiserOutput:
    """Raw Gaussian maps (channels of ``GAUSSIAN_LAYOUT`` last).

    Attributes:
        pixel_raw: one raw Gaussian per input pixel, ``[batch, view, h, w, 14]``.
        global_raw: one raw Gaussian per global token, ``[batch, num_global_tokens, 14]`` (empty if none).
    """

    pixel_raw: Float[Tensor, "batch view h w 14"]
    global_raw: Float[Tensor, "batch g 14"]


class Denoiser(nn.Module):
    """The DiffusionGS transformer: (views with rays, timestep, domain) -> raw per-pixel Gaussians."""

    def __init__(self, cfg: DenoiserConfig):
        super().__init__()
        self.cfg = cfg
        d, p = cfg.width, cfg.patch_size
        self.t_embedder = TimestepEmbedder(d)
        self.image_tokenizer = nn.Linear(p * p * (RGB_CHANNELS + RAY_CHANNELS), d, bias=False)
        self.gaussians_pos_embedding = (nn.Parameter(torch.zeros(cfg.num_global_tokens, d))
                                        if cfg.num_global_tokens else None)
        self.transformer_input_layernorm = nn.LayerNorm(d, bias=False)
        self.transformer = nn.ModuleList(DiTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.decoders = nn.ModuleDict({name: GaussianDecoder(d, p, cfg.num_global_tokens) for name in cfg.decoders})
        self.apply(_init_linear)
        if self.gaussians_pos_embedding is not None:
            nn.init.normal_(self.gaussians_pos_embedding, std=0.02)

    def forward(self, images: Float[Tensor, "b v 3 h w"], rays: Float[Tensor, "b v 6 h w"],
                timesteps: Int[Tensor, " b"], is_object: Bool[Tensor, " b"]) -> DenoiserOutput:
        """Predict raw Gaussians for every pixel of every view.

        Args:
            images: RGB in [0, 1] space (noisy views may leave it); view 0 is the clean condition view.
            rays: the per-pixel ray embedding of each view (Plücker or RPPC).
            timesteps: the DDPM step of each sample's noisy views, integers in [0, T).
            is_object: which samples use the object decoder (the others use the scene decoder).
        """
        b, v, _, h, w = images.shape
        p = self.cfg.patch_size
        pixels = torch.cat([images * 2.0 - 1.0, rays.to(images.dtype)], dim=2)  # the network sees 2 x - 1
        tokens = self.image_tokenizer(patchify(pixels, p))
        if self.cfg.position_embedding == "sincos":
            pos = patch_sincos_embedding(h // p, w // p, self.cfg.width, tokens.device).to(tokens.dtype)
            tokens = tokens + pos.repeat(v, 1)[None]
        if self.gaussians_pos_embedding is not None:
            tokens = torch.cat([self.gaussians_pos_embedding.to(tokens.dtype).expand(b, -1, -1), tokens], dim=1)
        cond = self.t_embedder(timesteps)
        x = self.transformer_input_layernorm(tokens)
        for block in self.transformer:
            if self.cfg.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, cond, use_reentrant=False)
            else:
                x = block(x, cond)
        return self._decode(x, cond, is_object, v, h, w)

    def _decode(self, x: Tensor, cond: Tensor, is_object: Tensor, v: int, h: int, w: int) -> DenoiserOutput:
        # Both decoders run on every sample and torch.where picks per sample: the heads cost well under 1 % of
        # the trunk, and this avoids data-dependent indexing (a host sync) and parameters unused under DDP.
        g = self.cfg.num_global_tokens
        outputs = {}
        for name, decoder in self.decoders.items():
            pixel = unpatchify(decoder.image_token_decoder(x[:, g:], cond), v, h, w, self.cfg.patch_size)
            glob = decoder.upsampler(x[:, :g], cond) if decoder.upsampler is not None else x.new_zeros(
                x.shape[0], 0, GAUSSIAN_CHANNELS)
            outputs[name] = (pixel, glob)
        if len(outputs) == 1:
            pixel_raw, global_raw = outputs[self.cfg.decoders[0]]
            return DenoiserOutput(pixel_raw=pixel_raw, global_raw=global_raw)
        pick_object = is_object.to(x.device)
        pixel_raw = torch.where(pick_object[:, None, None, None, None], outputs["object"][0], outputs["scene"][0])
        global_raw = torch.where(pick_object[:, None, None], outputs["object"][1], outputs["scene"][1])
        return DenoiserOutput(pixel_raw=pixel_raw, global_raw=global_raw)


def deepened_state(state: dict[str, Tensor], net: Denoiser, prefix: str = "") -> dict[str, Tensor]:
    """The weights of a shallower denoiser (otherwise the same network) extended to ``net``'s depth, so that the
    deeper network computes exactly what the shallower one did.

    The trained blocks keep their places; every added block takes ``net``'s own initial weights with its adaLN
    modulation zeroed, so both its gates are 0 and it passes its input through (adaLN-Zero, DiT §3.2). Training
    then opens the gates. ``prefix`` is the denoiser's key prefix in ``state`` (e.g. ``net.``).
    """
    have = {int(key[len(prefix):].split(".")[1]) for key in state if key.startswith(f"{prefix}transformer.")}
    deeper = dict(state)
    for key, value in net.state_dict().items():
        parts = key.split(".")
        if parts[0] == "transformer" and int(parts[1]) >= len(have):
            added = value.detach().clone()
            deeper[prefix + key] = added.zero_() if parts[2] == "adaLN_modulation" else added
    return deeper


def _init_linear(module: nn.Module) -> None:
    """Normal(0, 0.02) weights and zero biases for every linear layer, as in the official code (which does not
    zero the adaLN layers)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
