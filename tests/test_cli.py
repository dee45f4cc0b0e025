"""The `diffusiongs` command line as a user runs it: outputs that re-import and play, one-line errors."""

import json
import re
import shlex
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import tyro
from PIL import Image
from readme_snippets import generate, readme_generate_args

from diffusiongs import __version__
from diffusiongs.cli.device import resolve_device
from diffusiongs.cli.main import entrypoint
from diffusiongs.gaussians import load_ply
from diffusiongs.inference import Pipeline

ROOT = Path(__file__).resolve().parents[1]


def rgba_image(path: Path) -> Path:
    image = np.zeros((90, 70, 4), np.uint8)
    image[20:70, 15:55] = (200, 60, 40, 255)
    Image.fromarray(image).save(path)
    return path


def rgb_photo(path: Path) -> Path:
    """An RGB image without alpha: the object on a plain light backdrop."""
    image = np.full((90, 70, 3), 235, np.uint8)
    image[20:70, 15:55] = (200, 60, 40)
    Image.fromarray(image).save(path)
    return path


def terminal_lines(text: str) -> list[str]:
    """The non-empty lines a terminal shows for ``text``: a carriage return goes back to the line's start and what
    follows overwrites (how progress bars redraw and clear themselves)."""
    lines = []
    for line in text.split("\n"):
        shown = ""
        for segment in line.split("\r"):
            shown = segment + shown[len(segment):]
        if shown.strip():
            lines.append(shown.rstrip())
    return lines


def test_generate_writes_a_ply_that_reimports_and_videos_that_play(tmp_path, tiny_model):
    out = tmp_path / "out"
    code = generate(rgba_image(tmp_path / "in.png"), "--checkpoint", tiny_model, "--out", out, "--steps", "3",
                    "--turntable-seconds", "0.5", "--turntable-fps", "12", "--turntable-size", "24", "--seed", "3")
    assert code == 0
    gaussians = load_ply(out / "gaussians.ply")
    meta = json.loads((out / "meta.json").read_text())
    predicted = 2 * 32 * 32 * 2  # (1 + N) views, 32 px, N = 3
    assert meta["export"]["num_predicted"] == predicted
    assert gaussians.num_gaussians == meta["num_gaussians"] == meta["export"]["num_written"] <= predicted
    assert "opacity > 0.02" in meta["export"]["rule"] and meta["foreground"] == "alpha"
    assert torch.isfinite(gaussians.means).all()
    assert sum(1 for _ in iio.imiter(out / "turntable.mp4", plugin="FFMPEG")) == 6  # decoded by imageio-ffmpeg
    gif = iio.imread(out / "turntable.gif", index=None)
    assert gif.shape[:3] == (6, 24, 24)
    views = np.asarray(Image.open(out / "views.png"))
    assert views.shape[0] == 32 and views.shape[1] > 4 * 32
    assert meta["generate"]["sampler"] == {"name": "ddim", "num_steps": 3, "eta": 0.0}
    assert set(meta["timings"]) >= {"load_model_s", "sampling_s", "turntable_s"}


def test_generate_is_deterministic_per_seed_and_keeps_everything_on_request(tmp_path, tiny_model):
    image = rgba_image(tmp_path / "in.png")
    runs = []
    for name in ("a", "b"):
        assert generate(image, "--checkpoint", tiny_model, "--out", tmp_path / name, "--steps", "2",
                        "--turntable-seconds", "0", "--seed", "5", "--min-opacity", "0", "--keep-clipped") == 0
        runs.append(load_ply(tmp_path / name / "gaussians.ply"))
    assert torch.equal(runs[0].means, runs[1].means)
    assert runs[0].num_gaussians == 2 * 32 * 32 * 2
    assert not (tmp_path / "a" / "turntable.mp4").exists()


