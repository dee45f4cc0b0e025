"""The scripts that draw the docs' pictures run end to end (tiny random model, CPU) and lay out their tiles."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SIDE, GAP = 32, 4  # the tiny model's resolution, image_row's gap


def script(name: str, *args: object) -> np.ndarray:
    """Run ``scripts/name`` and return the picture it wrote to its ``--out``."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = Path(args[list(args).index("--out") + 1])
    return np.asarray(Image.open(out).convert("RGB"))


def tile(sheet: np.ndarray, row: int, column: int) -> np.ndarray:
    top, left = row * (SIDE + GAP), column * (SIDE + GAP)
    return sheet[top:top + SIDE, left:left + SIDE]


def test_turntable_sheet_has_the_input_and_four_azimuths_per_image(tmp_path, tiny_model_f32):
    sheet = script("turntable_sheet.py", ROOT / "examples" / "images" / "checker_cube.png",
                   ROOT / "examples" / "images" / "pedestal.png", "--out", tmp_path / "sheet.png", "--checkpoint",
                   tiny_model_f32, "--generate.sampler.num-steps", "2")
    assert sheet.shape == (2 * SIDE + GAP, 5 * SIDE + 4 * GAP, 3)


def test_scene_sheet_rows_are_truth_true_cameras_and_orbit(tmp_path, tiny_model_f32):
    truth = tmp_path / "scene" / "images"
    truth.mkdir(parents=True)
    colours = np.random.default_rng(0).integers(0, 256, (19, 3))
    for frame, colour in enumerate(colours):
        Image.fromarray(np.broadcast_to(colour.astype(np.uint8), (64, 64, 3)).copy()).save(truth / f"{frame:05d}.png")
    sheet = script("scene_sheet.py", ROOT / "examples" / "images" / "room.png", "--cameras",
                   ROOT / "examples" / "cameras" / "room.txt", "--truth", tmp_path / "scene", "--out",
                   tmp_path / "room.png", "--checkpoint", tiny_model_f32)
    # Three rows: the truth row has the input, frames 0, 4, 8, 12 and 18 and one blank tile; the model rows have
    # the input, the 4 rig renders and the fly-through's two ends.
    assert sheet.shape == (3 * SIDE + 2 * GAP, 7 * SIDE + 6 * GAP, 3)
    for column, frame in enumerate((0, 4, 8, 12, 18), start=1):
        assert np.abs(tile(sheet, 0, column).astype(int) - colours[frame]).max() <= 1, frame
    assert (tile(sheet, 0, 6) == 255).all()
    assert np.array_equal(tile(sheet, 1, 0), tile(sheet, 2, 0))  # the same prepared input
