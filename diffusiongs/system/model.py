"""DiffusionGS as a whole: the denoiser network, its Gaussian decoders and the renderer, i.e. the x0 predictor.

    (clean condition view, noisy views, cameras, t) --network--> raw per-pixel maps
        --decode along each pixel's ray--> 3D Gaussians --render at the noisy views--> x0_hat

Rendering the predicted Gaussians at the noisy views' cameras *is* the x0 prediction, so every denoising step
yields a 3D-consistent scene. This module wires the independent parts together; it owns no math of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from diffusiongs.data.types import Domain
from diffusiongs.diffusion.schedule import NoiseScheduleConfig
from diffusiongs.errors import InputError
from diffusiongs.gaussians import DECODE_PRESETS, GaussianDecodeConfig, Gaussians
from diffusiongs.gaussians.decode import decode_free_gaussians, decode_pixel_gaussians
from diffusiongs.geometry import Cameras, RayEmbedding, embed_rays, pixel_rays
from diffusiongs.geometry.camera import OrbitRig
from diffusiongs.geometry.layout import ViewLayout
from diffusiongs.model.denoiser import Denoiser, DenoiserConfig
from diffusiongs.render import RenderConfig, RenderOutput, render

DETERMINISTIC_INPUT = 0.5
"""What a deterministic (no-diffusion) model sees in place of noisy views, in training and inference: mid-grey,
0 in the network's [-1, 1]."""


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a DiffusionGS model (stored with every checkpoint)."""

    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    """The network."""
    ray_embedding: RayEmbedding = "rppc"
    """Per-pixel camera conditioning: ``rppc`` (paper) or ``plucker`` (the released scene model)."""
    object_decode: GaussianDecodeConfig = DECODE_PRESETS["object"]
    """How the object decoder's raw maps become Gaussians."""
    scene_decode: GaussianDecodeConfig = DECODE_PRESETS["scene"]
    """How the scene decoder's raw maps become Gaussians."""
    schedule: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig)
    """The noise schedule the model was trained with."""
    resolution: int = 256
    """Image side the model was trained at (any multiple of the patch size works)."""
    num_noisy_views: int = 3
    """N, the noisy views denoised next to the condition view."""
    object_rig: OrbitRig = field(default_factory=OrbitRig)
    """Where object inference puts the condition camera (distance, elevation, field of view: match the training
    framing); the noisy views then follow ``view_layout``."""
    view_layout: ViewLayout = field(default_factory=ViewLayout)
    """Where the noisy views sat relative to the condition view in training; inference and evaluation place them
    the same way. Folders written before this field existed (and converted official checkpoints) get the orbit
    layout, the one they were trained and evaluated with."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Render background (white, objects and scenes alike, as in the official code)."""
    deterministic: bool = False
    """The paper's "w/o timestep" baseline: a feed-forward regressor trained without diffusion. It sees the
    condition view, mid-grey target views and the constant step T-1, and predicts in one pass."""


@dataclass(frozen=True)
class PixelRays:
    """The ray of every input pixel and the embedding the network sees of it. They depend only on the cameras, so a
    sampler, whose cameras stay put for the whole chain, computes them once per generation (:meth:`DiffusionGS.rays`).

    Attributes:
        origins, directions: world-space ray origins and unit directions, ``[b, v, h, w, 3]``, float32.
        embedding: RPPC or Plücker coordinates, channels first, ``[b, v, 6, h, w]``.
    """

    origins: Float[Tensor, "b v h w 3"]
    directions: Float[Tensor, "b v h w 3"]
    embedding: Float[Tensor, "b v 6 h w"]


@dataclass(frozen=True)
class GaussianPrediction:
    """Predicted Gaussians of a batch, and where each input pixel's Gaussian went.

    Attributes:
        gaussians: ``[batch, G + view*h*w]`` (the G free Gaussians first).
        pixel_means: the centre of every pixel's Gaussian, ``[batch, view, h, w, 3]``.
        ray_origins: the camera centre of every view, ``[batch, view, 3]``.
    """

    gaussians: Gaussians
    pixel_means: Float[Tensor, "batch view h w 3"]
    ray_origins: Float[Tensor, "batch view 3"]


def _select(is_object: Tensor, when_object: Gaussians, otherwise: Gaussians) -> Gaussians:
    """Per-sample choice between two decodings of the same raw maps (no data-dependent indexing)."""
    pick = is_object.to(when_object.device)

    def choose(a: Tensor, b: Tensor) -> Tensor:
        return torch.where(pick.reshape(-1, *([1] * (a.dim() - 1))), a, b)

    return Gaussians(means=choose(when_object.means, otherwise.means), quats=choose(when_object.quats, otherwise.quats),
                     scales=choose(when_object.scales, otherwise.scales),
                     opacities=choose(when_object.opacities, otherwise.opacities),
                     colors=choose(when_object.colors, otherwise.colors))