def test_up_y_writes_the_same_gaussians_rotated(tmp_path, tiny_model):
    image = rgba_image(tmp_path / "in.png")
    for up in ("z", "y"):
        assert generate(image, "--checkpoint", tiny_model, "--out", tmp_path / up, "--steps", "1",
                        "--turntable-seconds", "0", "--up", up) == 0
    z_up, y_up = (load_ply(tmp_path / up / "gaussians.ply") for up in ("z", "y"))
    x, y, z = z_up.means.unbind(-1)
    assert torch.allclose(y_up.means, torch.stack([x, z, -y], dim=-1), atol=1e-5)
    assert json.loads((tmp_path / "y" / "meta.json").read_text())["export"]["up"] == "y"


def test_readme_main_command_runs_on_the_shipped_model(tmp_path):
    """The README's command with its image (fewer steps): the demo model and the image ship with the repository."""
    assert generate(*readme_generate_args("main-command"), "--out", tmp_path, "--steps", "2",
                    "--turntable-seconds", "0.1", "--no-progress") == 0
    assert load_ply(tmp_path / "gaussians.ply").num_gaussians > 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["export"]["num_predicted"] == 4 * 128 * 128 and meta["foreground"] in ("alpha", "u2netp")


@pytest.mark.parametrize("case", ["missing", "not_an_image", "bad_checkpoint", "out_is_a_file"])
def test_bad_input_gives_one_line_error_naming_the_file(tmp_path, tiny_model, capsys, case):
    image = rgba_image(tmp_path / "in.png")
    checkpoint, out = tiny_model, tmp_path / "o"
    named = image
    if case == "missing":
        image = named = tmp_path / "nope.png"
    elif case == "not_an_image":
        image.write_bytes(b"this is text")
    elif case == "bad_checkpoint":
        checkpoint = named = tmp_path / "ckpt"
        checkpoint.mkdir()
        (checkpoint / "config.json").write_text((tiny_model / "config.json").read_text())
        (checkpoint / "model.safetensors").write_bytes(b"\x00" * 20)
    else:
        out = named = tmp_path / "taken.txt"
        out.write_text("not a folder")
    code = generate(image, "--checkpoint", checkpoint, "--out", out, "--steps", "1", "--turntable-seconds", "0")
    lines = terminal_lines(capsys.readouterr().err)
    assert code == 2
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert str(named) in lines[0]
    assert not (out / "gaussians.ply").exists()


@pytest.mark.parametrize("option,value", [("--steps", "0"), ("--steps", "-3"), ("--turntable-fps", "0"),
                                          ("--turntable-seconds", "-1"), ("--turntable-size", "4"),
                                          ("--foreground-ratio", "1.5"), ("--min-opacity", "1"), ("--crop", "0"),
                                          ("--elevation", "95"), ("--camera-template", "nope.pt")])
def test_bad_options_stop_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, option, value):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Pipeline, "from_pretrained", fail)
    code = generate(rgba_image(tmp_path / "in.png"), "--out", tmp_path / "o", option, value)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"diffusiongs generate: error: {option}")


def test_too_many_steps_for_the_schedule_stop_before_any_image(tmp_path, tiny_model, capsys):
    code = generate(rgba_image(tmp_path / "in.png"), "--checkpoint", tiny_model, "--out", tmp_path / "o",
                    "--steps", "1001")
    assert code == 2 and "--steps: must be at most 1000" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_many_images_load_the_model_once_and_skip_what_cannot_be_used(tmp_path, tiny_model, capsys, monkeypatch):
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    rgba_image(folder / "a.png")
    rgb_photo(folder / "b.jpg")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not looked at: not an image suffix")
    rgba_image(folder / "more" / "a.png")  # the same name as photos/a.png
    loads = []
    real = Pipeline.from_pretrained.__func__

    def counted(cls, *args, **kwargs):
        loads.append(1)
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(counted))
    out = tmp_path / "out"
    code = generate(folder, folder / "more" / "a.png", tmp_path / "missing.png", "--checkpoint", tiny_model,
                    "--out", out, "--steps", "1", "--turntable-seconds", "0", "--no-progress")
    captured = capsys.readouterr()
    assert code == 0 and len(loads) == 1
    assert sorted(p.name for p in out.iterdir()) == ["a", "a-2", "b"]
    assert all((out / name / "gaussians.ply").is_file() for name in ("a", "a-2", "b"))
    assert json.loads((out / "b" / "meta.json").read_text())["foreground"] == "u2netp"
    timings = [json.loads((out / name / "meta.json").read_text())["timings"] for name in ("a", "a-2", "b")]
    assert sum("load_model_s" in t for t in timings) == 1  # the one load is charged to one image, not to each
    skipped = [line for line in captured.err.splitlines() if "skipped" in line]
    assert len(skipped) == 2 and any("broken.png" in line for line in skipped)
    assert any("missing.png: file not found" in line for line in skipped)
    assert "3 of 5 inputs generated" in captured.out


