"""The web demo without a browser: what one generation writes, its settings and errors, the splat viewer's copy of
the Gaussians, and the one-line message when gradio is missing (the page itself: test_demo_browser.py)."""

import importlib.util
from dataclasses import replace
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from diffusiongs.cli.main import entrypoint
from diffusiongs.demo.runner import VIEWER_SCALE, DemoRunner, DemoSettings, for_splat_viewer
from diffusiongs.diffusion.schedule import NoiseSchedule, NoiseScheduleConfig
from diffusiongs.errors import InputError
from diffusiongs.gaussians import Gaussians, load_ply
from diffusiongs.inference.mesh import MeshConfig
from diffusiongs.inference.pipeline import ExportFilter, Pipeline
from diffusiongs.render.projection import covariances
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system.io import export_model

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "images" / "checker_cube.png"


@pytest.fixture(scope="module")
def runner(tmp_path_factory, tiny_model) -> DemoRunner:
    return DemoRunner(Pipeline.from_pretrained(tiny_model, device="cpu"), tmp_path_factory.mktemp("results"), frames=4,
                      mesh_cfg=MeshConfig(resolution=24, views=6, image_size=32, min_opacity=0.0))


def test_one_generation_writes_what_the_page_shows(runner):
    pytest.importorskip("skimage")
    trimesh = pytest.importorskip("trimesh")
    reports = []
    out = runner.run(EXAMPLE, DemoSettings(steps=2, seed=1), lambda fraction, message: reports.append(fraction))
    assert out.folder.parent == runner.out_root
    with Image.open(out.condition) as condition:
        assert condition.size == (runner.pipeline.cfg.resolution,) * 2
    gaussians = load_ply(out.gaussians)
    assert gaussians.num_gaussians > 0 and bool((gaussians.opacities > ExportFilter().min_opacity).all())
    assert load_ply(out.viewer).num_gaussians == gaussians.num_gaussians
    assert sum(1 for _ in iio.imiter(out.video, plugin="FFMPEG")) == 4
    assert isinstance(trimesh.load(out.mesh, file_type="glb"), trimesh.Scene)
    assert reports == sorted(reports) and reports[-1] == 1.0
    assert out.summary.startswith(f"{gaussians.num_gaussians} Gaussians") and "ddim, 2 steps, seed 1" in out.summary


def test_a_scene_generation_writes_a_fly_through_and_no_mesh(runner):
    room = ROOT / "examples" / "images" / "room.png"
    out = runner.run(room, DemoSettings(steps=2, domain="scene"))
    assert out.mesh is None and out.video.name == "flythrough.mp4"
    assert sum(1 for _ in iio.imiter(out.video, plugin="FFMPEG")) == 4
    scene, viewer = load_ply(out.gaussians), load_ply(out.viewer)
    torch.testing.assert_close(viewer.means, scene.means)  # already in the viewer's y-down frame: no turn, no shrink
    with Image.open(out.condition) as condition, Image.open(room) as photo:
        assert condition.size == (runner.pipeline.cfg.resolution,) * 2 and photo.size != condition.size


def test_without_mesh_or_frames_nothing_more_is_written(runner):
    quiet = DemoRunner(runner.pipeline, runner.out_root, frames=0)
    out = quiet.run(EXAMPLE, DemoSettings(steps=1, mesh=False))
    assert out.video is None and out.mesh is None
    assert sorted(p.name for p in out.folder.iterdir()) == ["gaussians.ply", "input.png", "viewer"]


@pytest.mark.parametrize("settings, message", [(DemoSettings(steps=0), "steps: 0"),
                                               (DemoSettings(foreground_ratio=1.5), "foreground ratio: 1.5"),
                                               (DemoSettings(seed=-1), "seed: -1")])
def test_bad_settings_are_one_line_errors(runner, settings, message):
    with pytest.raises(InputError, match=message):
        runner.run(EXAMPLE, settings)


