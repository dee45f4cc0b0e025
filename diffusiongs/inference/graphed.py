"""One sampling step's prediction as a single CUDA graph (``Pipeline(compile=True)`` on CUDA).

Within a generation only x_t and the step change; the condition view, the cameras, their rays and the domain stay
put. :class:`GraphedPredictor` compiles the prediction (network + Gaussian decoding) with torch.compile, captures it
once per input shape as a CUDA graph over static input buffers, and then runs a step as two copies and one graph
replay. torch.compile's own CUDA graphs ("reduce-overhead") spent 1.3 ms of host time per step on guards, input
checks and copies of every input (an H200 profile, docs/BENCHMARKS.md), and the GPU sat idle through it: gsplat
waits for the GPU once per rasterization, and the next step can only be launched after that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras
from diffusiongs.system.model import PixelRays

PredictFn = Callable[[Tensor, Tensor, Cameras, Tensor, Tensor, PixelRays], Gaussians]
"""``(condition [1, 1, 3, h, w], x_t [1, n, 3, h, w], cameras [1, 1 + n], steps [1], is_object [1], rays) ->
Gaussians``: the prediction of one step (``Pipeline._predict``)."""

WARMUP_CALLS = 3
"""Eager calls before capture, on a side stream (as CUDA graph capture requires): the first compiles, the others
let cuBLAS, cuDNN and the caching allocator settle their workspaces."""


@dataclass
class _Captured:
    """A captured graph, the static buffers it reads and the Gaussians it writes."""

    key: tuple
    graph: torch.cuda.CUDAGraph
    condition: Tensor
    x_t: Tensor
    cameras: Cameras
    steps: Tensor
    is_object: Tensor
    rays: PixelRays
    output: Gaussians


def _static_copy(rays: PixelRays) -> PixelRays:
    return PixelRays(origins=rays.origins.clone(), directions=rays.directions.clone(),
                     embedding=rays.embedding.clone())


class GraphedPredictor:
    """``predict`` compiled and replayed as a CUDA graph: :meth:`bind` a generation's fixed inputs, then call
    with x_t and the step. The returned Gaussians live in the graph's memory: the next replay overwrites them."""

    def __init__(self, predict: PredictFn):
        self.predict = torch.compile(predict)
        self._captured: _Captured | None = None  # one shape at a time: a graph holds its activations' memory

    def bind(self, condition: Float[Tensor, "1 1 3 h w"], cameras: Cameras, is_object: Bool[Tensor, " 1"],
             rays: PixelRays) -> None:
        """Set the inputs that stay fixed for a generation, ``cameras`` ``[1, 1 + n]`` (capturing a graph for a new
        shape). x_t will be float32 ``[1, n, 3, h, w]``."""
        key = (tuple(condition.shape), tuple(cameras.c2w.shape), cameras.width, cameras.height, condition.device)
        if self._captured is None or self._captured.key != key:
            self._captured = None  # free the old graph's memory before capturing the next
            x_t = condition.new_zeros(1, cameras.batch_shape[-1] - 1, 3, cameras.height, cameras.width)
            self._captured = self._capture(key, condition, x_t, cameras, is_object, rays)
        c = self._captured
        c.condition.copy_(condition)
        c.cameras.c2w.copy_(cameras.c2w)
        c.cameras.K.copy_(cameras.K)
        c.is_object.copy_(is_object)
        for name in ("origins", "directions", "embedding"):
            getattr(c.rays, name).copy_(getattr(rays, name))

    def __call__(self, x_t: Float[Tensor, "1 n 3 h w"], steps: Int[Tensor, " 1"]) -> Gaussians:
        if self._captured is None:
            raise RuntimeError("GraphedPredictor: call bind() before predicting")
        self._captured.x_t.copy_(x_t)
        self._captured.steps.copy_(steps)
        self._captured.graph.replay()
        return self._captured.output

    def _capture(self, key: tuple, condition: Tensor, x_t: Tensor, cameras: Cameras, is_object: Tensor,
                 rays: PixelRays) -> _Captured:
        inputs = dict(condition=condition.clone(), x_t=x_t.clone(),
                      cameras=replace(cameras, c2w=cameras.c2w.clone(), K=cameras.K.clone()),
                      steps=torch.zeros(1, dtype=torch.long, device=x_t.device), is_object=is_object.clone(),
                      rays=_static_copy(rays))
        args = (inputs["condition"], inputs["x_t"], inputs["cameras"], inputs["steps"], inputs["is_object"],
                inputs["rays"])
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_CALLS):
                self.predict(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.predict(*args)
        return _Captured(key=key, graph=graph, output=output, **inputs)
