"""The evaluation protocol: which views of an item are the input, which are scored, and where the model's noisy
views go (docs/RESULTS.md, "Protocol").

Objects (this project's format, ``data synth|render``): the condition is view 0 of the "eval" orbit (16 views at
20 degrees elevation, radius 3), the targets are the other orbit views. The world is turned about z so that the
condition camera sits at azimuth 0 (the training convention, :func:`condition_azimuth_frame`), and the N noisy
views are placed around the condition camera by the model's view layout (:meth:`ViewLayout.rig`; orbit: the
condition camera turned about z by 360 k / (N + 1) degrees), as the Pipeline places them, at the condition camera's
own radius, elevation and intrinsics.

Scenes: the condition is a trajectory frame and the targets later frames; the first N targets are the noisy views
(the official RealEstate10K evaluation denoises at the target cameras). Cameras are re-normalised over the chosen
frames, as in training.

Images are centre-cropped and resampled to the model resolution exactly as the training data is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from jaxtyping import Float
from torch import Tensor

from diffusiongs.data.images import center_crop_square, resize_example
from diffusiongs.data.normalize import condition_azimuth_frame, normalize_scene_cameras
from diffusiongs.data.store import NativeReader
from diffusiongs.data.types import Domain
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras
from diffusiongs.geometry.layout import ViewLayout

log = logging.getLogger(__name__)

VIEW_GROUPS: dict[Domain, str] = {"object": "eval", "scene": "train"}
"""The view group the protocol indexes: objects use their fixed evaluation orbit, scenes their trajectory."""

SCENE_TARGET_OFFSETS = (4, 8, 12)
"""Default scene targets, in frames after the condition frame (``data synth`` scenes move 1-3 degrees a frame
around their point of interest, so 4-12 frames are a 4-36 degree change of viewpoint)."""


@dataclass(frozen=True)
class ProtocolConfig:
    """Which items and views are evaluated (docs/RESULTS.md, "Protocol")."""

    split: str = "test"
    """Dataset split to score."""
    domain: Domain = "object"
    """Items of this domain are scored."""
    condition_view: int = 0
    """The input view, an index into the item's protocol views: the "eval" orbit for objects (view 0 is at
    azimuth 0), the trajectory frames for scenes."""
    target_views: tuple[int, ...] | None = None
    """The scored views (same indexing; never the condition view). None: objects, every orbit view but the
    condition (15 for `data synth`'s 16); scenes, the frames 4, 8 and 12 after the condition."""
    resolution: int | None = None
    """Square image side the model sees and the scores use; None: the model's training resolution."""
    limit: int | None = None
    """Score at most this many items (the split's first ones, in manifest order)."""


@dataclass(frozen=True)
class EvalCase:
    """One item, prepared for a predictor and the scores.

    Attributes:
        item_id: the dataset item.
        domain: ``"object"`` or ``"scene"``.
        condition: the input view, RGB in [0, 1] (objects on white), ``[3, h, w]``.
        rig: the cameras the model denoises at, ``[1 + N]``: the condition camera, then the N noisy views.
        targets: ground truth of the scored views, RGB in [0, 1], ``[t, 3, h, w]``.
        target_cameras: their cameras, ``[t]``.
        target_views: their indices among the item's protocol views.
        surface: ground-truth surface samples in the same (rotated) world, ``[p, 3]``, or None.
    """

    item_id: str
    domain: Domain
    condition: Float[Tensor, "3 h w"]
    rig: Cameras
    targets: Float[Tensor, "t 3 h w"]
    target_cameras: Cameras
    target_views: tuple[int, ...]
    surface: Float[Tensor, "p 3"] | None


@dataclass(frozen=True)
class Skipped:
    """An item the protocol could not use, and why."""

    item_id: str
    reason: str


def open_reader(root: Path, cfg: ProtocolConfig) -> NativeReader:
    """The dataset's items of ``cfg.domain`` in ``cfg.split``, exposing the protocol's view group."""
    return NativeReader(root, cfg.split, cfg.domain, groups=(VIEW_GROUPS[cfg.domain],))


def protocol_views(cfg: ProtocolConfig) -> tuple[int, tuple[int, ...] | None]:
    """The condition view and the configured targets (None: the domain's default, which depends on the item)."""
    if cfg.target_views is not None and cfg.condition_view in cfg.target_views:
        raise InputError(f"--target-views {cfg.target_views}: the condition view {cfg.condition_view} is never scored")
    if cfg.condition_view < 0 or any(v < 0 for v in cfg.target_views or ()):
        raise InputError("--condition-view/--target-views: view indices must be >= 0")
    return cfg.condition_view, cfg.target_views


def _targets_for(cfg: ProtocolConfig, num_views: int) -> tuple[int, ...]:
    condition, targets = protocol_views(cfg)
    if targets is not None:
        return targets
    if cfg.domain == "object":
        return tuple(v for v in range(num_views) if v != condition)
    return tuple(condition + offset for offset in SCENE_TARGET_OFFSETS)


def describe_protocol(cfg: ProtocolConfig, layout: ViewLayout, num_noisy: int) -> str:
    """The protocol in words, for reports."""
    condition, targets = protocol_views(cfg)
    if cfg.domain == "object":
        scored = "every other orbit view" if targets is None else f"orbit views {list(targets)}"
        return (f"objects: condition = 'eval' orbit view {condition}, targets = {scored} (the condition is never "
                "scored); world turned about z so the condition camera is at azimuth 0; the N = "
                f"{num_noisy} noisy views placed by the {layout.describe()} view layout; white background")
    scored = (f"frames +{', +'.join(map(str, SCENE_TARGET_OFFSETS))} after it" if targets is None
              else f"frames {list(targets)}")
    return (f"scenes: condition = frame {condition}, targets = {scored} (the condition is never scored); the "
            f"first N = {num_noisy} targets are the noisy views; cameras re-normalised over the chosen frames")


def load_case(reader: NativeReader, index: int, cfg: ProtocolConfig, resolution: int, layout: ViewLayout,
              num_noisy: int) -> EvalCase:
    """Item ``index`` prepared by the protocol; InputError when the item lacks the views it needs."""
    item_id = reader.item_id(index)
    num_views = reader.cameras(index).batch_shape[0]
    condition, targets = cfg.condition_view, _targets_for(cfg, num_views)
    missing = [v for v in (condition, *targets) if v >= num_views]
    if missing:
        raise InputError(f"{item_id}: has {num_views} '{VIEW_GROUPS[cfg.domain]}' views, the protocol needs "
                         f"view(s) {missing}")
    if cfg.domain == "scene" and len(targets) < num_noisy:
        raise InputError(f"{item_id}: scenes denoise at the first N = {num_noisy} targets, got {len(targets)}")
    example = reader.load(index, [condition, *targets])
    surface = reader.surface(index)
    stored = example.cameras.c2w
    if cfg.domain == "object":
        c2w = condition_azimuth_frame(stored)
        # The world rotation that frame applied (new = R @ old for every camera): move the surface with it.
        rotation = c2w[0, :3, :3].double() @ stored[0, :3, :3].double().T
        surface = None if surface is None else (surface.double() @ rotation.T).float()
    else:
        c2w, _ = normalize_scene_cameras(stored)
    example = replace(example, cameras=Cameras(c2w, example.cameras.K, example.cameras.width, example.cameras.height))
    example = resize_example(center_crop_square(example), resolution)
    cameras = example.cameras
    rig = (layout.rig(cameras[0], num_noisy) if cfg.domain == "object"
           else Cameras.cat([cameras[:1], cameras[1:1 + num_noisy]]))
    return EvalCase(item_id=item_id, domain=cfg.domain, condition=example.images[0], rig=rig,
                    targets=example.images[1:], target_cameras=cameras[1:], target_views=targets, surface=surface)


def case_count(reader: NativeReader, cfg: ProtocolConfig) -> int:
    """How many cases :func:`iter_cases` yields (scored or skipped)."""
    return len(reader) if cfg.limit is None else min(cfg.limit, len(reader))


def iter_cases(reader: NativeReader, cfg: ProtocolConfig, resolution: int, layout: ViewLayout, num_noisy: int
               ) -> Iterator[EvalCase | Skipped]:
    """Every item of the reader (up to ``cfg.limit``) as a case, or as :class:`Skipped` (logged) when it is
    broken or lacks the protocol's views."""
    protocol_views(cfg)  # a bad view configuration is the user's error, not every item's
    for index in range(case_count(reader, cfg)):
        try:
            yield load_case(reader, index, cfg, resolution, layout, num_noisy)
        except InputError as err:
            log.warning("skipping %s: %s", reader.item_id(index), err)
            yield Skipped(reader.item_id(index), str(err))