def test_steps_are_limited_by_the_models_schedule(runner, monkeypatch):
    short = NoiseSchedule(NoiseScheduleConfig(num_timesteps=50))  # a model trained with 50 noise levels
    monkeypatch.setattr(runner.pipeline, "schedule", short)
    assert runner.max_steps == 50
    with pytest.raises(InputError, match=r"steps: 60 is outside 1\.\.50"):
        runner.run(EXAMPLE, DemoSettings(steps=60))


def scene_only_tiny() -> DiffusionGS:
    """The tiny preset with a scene decoder only (as the official scene checkpoint)."""
    cfg = preset("tiny")
    return DiffusionGS(replace(cfg, denoiser=replace(cfg.denoiser, decoders=("scene",))))


def test_a_scene_only_model_makes_scenes_and_refuses_objects_in_one_line(tmp_path):
    scenes = DemoRunner(Pipeline(scene_only_tiny()), tmp_path, frames=0)
    assert scenes.domains == ("scene",)
    with pytest.raises(InputError, match="domain: the model has no object decoder"):
        scenes.run(EXAMPLE, DemoSettings(steps=1))
    out = scenes.run(ROOT / "examples" / "images" / "room.png", DemoSettings(steps=1, domain="scene", mesh=False))
    assert load_ply(out.gaussians).num_gaussians > 0


def test_bad_upload_is_an_error_naming_the_file(runner, tmp_path):
    bad = tmp_path / "holiday.png"
    bad.write_text("not a picture")
    with pytest.raises(InputError, match="holiday.png: not a readable image"):
        runner.run(bad, DemoSettings(steps=1))


def test_the_splat_viewers_copy_is_the_same_object_turned_upright_and_shrunk():
    count = 50
    generator = torch.Generator().manual_seed(0)
    gaussians = Gaussians(means=torch.randn(count, 3, generator=generator),
                          quats=torch.nn.functional.normalize(torch.randn(count, 4, generator=generator), dim=-1),
                          scales=torch.rand(count, 3, generator=generator) + 0.1,
                          opacities=torch.rand(count, generator=generator), colors=torch.rand(count, 3))
    turned = for_splat_viewer(gaussians)
    # (x, y, z) -> (x, -z, y): our up (+z) becomes the viewer's up (-y).
    turn = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    torch.testing.assert_close(turned.means, VIEWER_SCALE * gaussians.means @ turn.T)
    expected = VIEWER_SCALE**2 * turn @ covariances(gaussians.quats, gaussians.scales) @ turn.T
    torch.testing.assert_close(covariances(turned.quats, turned.scales), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(turned.colors, gaussians.colors) and torch.equal(turned.opacities, gaussians.opacities)


def test_demo_serves_a_scene_page_for_a_scene_only_model(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gradio")
    import diffusiongs.demo.app as app

    model = scene_only_tiny()
    folder = export_model(tmp_path / "scenes", model.cfg, model, torch.float32)
    served = []
    monkeypatch.setattr(app, "launch", lambda page, *args: served.append(page))
    assert entrypoint(["demo", "--checkpoint", str(folder), "--device", "cpu", "--out", str(tmp_path / "out")]) == 0
    assert len(served) == 1 and "is a scene-only model: the page makes scenes" in capsys.readouterr().out


def test_demo_without_gradio_says_how_to_install_it(monkeypatch, capsys):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert entrypoint(["demo"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "diffusiongs demo: error: the web demo needs gradio: pip install 'diffusiongs[demo]'"


def test_page_errors_are_one_line_messages():
    gr = pytest.importorskip("gradio")
    from diffusiongs.demo.app import _guarded

    def bad_input():
        raise InputError("photo.png: not a readable image")

    def bug():
        raise np.linalg.LinAlgError("singular matrix")

    with pytest.raises(gr.Error, match="photo.png: not a readable image"):
        _guarded(bad_input)()
    with pytest.raises(gr.Error, match="generation failed: LinAlgError: singular matrix"):
        _guarded(bug)()
