"""The renderer's configuration and output types, and the rasterization rules every backend shares.

The rules are those of gsplat 1.5.3's "classic" mode (``cuda/csrc/ProjectionEWA3DGSFused.cu``,
``RasterizeToPixels3DGSFwd.cu``, ``include/Utils.cuh``), so that the CPU and pure-torch backends render what gsplat
renders on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from jaxtyping import Float
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
"""A Gaussian whose alpha at a pixel is below this is skipped there (and one whose opacity is below it, culled)."""

ALPHA_MAX = 0.999
"""Alpha is clamped to this, so that no single Gaussian makes a pixel fully opaque (its gradient is then zero)."""

TRANSMITTANCE_MIN = 1e-4
"""A pixel stops at the first Gaussian that would bring its transmittance to this or below; that one is left out."""

EXTEND_MAX = 3.33
"""Upper bound on a splat's bounding box half-width, in standard deviations of its 2D covariance."""

FOV_CLIP_MARGIN = 0.3
"""The EWA Jacobian is evaluated with x/z and y/z clamped to the image's half-extent plus this fraction of
tan(fov/2) on each side, which keeps Gaussians far outside the view from blowing up."""

Backend = Literal["auto", "gsplat", "cpu", "torch"]


@dataclass(frozen=True)
class RenderConfig:
    """How :func:`diffusiongs.render.render` rasterizes."""

    backend: Backend = "auto"
    """``gsplat`` (CUDA), ``cpu`` (numba kernels), ``torch`` (pure PyTorch, any device) or ``auto``: gsplat for CUDA
    tensors, ``cpu`` otherwise."""
    near_plane: float = 0.01
    """Gaussians whose centre is closer than this (camera z) are culled (reference §1.5: znear 0.01)."""
    far_plane: float = 1e10
    """Gaussians whose centre is farther than this (camera z) are culled. Effectively none by default: the
    official rasterizer's zfar (100) never culls, and scene Gaussians start at depth 250 (u = 500 sigmoid(0))."""
    eps2d: float = 0.3
    """Low-pass filter added to the diagonal of every 2D covariance, in pixels² (gsplat's default)."""
    tile_size: int = 16
    """Side of the square screen tiles Gaussians are binned into."""
    deferred: bool = False
    """Deferred GS rendering (reference §1.5): render without a graph, re-render one view at a time in backward,
    so that only one view's graph is alive at any moment. Same values and gradients."""


@dataclass(frozen=True)
class RenderOutput:
    """Rendered images, channels first."""

    rgb: Float[Tensor, "*batch view 3 h w"]
    """Composited colour: sum of weighted Gaussian colours + final transmittance x background."""
    alpha: Float[Tensor, "*batch view 1 h w"]
    """Accumulated opacity, 1 - final transmittance, in [0, 1]."""
    depth: Float[Tensor, "*batch view 1 h w"]
    """Expected camera-space z, sum(w z) / alpha; 0 where alpha is 0 (gsplat's "ED")."""
