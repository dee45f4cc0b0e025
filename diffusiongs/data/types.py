"""The typed examples every reader yields and the batches the trainer consumes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from diffusiongs.geometry.camera import Cameras

Domain = Literal["object", "scene"]


@dataclass(frozen=True)
class MultiViewExample:
    """All available views of one object or scene, in the normalised world of docs/conventions.md.

    Attributes:
        item_id: a stable identifier (dataset-relative path or uid).
        domain: ``"object"`` (centred in [-1, 1]^3, white background) or ``"scene"``.
        images: RGB in [0, 1], composited on the background, ``[view, 3, h, w]``.
        cameras: one OpenCV camera per view, batch shape ``[view]``.
        masks: foreground alpha in [0, 1] where known, ``[view, 1, h, w]``.
        depths: camera-space z-depth (0 where unknown), ``[view, 1, h, w]``.
    """

    item_id: str
    domain: Domain
    images: Float[Tensor, "view 3 h w"]
    cameras: Cameras
    masks: Float[Tensor, "view 1 h w"] | None = None
    depths: Float[Tensor, "view 1 h w"] | None = None

    @property
    def num_views(self) -> int:
        return self.images.shape[0]

    def select(self, indices: list[int] | Tensor) -> MultiViewExample:
        """The same item restricted to (and reordered by) ``indices``."""
        index = torch.as_tensor(indices, dtype=torch.long)
        return MultiViewExample(
            item_id=self.item_id, domain=self.domain, images=self.images[index], cameras=self.cameras[index],
            masks=None if self.masks is None else self.masks[index],
            depths=None if self.depths is None else self.depths[index])


@dataclass(frozen=True)
class TrainingBatch:
    """A collated batch of examples whose views are ordered [condition | N noisy | M novel].

    Attributes:
        images: clean RGB in [0, 1], ``[batch, view, 3, h, w]`` with view = 1 + N + M.
        cameras: batch shape ``[batch, view]``.
        is_object: which samples are objects (they use the object decoder and L_pd), ``[batch]``.
        num_noisy: N, the views after the condition view that receive noise.
        masks: foreground alpha where every example has it, ``[batch, view, 1, h, w]``.
        depths: camera z-depth (0 where unknown) where every example has it, ``[batch, view, 1, h, w]``.
    """

    images: Float[Tensor, "batch view 3 h w"]
    cameras: Cameras
    is_object: Bool[Tensor, " batch"]
    num_noisy: int
    masks: Float[Tensor, "batch view 1 h w"] | None = None
    depths: Float[Tensor, "batch view 1 h w"] | None = None

    @property
    def num_novel(self) -> int:
        return self.images.shape[1] - 1 - self.num_noisy

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TrainingBatch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return TrainingBatch(images=move(self.images), cameras=Cameras(move(self.cameras.c2w), move(self.cameras.K),
                                                                       self.cameras.width, self.cameras.height),
                             is_object=move(self.is_object), num_noisy=self.num_noisy,
                             masks=None if self.masks is None else move(self.masks),
                             depths=None if self.depths is None else move(self.depths))


def collate_examples(examples: list[MultiViewExample], num_noisy: int) -> TrainingBatch:
    """Stack view-selected examples (all with the same number of views and image size) into a batch."""
    sizes = {(e.num_views, *e.images.shape[-2:]) for e in examples}
    if len(sizes) != 1:
        raise ValueError(f"collate_examples: examples disagree on (views, height, width): {sorted(sizes)}")
    masks = None
    if all(e.masks is not None for e in examples):
        masks = torch.stack([e.masks for e in examples])
    depths = None
    if all(e.depths is not None for e in examples):
        depths = torch.stack([e.depths for e in examples])
    cams = examples[0].cameras
    return TrainingBatch(
        images=torch.stack([e.images for e in examples]),
        cameras=Cameras(torch.stack([e.cameras.c2w for e in examples]), torch.stack([e.cameras.K for e in examples]),
                        cams.width, cams.height),
        is_object=torch.tensor([e.domain == "object" for e in examples]),
        num_noisy=num_noisy, masks=masks, depths=depths)