def test_many_images_with_none_usable_exit_2(tmp_path, tiny_model, capsys):
    (tmp_path / "x.png").write_bytes(b"no")
    (tmp_path / "y.png").write_bytes(b"no")
    code = generate(tmp_path / "x.png", tmp_path / "y.png", "--checkpoint", tiny_model, "--out", tmp_path / "o",
                    "--steps", "1", "--turntable-seconds", "0", "--no-progress")
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("skipped") == 2 and "0 of 2 inputs" in captured.out


def test_progress_bars_and_warnings_on_their_own_lines(tmp_path, tiny_model, capsys, monkeypatch):
    """An RGB photo without onnxruntime falls back to the border fill and says so in one line, as does a tiny
    input; --no-progress leaves only those lines on stderr."""
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if onnxruntime could not be imported
    photo = rgb_photo(tmp_path / "photo.png")
    Image.open(photo).resize((12, 10)).save(photo)
    args = [photo, "--checkpoint", tiny_model, "--steps", "2", "--turntable-seconds", "0.1"]
    assert generate(*args, "--out", tmp_path / "quiet", "--no-progress") == 0
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and all(line.startswith("diffusiongs generate: warning: ") for line in lines)
    assert "border-colour fallback" in lines[0] + lines[1] and "12x10 pixels is small" in lines[0] + lines[1]
    assert json.loads((tmp_path / "quiet" / "meta.json").read_text())["foreground"] == "border-fill"
    assert generate(*args, "--out", tmp_path / "bars") == 0
    err = capsys.readouterr().err
    assert "sampling" in err and "turntable" in err
    assert terminal_lines(err) == lines  # the bars cleared themselves; each warning on a line of its own


def test_version(capsys):
    assert entrypoint(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"diffusiongs {__version__}"


def test_unknown_command_and_help(capsys):
    assert entrypoint(["--help"]) == 0
    assert "generate" in capsys.readouterr().out
    assert entrypoint(["frobnicate"]) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_device_cuda_without_a_gpu_is_one_line_in_every_command(tmp_path, tiny_model, capsys):
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    image = rgba_image(tmp_path / "a.png")
    for command in (["generate", str(image), "--checkpoint", str(tiny_model), "--out", str(tmp_path / "out")],
                    ["evaluate", "--checkpoint", str(tiny_model), "--data", str(tmp_path), "--out",
                     str(tmp_path / "e")]):
        assert entrypoint([*command, "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip().endswith("--device cuda: torch sees no CUDA GPU")


class _Parsed(Exception):
    """Raised instead of running a command whose arguments parsed."""


def documented_commands(doc: Path) -> list[list[str]]:
    """The `diffusiongs ...` command lines of a document's bash blocks (continuations joined, comments dropped;
    `torchrun ... -m diffusiongs.cli.main` counted as `diffusiongs`), as argument lists without the program."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", doc.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["torchrun"]:
                words = words[words.index("diffusiongs.cli.main") + 1:]
            elif words[:1] == ["diffusiongs"]:
                words = words[1:]
            else:
                continue
            commands.append(words)
    return commands


def test_training_guide_commands_parse(monkeypatch):
    """Every command of docs/training.md is accepted by the CLI as written (parsed, not run)."""
    real_cli = tyro.cli

    def parse_only(*args, **kwargs):
        real_cli(*args, **kwargs)
        raise _Parsed

    monkeypatch.setattr(tyro, "cli", parse_only)
    commands = documented_commands(ROOT / "docs" / "training.md")
    assert len(commands) >= 10
    for command in commands:
        with pytest.raises(_Parsed):
            entrypoint(command)
