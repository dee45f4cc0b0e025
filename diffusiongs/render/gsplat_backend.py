"""The ``gsplat`` backend: ``gsplat.rasterization`` (1.5.3, CUDA only) in classic mode, RGB + expected depth."""

from __future__ import annotations

from types import ModuleType

from jaxtyping import Float
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras
from diffusiongs.render.config import RenderConfig


def import_gsplat() -> ModuleType:
    """Import gsplat lazily, with an actionable error when it is missing."""
    try:
        import gsplat
    except ImportError as exc:
        raise ImportError("the 'gsplat' render backend needs gsplat 1.5.3 and a CUDA GPU: "
                          "pip install 'diffusiongs[cuda]' (or use backend='torch' or 'cpu')") from exc
    return gsplat


def render_gsplat(gaussians: Gaussians, cameras: Cameras, background: Float[Tensor, "b v 3"],
                  cfg: RenderConfig) -> tuple[Float[Tensor, "b v h w 4"], Float[Tensor, "b v h w 1"]]:
    """RGB + expected depth (channels last) and alpha of Gaussians ``[b, N]`` seen by cameras ``[b, v]``."""
    gsplat = import_gsplat()
    colors, alphas, _ = gsplat.rasterization(
        means=gaussians.means, quats=gaussians.quats, scales=gaussians.scales, opacities=gaussians.opacities,
        colors=gaussians.colors, viewmats=cameras.w2c().detach(), Ks=cameras.K.detach(),
        width=cameras.width, height=cameras.height, near_plane=cfg.near_plane, far_plane=cfg.far_plane,
        eps2d=cfg.eps2d, tile_size=cfg.tile_size, backgrounds=background, render_mode="RGB+ED",
        rasterize_mode="classic",
        # Pixel-aligned splats of an object are nearly all visible in every view: packing them would only add
        # index bookkeeping, and the dense layout is gsplat's faster path when most Gaussians are visible.
        packed=False,
    )
    return colors, alphas
