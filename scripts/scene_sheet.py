"""The room picture of docs/scenes.md: ground truth, the model at the photo's true cameras, the model on the default
orbit. Rows:

1. the input, then the ground-truth frames ``--frames`` and ``--last-frame`` of the scene's own renders;
2. the input, the model's renders at the true cameras of ``--frames`` (``--cameras``), and the fly-through's two
   ends (its farthest frames past the rig's last and first frame);
3. the same on the default orbit (what ``diffusiongs generate IMAGE --domain scene`` does).

    python scripts/scene_sheet.py examples/images/room.png --cameras examples/cameras/room.txt \\
        --truth SCENE_FOLDER --out docs/images/demo_scene_room.png

SCENE_FOLDER is the scene's item folder (``images/00000.png``, ...), e.g. scene 4 of ``diffusiongs data synth
--objects 0 --scenes 6 --res 256 --seed 777`` for the example room.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from diffusiongs.data.images import decode_image, resample_square, to_tensors  # noqa: E402
from diffusiongs.errors import exit_with  # noqa: E402
from diffusiongs.inference import Pipeline  # noqa: E402
from diffusiongs.inference.media import image_row, image_rows, write_image  # noqa: E402
from diffusiongs.inference.outputs import OutputConfig, render_fly_through  # noqa: E402
from diffusiongs.inference.pipeline import DEFAULT_MODEL_DIR  # noqa: E402
from diffusiongs.inference.scene import SceneCameraConfig  # noqa: E402


@dataclass(frozen=True)
class SceneSheetConfig:
    """Three rows for one scene photo: its ground truth, the model at the true cameras, the model on the orbit."""

    image: tyro.conf.Positional[Path]
    cameras: Path
    """The photo's RealEstate10K-format camera file (its frame 0 is the photo)."""
    truth: Path
    """The scene's item folder, whose ``images/NNNNN.png`` are the ground-truth frames."""
    out: Path
    """The sheet (.png)."""
    frames: tuple[int, ...] = (0, 4, 8, 12)
    """The photo's frame, then the noisy views' frames."""
    last_frame: int = 18
    """The camera file's last frame (the far end of the fly-through); shown in the ground-truth row."""
    checkpoint: Path = DEFAULT_MODEL_DIR


def _tile(image: torch.Tensor, size: int) -> torch.Tensor:
    """``[3, h, w]`` -> ``[3, size, size]``."""
    return resample_square(image[None], size)[0]


def _model_row(pipeline: Pipeline, image: Path, cameras: SceneCameraConfig, size: int) -> torch.Tensor:
    """The input, the renders at the rig's cameras, and the fly-through's two ends (it swings out past the rig's
    last frame a quarter of the way through, and past its first at three quarters)."""
    result = pipeline.generate_scene(image, cameras)
    path = render_fly_through(pipeline, result, OutputConfig())
    tiles = [result.condition.rgb, *result.views, path[len(path) // 4], path[3 * len(path) // 4]]
    return torch.stack([_tile(t, size) for t in tiles])


def main() -> int:
    cfg = tyro.cli(SceneSheetConfig, prog="python scripts/scene_sheet.py")
    pipeline = Pipeline.from_pretrained(cfg.checkpoint, device="cpu")
    size = pipeline.cfg.resolution
    truth = [to_tensors(decode_image(cfg.truth / "images" / f"{k:05d}.png"), white_background=True)[0]
             for k in (*cfg.frames, cfg.last_frame)]
    rows = [torch.stack([_tile(t, size) for t in (truth[0], *truth)]),
            _model_row(pipeline, cfg.image, SceneCameraConfig(cameras=cfg.cameras, frames=cfg.frames), size),
            _model_row(pipeline, cfg.image, SceneCameraConfig(), size)]
    width = max(len(row) for row in rows)
    blank = torch.ones(3, size, size)
    pictures = [image_row(torch.cat([row, blank[None].expand(width - len(row), -1, -1, -1)])) for row in rows]
    print(f"wrote {write_image(image_rows(pictures), cfg.out)}")
    return 0


if __name__ == "__main__":
    exit_with(main, "scene_sheet")