class DiffusionGS(nn.Module):
    """The x0 predictor of DiffusionGS. ``net`` is the only part with parameters."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.net = Denoiser(cfg.denoiser)
        # A buffer, not a tensor made per call: making one from a tuple is a host-to-device copy, which waits for the
        # GPU, and would stall the CPU once per sampling step while the network still runs.
        self.register_buffer("background", torch.tensor(cfg.background), persistent=False)

    def _decode(self, raw: Tensor, origins: Tensor, directions: Tensor, is_object: Tensor, free: bool) -> Gaussians:
        """Raw maps -> Gaussians with the decoding of the decoder that made them: per sample (``is_object``) in a
        model with both decoders; in a model with one, always its own, as the network uses its one head for every
        sample (decoding a scene head's maps as an object would put the centres hundreds of units off)."""
        configs = {"object": self.cfg.object_decode, "scene": self.cfg.scene_decode}
        decoded = {}
        for name in self.cfg.denoiser.decoders:
            decoded[name] = (decode_free_gaussians(raw, configs[name]) if free
                             else decode_pixel_gaussians(raw, origins, directions, configs[name]))
        if len(decoded) == 1:
            return next(iter(decoded.values()))
        return _select(is_object, decoded["object"], decoded["scene"])

    def require_decoder(self, is_object: bool) -> None:
        """Refuse a request for a domain this model has no decoder for (a single-decoder model would otherwise
        silently answer with the one it has).

        Raises:
            InputError: e.g. asking a scene-only model for an object.
        """
        domain = "object" if is_object else "scene"
        if domain not in self.cfg.denoiser.decoders:
            raise InputError(f"this model has no {domain} decoder (it has {list(self.cfg.denoiser.decoders)}); pass "
                             f"is_object={not is_object}")

    def rays(self, cameras: Cameras) -> PixelRays:
        """The rays of every pixel of ``cameras`` (batch shape ``[b, v]``) and their embedding, in float32."""
        with torch.autocast(cameras.device.type, enabled=False):
            origins, directions = pixel_rays(cameras.to(dtype=torch.float32))  # [b, v, h, w, 3]
            embed = embed_rays(origins, directions, self.cfg.ray_embedding)
        return PixelRays(origins=origins, directions=directions, embedding=embed.permute(0, 1, 4, 2, 3))

    def predict_gaussians(self, images: Float[Tensor, "b v 3 h w"], cameras: Cameras,
                          timesteps: Int[Tensor, " b"], is_object: Bool[Tensor, " b"],
                          rays: PixelRays | None = None) -> GaussianPrediction:
        """Gaussians for a batch of [condition | noisy] views.

        Args:
            images: view 0 clean, the others x_t, all in the [0, 1] data space.
            cameras: the views' cameras, batch shape ``[b, v]``.
            timesteps: each sample's DDPM step.
            is_object: the decoder each sample uses.
            rays: ``self.rays(cameras)``, when the caller keeps them from an earlier call with the same cameras.
        """
        b, v, _, h, w = images.shape
        rays = self.rays(cameras) if rays is None else rays
        out = self.net(images, rays.embedding, timesteps, is_object)
        pixel = self._decode(out.pixel_raw.reshape(b, v * h * w, -1), rays.origins.reshape(b, -1, 3),
                             rays.directions.reshape(b, -1, 3), is_object, free=False)
        parts = [pixel]
        if out.global_raw.shape[1]:
            parts.insert(0, self._decode(out.global_raw, None, None, is_object, free=True))
        return GaussianPrediction(gaussians=Gaussians.cat(parts) if len(parts) > 1 else pixel,
                                  pixel_means=pixel.means.reshape(b, v, h, w, 3),
                                  ray_origins=cameras.centers.float())

    def forward(self, images: Float[Tensor, "b v 3 h w"], cameras: Cameras, timesteps: Int[Tensor, " b"],
                is_object: Bool[Tensor, " b"], render_cameras: Cameras,
                render_cfg: RenderConfig = RenderConfig()) -> tuple[GaussianPrediction, RenderOutput]:
        """Predict Gaussians from [condition | noisy] views and render them at ``render_cameras`` (``[b, v']``).

        Training goes through this method so that DDP sees one forward pass per step.
        """
        pred = self.predict_gaussians(images, cameras, timesteps, is_object)
        return pred, self.render(pred.gaussians, render_cameras, render_cfg)

    def render(self, gaussians: Gaussians, cameras: Cameras, cfg: RenderConfig = RenderConfig()) -> RenderOutput:
        """Render ``[b, N]`` Gaussians at cameras ``[b, v]`` on the model's background."""
        return render(gaussians, cameras, self.background, cfg)

    @staticmethod
    def domain_mask(domains: list[Domain], device: torch.device | str = "cpu") -> Bool[Tensor, " b"]:
        return torch.tensor([d == "object" for d in domains], device=device)
