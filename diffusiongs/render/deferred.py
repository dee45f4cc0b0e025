"""Deferred GS rendering (reference §1.5): the memory of one view's graph at a time, the same gradients.

Forward renders every (batch element, view) without a graph and keeps only the Gaussian parameters. Backward
re-renders one (batch element, view) at a time with grad enabled, backpropagates that view's slice of the output
gradient, and accumulates the parameter gradients.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras

RenderViews = Callable[[Gaussians, Cameras, Tensor], tuple[Tensor, Tensor, Tensor]]
"""Renders Gaussians ``[b, N]`` with cameras ``[b, v]`` and backgrounds ``[b, v, 3]`` to (rgb, alpha, depth),
each ``[b, v, c, h, w]``."""


class _DeferredRender(torch.autograd.Function):
    @staticmethod
    def forward(ctx, render_views: RenderViews, cameras: Cameras, means, quats, scales, opacities, colors,
                background):
        ctx.save_for_backward(means, quats, scales, opacities, colors, background)
        ctx.render_views = render_views
        ctx.cameras = cameras
        with torch.no_grad():
            return render_views(Gaussians(means, quats, scales, opacities, colors), cameras, background)

    @staticmethod
    def backward(ctx, *grad_outputs):
        saved = ctx.saved_tensors
        wanted = ctx.needs_input_grad[2:]
        grads = [torch.zeros_like(t) if need else None for t, need in zip(saved, wanted, strict=True)]
        num_batch, num_views = ctx.cameras.batch_shape
        for b in range(num_batch):
            for v in range(num_views):
                _add_view_grads(ctx.render_views, ctx.cameras, saved, wanted, grad_outputs, b, v, grads)
        return None, None, *grads


def _add_view_grads(render_views: RenderViews, cameras: Cameras, params: tuple[Tensor, ...], wanted: tuple[bool, ...],
                    grad_outputs: tuple[Tensor, ...], b: int, v: int, grads: list[Tensor | None]) -> None:
    """Re-render view ``v`` of batch element ``b`` with a graph and add its parameter gradients to ``grads``."""
    # The Gaussians of batch element b are shared by its views; the background is per view.
    where = [(slice(b, b + 1),)] * 5 + [(slice(b, b + 1), slice(v, v + 1))]
    with torch.enable_grad():
        leaves = [t[w].detach().requires_grad_(need) for t, w, need in zip(params, where, wanted, strict=True)]
        outputs = render_views(Gaussians(*leaves[:5]), cameras[b:b + 1, v:v + 1], leaves[5])
        pairs = [(out, grad[where[5]]) for out, grad in zip(outputs, grad_outputs, strict=True) if out.requires_grad]
        if not pairs:
            return
        inputs = [i for i, need in enumerate(wanted) if need]
        view_grads = torch.autograd.grad([out for out, _ in pairs], [leaves[i] for i in inputs],
                                         [grad for _, grad in pairs], allow_unused=True)
    for i, grad in zip(inputs, view_grads, strict=True):
        if grad is not None:
            grads[i][where[i]] += grad


def render_deferred(render_views: RenderViews, gaussians: Gaussians, cameras: Cameras,
                    background: Float[Tensor, "b v 3"]) -> tuple[Tensor, Tensor, Tensor]:
    """``render_views(gaussians, cameras, background)`` with deferred backpropagation."""
    return _DeferredRender.apply(render_views, cameras, gaussians.means, gaussians.quats, gaussians.scales,
                                 gaussians.opacities, gaussians.colors, background)
