"""Cameras of a scene generation: where the noisy views go for one photo, and the fly-through path (docs/scenes.md).

A scene model denoises at target cameras (the evaluation protocol's first N targets), in the scene world of its
training: the cameras normalised by :func:`~diffusiongs.data.normalize.normalize_scene_cameras` over the condition
and noisy cameras, i.e. the mean camera's OpenCV frame with translations of at most 1/1.35. The cameras come from a
named trajectory or from a RealEstate10K camera file. Both are scale-free: normalisation removes the size of the
motion, only its shape (and the angles of an orbit) reaches the model.

A path holds more frames than the rig: the fly-through video follows them, past the denoised views, moved into the
same world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from diffusiongs.data.images import center_crop_square, resize_example
from diffusiongs.data.normalize import scene_world_transform
from diffusiongs.data.re10k import camera_rows_to_w2c_K, read_camera_file
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import Cameras, focal_from_fov, look_at, transform_world
from diffusiongs.geometry.path import interpolate_poses

SceneTrajectory = Literal["orbit", "forward"]
FLY_THROUGH_MARGIN = 0.5
"""The fly-through goes past the rig's first and last frames by this fraction of the rig's span (in frames)."""
MAX_ORBIT_STEP_DEG = 45.0


@dataclass(frozen=True)
class SceneCameraConfig:
    """Where a scene generation puts its cameras: a named trajectory, or a camera file."""

    trajectory: SceneTrajectory = "orbit"
    """orbit: the camera circles the point straight ahead of the photo's camera, looking at it (the motion of the
    `data synth` scenes the demo model trained on); forward: it walks straight ahead (common in RealEstate10K)."""
    orbit_step: float = 8.0
    """Orbit: degrees about the orbited point between consecutive views, positive with the camera moving to its
    right. The evaluation protocol's targets (4, 8, 12 frames of 1-3 degrees) span 4-36 degrees: 8 puts the three
    noisy views at 8, 16 and 24."""
    fov: float = 60.0
    """Field of view in degrees across the square the model sees (the centre square of the photo, i.e. across its
    shorter side); 60 is that of the `data synth` scenes."""
    cameras: Path | None = None
    """A RealEstate10K camera file (`timestamp fx fy cx cy 0 0` + a 3x4 world-to-camera matrix per line,
    docs/scenes.md) giving the photo's camera and the noisy views; replaces --trajectory and --fov."""
    frames: tuple[int, ...] | None = None
    """With --cameras: the lines (frames, counted from 0) to denoise at, the photo's frame first, then the N noisy
    views; default: the first 1 + N frames."""


@dataclass(frozen=True)
class ScenePath:
    """The cameras of a scene generation.

    Attributes:
        cameras: every frame of the path in order (the fly-through follows them), OpenCV camera-to-world in any world
            until :meth:`normalized`; intrinsics in pixels of an image ``cameras.width`` x ``cameras.height``.
        rig: the frames denoised: the condition (the photo's camera) first, then the N noisy views.
        source: where the cameras came from, in words (for ``meta.json``).
    """

    cameras: Cameras
    rig: tuple[int, ...]
    source: str = "cameras given from Python"

    def __post_init__(self) -> None:
        count = self.cameras.batch_shape[0] if len(self.cameras.batch_shape) == 1 else -1
        if count < 2 or len(self.rig) < 2 or len(set(self.rig)) != len(self.rig) \
                or not all(0 <= i < count for i in self.rig):
            raise InputError(f"scene cameras: need a batch of at least 2 cameras and distinct rig frames among them, "
                             f"got cameras {tuple(self.cameras.batch_shape)} and rig {list(self.rig)}")

    @property
    def rig_cameras(self) -> Cameras:
        """``[condition | N noisy]``."""
        return self.cameras[torch.tensor(self.rig)]

    def normalized(self) -> ScenePath:
        """Every frame moved into the scene world that normalising the rig defines (the training frame)."""
        rotation, translation, scale = scene_world_transform(self.rig_cameras.c2w)
        c2w = transform_world(self.cameras.c2w.double(), rotation, translation, scale).to(self.cameras.c2w.dtype)
        return replace(self, cameras=replace(self.cameras, c2w=c2w))

    def fly_through(self, num_frames: int) -> Cameras:
        """``num_frames`` cameras of a loop that starts at the condition camera, goes past the rig's last frame,
        back past its first, and returns (a smooth swing, so videos loop without a jump). All frames use the
        condition camera's intrinsics."""
        first, last = min(self.rig), max(self.rig)
        margin = FLY_THROUGH_MARGIN * (last - first)
        start = self.rig[0]
        phase = torch.sin(2 * math.pi * torch.arange(num_frames, dtype=torch.float64) / max(num_frames, 1))
        reach = torch.where(phase >= 0, torch.tensor(last + margin - start), torch.tensor(start - first + margin))
        positions = start + phase * reach
        c2w = interpolate_poses(self.cameras.c2w, positions)
        K = self.cameras.K[self.rig[0]].expand(num_frames, 3, 3).clone()
        return Cameras(c2w, K, self.cameras.width, self.cameras.height)

    def describe(self) -> dict:
        """The normalised rig for ``meta.json``."""
        rig = self.rig_cameras
        return {"source": self.source, "frames": list(self.rig),
                "world": "the mean rig camera's OpenCV frame (x right, y down, z forward), translations at most 1/1.35",
                "rig_c2w": rig.c2w.tolist(), "rig_K": rig.K.tolist(), "width": rig.width, "height": rig.height}


