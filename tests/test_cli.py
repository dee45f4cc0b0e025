"""The `diffusiongs` command line as a user runs it: outputs that re-import and play, one-line errors."""

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from diffusiongs.cli.main import entrypoint
from diffusiongs.gaussians import load_ply
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system.io import export_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = DiffusionGS(preset("tiny"))
    return export_model(tmp_path_factory.mktemp("model") / "tiny", model.cfg, model, torch.float16)


def rgba_image(path: Path) -> Path:
    image = np.zeros((90, 70, 4), np.uint8)
    image[20:70, 15:55] = (200, 60, 40, 255)
    Image.fromarray(image).save(path)
    return path


def test_generate_writes_a_ply_that_reimports_and_videos_that_play(tmp_path, tiny_model):
    out = tmp_path / "out"
    code = entrypoint(["generate", str(rgba_image(tmp_path / "in.png")), "--checkpoint", str(tiny_model),
                       "--out", str(out), "--steps", "3", "--frames", "6", "--seed", "3"])
    assert code == 0
    gaussians = load_ply(out / "gaussians.ply")
    meta = json.loads((out / "meta.json").read_text())
    assert gaussians.num_gaussians == meta["num_gaussians"] == 2 * 32 * 32 * 2  # (1 + N) views, 32 px, N = 3
    assert torch.isfinite(gaussians.means).all()
    assert sum(1 for _ in iio.imiter(out / "turntable.mp4", plugin="FFMPEG")) == 6  # decoded by imageio-ffmpeg
    gif = iio.imread(out / "turntable.gif", index=None)
    assert gif.shape[0] == 6
    views = np.asarray(Image.open(out / "views.png"))
    assert views.shape[0] == 32 and views.shape[1] > 4 * 32
    assert meta["generate"]["sampler"] == {"name": "ddim", "num_steps": 3, "eta": 0.0}
    assert set(meta["timings"]) >= {"load_model_s", "sampling_s", "turntable_s"}


def test_generate_is_deterministic_per_seed(tmp_path, tiny_model):
    image = rgba_image(tmp_path / "in.png")
    runs = []
    for name in ("a", "b"):
        assert entrypoint(["generate", str(image), "--checkpoint", str(tiny_model), "--out", str(tmp_path / name),
                           "--steps", "2", "--frames", "0", "--seed", "5"]) == 0
        runs.append(load_ply(tmp_path / name / "gaussians.ply"))
    assert torch.equal(runs[0].means, runs[1].means)


def test_readme_main_command_runs_on_the_shipped_model(tmp_path):
    """The README's command with fewer steps: the demo model and the example image ship with the repository."""
    image = ROOT / "examples" / "images" / "checker_cube.png"
    assert entrypoint(["generate", str(image), "--out", str(tmp_path), "--steps", "2", "--frames", "2"]) == 0
    assert load_ply(tmp_path / "gaussians.ply").num_gaussians == 4 * 128 * 128


@pytest.mark.parametrize("case", ["missing", "not_an_image", "bad_checkpoint", "rgb_without_remover"])
def test_bad_input_gives_one_line_error_naming_the_file(tmp_path, tiny_model, capsys, case, monkeypatch):
    image = rgba_image(tmp_path / "in.png")
    checkpoint = tiny_model
    if case == "missing":
        image = tmp_path / "nope.png"
    elif case == "not_an_image":
        image.write_bytes(b"this is text")
    elif case == "bad_checkpoint":
        checkpoint = tmp_path / "ckpt"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text((tiny_model / "config.json").read_text())
        (checkpoint / "model.safetensors").write_bytes(b"\x00" * 20)
    else:
        Image.open(image).convert("RGB").save(image)
        monkeypatch.setitem(__import__("sys").modules, "rembg", None)  # as if the `segment` extra were missing
    code = entrypoint(["generate", str(image), "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"),
                       "--steps", "1", "--frames", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert (str(checkpoint) if case == "bad_checkpoint" else str(image)) in err
    assert not (tmp_path / "o" / "gaussians.ply").exists()


def test_unknown_command_and_help(capsys):
    assert entrypoint(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert entrypoint(["frobnicate"]) == 2