def check_scene_config(cfg: SceneCameraConfig) -> None:
    """Option errors, and a camera file that cannot be read, in one line each (before any model is loaded)."""
    if not 0 < cfg.fov < 180:
        raise InputError(f"--fov: must be in (0, 180) degrees, got {cfg.fov:g}")
    if not 0 < abs(cfg.orbit_step) <= MAX_ORBIT_STEP_DEG:
        raise InputError(f"--orbit-step: must be non-zero and at most {MAX_ORBIT_STEP_DEG:g} degrees either way, "
                         f"got {cfg.orbit_step:g}")
    if cfg.frames is not None:
        if cfg.cameras is None:
            raise InputError("--frames: only with --cameras (the frames of the camera file to use)")
        if len(set(cfg.frames)) != len(cfg.frames) or min(cfg.frames) < 0:
            raise InputError(f"--frames: must be distinct frame numbers >= 0, got {list(cfg.frames)}")
    if cfg.cameras is not None:
        read_camera_file(cfg.cameras)


def scene_path(cfg: SceneCameraConfig, num_noisy: int, width: int, height: int) -> ScenePath:
    """The cameras ``cfg`` describes, for a photo of ``width`` x ``height`` pixels (not yet normalised)."""
    if cfg.cameras is not None:
        return _file_path(cfg, num_noisy, width, height)
    return trajectory_path(cfg.trajectory, num_noisy, width, height, cfg.fov, cfg.orbit_step)


def trajectory_path(trajectory: SceneTrajectory, num_noisy: int, width: int, height: int, fov_deg: float,
                    orbit_step_deg: float) -> ScenePath:
    """A named trajectory in the photo camera's frame, with frames at whole steps from ``-m`` to ``N + m`` (m covers
    the fly-through's margin); the rig is steps 0..N."""
    extra = math.ceil(FLY_THROUGH_MARGIN * num_noisy)
    steps = torch.arange(-extra, num_noisy + extra + 1, dtype=torch.float64)
    if trajectory == "orbit":
        # Unit distance to the orbited point: the scale is normalised away.
        angle = torch.deg2rad(steps * orbit_step_deg)
        eye = torch.stack([torch.sin(angle), torch.zeros_like(angle), 1 - torch.cos(angle)], -1)
        c2w = look_at(eye, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(eye), up=(0.0, -1.0, 0.0))
        source = f"orbit trajectory, {orbit_step_deg:g} degrees per view, {fov_deg:g} degree field of view"
    else:
        c2w = torch.eye(4, dtype=torch.float64).repeat(len(steps), 1, 1)
        c2w[:, 2, 3] = steps
        source = f"forward trajectory, {fov_deg:g} degree field of view"
    focal = focal_from_fov(fov_deg, min(width, height))
    K = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])
    cameras = Cameras(c2w.float(), K.expand(len(steps), 3, 3).clone(), width, height)
    return ScenePath(cameras, tuple(range(extra, extra + num_noisy + 1)), source)


def rig_frames(cfg: SceneCameraConfig, num_noisy: int) -> tuple[int, ...]:
    """The camera file's frames to denoise at; an InputError when they do not fit the model (1 + N frames) or the
    file."""
    return _frames_in(cfg, read_camera_file(cfg.cameras)[1], num_noisy)


def _frames_in(cfg: SceneCameraConfig, rows: Float[np.ndarray, "n 18"], num_noisy: int) -> tuple[int, ...]:
    frames = tuple(range(num_noisy + 1)) if cfg.frames is None else cfg.frames
    if len(frames) != num_noisy + 1:
        raise InputError(f"--frames: the model denoises N = {num_noisy} views, so give {num_noisy + 1} frames (the "
                         f"photo's first), got {len(frames)}")
    if max(frames) >= len(rows):
        raise InputError(f"{cfg.cameras}: has {len(rows)} camera lines, frame(s) "
                         f"{[f for f in frames if f >= len(rows)]} asked for (frames count from 0)")
    return frames


def _file_path(cfg: SceneCameraConfig, num_noisy: int, width: int, height: int) -> ScenePath:
    _, rows = read_camera_file(cfg.cameras)
    frames = _frames_in(cfg, rows, num_noisy)
    w2c, K = camera_rows_to_w2c_K(rows, width, height)
    c2w = torch.linalg.inv(torch.from_numpy(w2c))
    cameras = Cameras(c2w.float(), torch.from_numpy(np.asarray(K, np.float32)), width, height)
    return ScenePath(cameras, frames, f"camera file {cfg.cameras}, frames {list(frames)}")


def square_scene_view(rgb: Float[Tensor, "3 h w"], path: ScenePath, resolution: int
                      ) -> tuple[Float[Tensor, "3 r r"], ScenePath]:
    """The photo and its path as the model sees them: the photo centre-cropped to a square and resampled as training
    scenes are (:func:`~diffusiongs.data.images.center_crop_square`, ``resize_example``), and every camera's
    intrinsics moved by the same pixel map."""
    cameras = path.cameras
    if (cameras.width, cameras.height) != (rgb.shape[-1], rgb.shape[-2]):
        raise InputError(f"scene cameras: intrinsics are for a {cameras.width}x{cameras.height} image, the photo is "
                         f"{rgb.shape[-1]}x{rgb.shape[-2]}")
    photo = MultiViewExample("photo", "scene", rgb[None], cameras[:1])
    square = resize_example(center_crop_square(photo), resolution)
    pixel_map = square.cameras.K[0].double() @ torch.linalg.inv(cameras.K[0].double())
    K = (pixel_map @ cameras.K.double()).to(cameras.K.dtype)
    return square.images[0], replace(path, cameras=Cameras(cameras.c2w, K, resolution, resolution))
