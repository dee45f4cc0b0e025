"""Scenes from one image: cameras from a named trajectory or a RealEstate10K camera file, moved into the frame the
model trained in; `generate --domain scene` with a small model, the shipped demo model and an official-layout scene
checkpoint; bad camera files in one line."""

import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from official_checkpoints import RES, lightning_checkpoint, official_tensors, save
from PIL import Image
from readme_snippets import generate, readme_block, readme_generate_args

from diffusiongs.cli.main import entrypoint
from diffusiongs.data.images import center_crop_square, resize_example
from diffusiongs.data.normalize import SCENE_SCALE_FACTOR, normalize_scene_cameras
from diffusiongs.data.re10k import camera_rows_to_w2c_K, read_camera_file, write_camera_file
from diffusiongs.data.types import MultiViewExample
from diffusiongs.errors import InputError
from diffusiongs.gaussians import load_ply
from diffusiongs.geometry import Cameras, intrinsics_from_fov, look_at
from diffusiongs.geometry.path import interpolate_poses
from diffusiongs.inference import ExportFilter, GenerateConfig, OutputConfig, Pipeline, SamplerConfig, write_outputs
from diffusiongs.inference.scene import (
    FLY_THROUGH_MARGIN,
    SceneCameraConfig,
    ScenePath,
    scene_path,
    square_scene_view,
    trajectory_path,
)

ROOT = Path(__file__).resolve().parents[1]
ROOM_CAMERAS = ROOT / "examples" / "cameras" / "room.txt"
KEEP_ALL = ExportFilter(min_opacity=0.0, drop_clipped=False)

# float32 camera values of size O(1-10) carry ~1e-6 of rounding; a few operations in float64 add nothing visible.
CAMERA_ATOL = 1e-5


def walk(num: int = 10, seed: int = 0) -> Cameras:
    """A smooth hand-held path in a z-up world (metres): a camera circling a point ahead while drifting."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, num, dtype=torch.float64)
    angle = 0.3 + 0.9 * t
    eye = torch.stack([2.0 * torch.cos(angle), 2.0 * torch.sin(angle), 1.5 + 0.05 * torch.sin(6 * t)], -1)
    target = torch.tensor([0.2, 0.1, 0.8], dtype=torch.float64) + 0.1 * torch.randn(num, 3, generator=g,
                                                                                 dtype=torch.float64)
    K = intrinsics_from_fov(65.0, 64, 48, batch_shape=(num,))
    K[:, 0, 2] += 1.5  # an off-centre principal point must survive the file and the crop
    return Cameras(look_at(eye, target).float(), K, 64, 48)


def photo(path: Path, width: int = 64, height: int = 48) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)).save(path)
    return path


def project(points: torch.Tensor, c2w: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates (x, y) of world points seen by one OpenCV camera (written out here, independently of the
    package's camera code)."""
    rotation, center = c2w[:3, :3].double(), c2w[:3, 3].double()
    camera = (points.double() - center) @ rotation  # R^T (p - c), row-wise
    pixels = camera @ K.double().T
    return pixels[:, :2] / pixels[:, 2:]


def assert_condition_gaussians_on_their_pixels(means: torch.Tensor, num_free: int, c2w, K, size: int) -> None:
    """Pixel (i, j) of the condition view put its Gaussian on its own ray: it projects back onto (j + 0.5, i + 0.5).
    Gaussians hundreds of units away (the scene decoder's depths) keep ~1e-4 px of float32 error."""
    pixels = project(means[num_free:num_free + size * size], torch.as_tensor(c2w), torch.as_tensor(K))
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    expected = torch.stack([j.reshape(-1) + 0.5, i.reshape(-1) + 0.5], -1).double()
    torch.testing.assert_close(pixels, expected, atol=1e-2, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Camera files and named trajectories
# ---------------------------------------------------------------------------------------------------------------

def test_camera_files_round_trip(tmp_path):
    cameras = walk()
    write_camera_file(tmp_path / "cams.txt", cameras, header="https://www.youtube.com/watch?v=example")
    timestamps, rows = read_camera_file(tmp_path / "cams.txt")
    w2c, K = camera_rows_to_w2c_K(rows, cameras.width, cameras.height)
    assert timestamps.tolist() == list(range(10))
    torch.testing.assert_close(torch.linalg.inv(torch.from_numpy(w2c)).float(), cameras.c2w, atol=CAMERA_ATOL, rtol=0)
    torch.testing.assert_close(torch.from_numpy(K).float(), cameras.K, atol=CAMERA_ATOL, rtol=0)


def test_file_cameras_reach_the_model_as_training_prepares_scenes(tmp_path):
    """The rig is the chosen frames normalised over themselves (normalize_scene_cameras), and the photo and its
    intrinsics are centre-cropped and resampled, exactly as the training dataset and the evaluation protocol
    prepare a scene's frames."""
    cameras = walk()
    frames = (6, 0, 3, 9)
    write_camera_file(tmp_path / "cams.txt", cameras)
    path = scene_path(SceneCameraConfig(cameras=tmp_path / "cams.txt", frames=frames), 3, 64, 48)
    rgb = torch.rand(3, 48, 64)
    square, prepared = square_scene_view(rgb, path, 32)
    prepared = prepared.normalized()

    chosen = torch.tensor(frames)
    c2w, _ = normalize_scene_cameras(cameras.c2w[chosen])
    example = MultiViewExample("x", "scene", rgb.expand(4, 3, 48, 64), Cameras(c2w, cameras.K[chosen], 64, 48))
    expected = resize_example(center_crop_square(example), 32)
    rig = prepared.rig_cameras
    torch.testing.assert_close(rig.c2w, expected.cameras.c2w, atol=CAMERA_ATOL, rtol=0)
    torch.testing.assert_close(rig.K, expected.cameras.K, atol=CAMERA_ATOL, rtol=0)
    torch.testing.assert_close(square, expected.images[0])
    assert (rig.width, rig.height) == (32, 32)
    # The training frame: centred on the mean camera, translations at most 1/1.35.
    assert rig.centers.mean(0).abs().max() < CAMERA_ATOL
    assert rig.centers.abs().max() == pytest.approx(1 / SCENE_SCALE_FACTOR, abs=CAMERA_ATOL)


def test_orbit_circles_one_point_and_forward_walks_straight():
    step = 8.0
    orbit = trajectory_path("orbit", 3, 64, 48, 60.0, step).normalized()
    rig = orbit.rig_cameras
    # Consecutive views turn by the step about the vertical axis (y, down); the camera moves to its right.
    relative = rig.c2w[:-1, :3, :3].transpose(-1, -2).double() @ rig.c2w[1:, :3, :3].double()
    angles = torch.rad2deg(torch.acos(((relative.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)))
    torch.testing.assert_close(angles, torch.full((3,), step, dtype=torch.float64), atol=1e-3, rtol=0)
    move = rig.c2w[0, :3, :3].double().T @ (rig.centers[1] - rig.centers[0]).double()
    assert move[0] > 0 and abs(move[1]) < CAMERA_ATOL
    # Every optical axis passes through one point: least squares over the axes leaves no residual.
    eye = torch.eye(3, dtype=torch.float64)
    axes = [eye - torch.outer(f, f) for f in rig.forward.double()]
    point = torch.linalg.solve(sum(axes), sum(a @ c for a, c in zip(axes, rig.centers.double())))
    residual = max(float((a @ (point - c)).norm()) for a, c in zip(axes, rig.centers.double()))
    assert residual < 1e-5 and float(point[2]) > 1.0  # ahead of the cameras
    # The field of view spans the shorter side of the photo (what the square crop keeps).
    assert float(orbit.cameras.K[0, 0, 0]) == pytest.approx(24 / math.tan(math.radians(30)), rel=1e-6)

    forward = trajectory_path("forward", 3, 64, 48, 60.0, step).normalized().rig_cameras
    torch.testing.assert_close(forward.c2w[:, :3, :3], forward.c2w[:1, :3, :3].expand(4, 3, 3))
    steps = forward.centers[1:] - forward.centers[:-1]
    torch.testing.assert_close(steps, forward.forward[:3] * steps.norm(dim=-1, keepdim=True), atol=CAMERA_ATOL,
                               rtol=0)


def test_poses_between_keys_turn_and_move_evenly_and_continue_past_the_ends():
    angle = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    keys = torch.eye(4, dtype=torch.float64).repeat(3, 1, 1)
    keys[:, 0, 0], keys[:, 0, 2], keys[:, 2, 0], keys[:, 2, 2] = angle.cos(), angle.sin(), -angle.sin(), angle.cos()
    keys[:, :3, 3] = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 2, 0]], dtype=torch.float64)
    poses = interpolate_poses(keys, torch.tensor([0.0, 0.25, 1.0, 1.5, 2.5, -1.0]))
    torch.testing.assert_close(poses[[0, 2]], keys[[0, 1]])
    turned = torch.atan2(poses[:, 0, 2], poses[:, 0, 0])
    torch.testing.assert_close(turned, torch.tensor([0.0, 0.1, 0.4, 0.7, 1.3, -0.4], dtype=torch.float64))
    torch.testing.assert_close(poses[:, :3, 3], torch.tensor([[0.0, 0, 0], [0.25, 0, 0], [1, 0, 0], [1, 1, 0],
                                                             [1, 3, 0], [-1, 0, 0]], dtype=torch.float64))


def test_fly_through_starts_at_the_photo_and_goes_past_the_denoised_views():
    step = 8.0
    path = trajectory_path("orbit", 3, 64, 48, 60.0, step).normalized()
    frames = path.fly_through(48)
    torch.testing.assert_close(frames.c2w[0], path.rig_cameras.c2w[0])
    condition = path.rig_cameras.c2w[0, :3, :3].double()
    turned = torch.atan2(*(frames.c2w[:, :3, :3].double() @ condition.T)[:, [0, 2], 2].unbind(-1))
    reach = (1 + FLY_THROUGH_MARGIN) * 3 * step  # past the last noisy view (3 steps) by half the rig's span
    assert math.degrees(float(turned.abs().max())) == pytest.approx(reach, abs=1e-3)
    assert (frames.K == frames.K[0]).all() and torch.equal(frames.K[0], path.cameras.K[path.rig[0]])


# ---------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------

def test_generate_domain_scene_writes_a_fly_through_and_a_ply_in_the_frame_of_its_cameras(tmp_path, tiny_model_f32):
    write_camera_file(tmp_path / "cams.txt", walk())
    out = tmp_path / "out"
    code = generate(photo(tmp_path / "room.jpg"), "--checkpoint", tiny_model_f32, "--domain", "scene", "--cameras",
                    tmp_path / "cams.txt", "--frames", 2, 0, 4, 6, "--out", out, "--steps", 2, "--min-opacity", 0,
                    "--turntable-seconds", 0.5, "--turntable-fps", 16, "--turntable-size", 24, "--no-progress")
    assert code == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["domain"] == "scene" and meta["foreground"] == "none"
    assert set(meta["files"]) == {"gaussians.ply", "views.png", "flythrough.mp4", "flythrough.gif", "meta.json"}
    assert meta["export"]["num_predicted"] == meta["export"]["num_written"] == 4 * 32 * 32
    assert "clip box" not in meta["export"]["rule"]
    cams = meta["scene_cameras"]
    assert cams["frames"] == [2, 0, 4, 6] and len(cams["rig_c2w"]) == 4
    means = load_ply(out / "gaussians.ply").means
    assert_condition_gaussians_on_their_pixels(means, 0, cams["rig_c2w"][0], cams["rig_K"][0], 32)
    assert sum(1 for _ in iio.imiter(out / "flythrough.mp4", plugin="FFMPEG")) == 8
    assert iio.imread(out / "flythrough.gif", index=None).shape[:3] == (8, 24, 24)
    assert np.asarray(Image.open(out / "views.png")).shape[:2] == (32, 5 * 32 + 4 * 4)  # input + 4 renders


def test_generate_scene_from_python_with_a_trajectory_or_own_cameras(tmp_path, tiny_model_f32):
    pipeline = Pipeline.from_pretrained(tiny_model_f32, device="cpu")
    cfg = GenerateConfig(sampler=SamplerConfig("dpmpp2m", 2), export=KEEP_ALL)
    reports = []
    image = np.asarray(Image.open(photo(tmp_path / "p.png")))
    result = pipeline.generate_scene(image, SceneCameraConfig(trajectory="forward"), cfg,
                                     progress=lambda done, total: reports.append(done))
    assert reports == [1, 2] and result.domain == "scene" and result.views.shape == (4, 3, 32, 32)
    # the web demo's preview of a scene photo is the view the model got (cropped, not padded)
    assert torch.equal(pipeline.scene_condition(image).rgb, result.condition.rgb)
    rig = result.path.rig_cameras
    assert torch.equal(result.cameras.c2w, rig.c2w)
    assert_condition_gaussians_on_their_pixels(result.gaussians.means, 0, rig.c2w[0], rig.K[0], 32)

    own = walk()  # the user's cameras, intrinsics for the 64x48 photo
    mine = pipeline.generate_scene(image, ScenePath(own, (1, 3, 5, 7)), cfg)
    expected = normalize_scene_cameras(own.c2w[torch.tensor([1, 3, 5, 7])])[0]
    torch.testing.assert_close(mine.cameras.c2w, expected, atol=CAMERA_ATOL, rtol=0)
    with pytest.raises(InputError, match="the rig needs 4 frames, got 3"):
        pipeline.generate_scene(image, ScenePath(own, (1, 3, 5)), cfg)
    with pytest.raises(InputError, match="intrinsics are for a 64x48 image, the photo is 48x64"):
        pipeline.generate_scene(image.transpose(1, 0, 2), ScenePath(own, (1, 3, 5, 7)), cfg)
    with pytest.raises(InputError, match="--up y: applies to objects"):
        write_outputs(pipeline, mine, tmp_path / "o", OutputConfig(up="y"))


def test_readme_scene_command_runs_the_shipped_model_without_an_object_clip_box(tmp_path):
    """The README's scene command (fewer steps) on its procedural room: the demo model's scene decoder."""
    assert generate(*readme_generate_args("scene-command"), "--out", tmp_path, "--steps", 1, "--turntable-seconds", 0.1,
                    "--min-opacity", 0, "--no-progress") == 0
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["domain"] == "scene" and "clip box" not in meta["export"]["rule"]
    means = load_ply(tmp_path / "gaussians.ply").means
    assert means.shape[0] == 4 * 128 * 128
    # The object decoder (or the export filter's clip box) would keep every centre inside [-1, 1]^3.
    assert means.abs().amax() > 1.0
    cams = meta["scene_cameras"]
    assert_condition_gaussians_on_their_pixels(means, 0, cams["rig_c2w"][0], cams["rig_K"][0], 128)


def test_readme_scene_python_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("python-scene-api"), "README.md", "exec"), {})
    meta = json.loads((tmp_path / "outputs" / "room_api" / "meta.json").read_text())
    assert meta["domain"] == "scene" and "flythrough.mp4" in meta["files"]
    assert "rig cameras in the scene frame: (4, 4, 4)" in capsys.readouterr().out


def test_official_layout_scene_checkpoint_generates_a_scene_from_the_command_line(tmp_path, capsys):
    """A scene checkpoint in the official layout (small random weights): converted, then `generate` picks the scene
    domain by itself (the model has no object decoder) and refuses objects."""
    ckpt = save(lightning_checkpoint(official_tensors("scene", seed=2)), tmp_path / "scene_ckpt_256.ckpt")
    model = tmp_path / "official-scene"
    assert entrypoint(["convert-official", str(ckpt), "--out", str(model), "--resolution", str(RES)]) == 0
    out = tmp_path / "out"
    assert generate(photo(tmp_path / "p.png"), "--checkpoint", model, "--out", out, "--steps", 2,
                    "--min-opacity", 0, "--turntable-seconds", 0.25, "--turntable-fps", 8, "--no-progress") == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["domain"] == "scene" and meta["model"]["ray_embedding"] == "plucker"
    assert "orbit trajectory" in meta["scene_cameras"]["source"] and "flythrough.mp4" in meta["files"]
    cams = meta["scene_cameras"]
    means = load_ply(out / "gaussians.ply").means
    assert_condition_gaussians_on_their_pixels(means, 2, cams["rig_c2w"][0], cams["rig_K"][0], RES)
    capsys.readouterr()
    assert generate(photo(tmp_path / "p.png"), "--checkpoint", model, "--domain", "object", "--out", out) == 2
    assert "--domain object: " in capsys.readouterr().err
    with pytest.raises(InputError, match="a scene-only model; use Pipeline.generate_scene"):
        Pipeline.from_pretrained(model, device="cpu")(tmp_path / "p.png")


# ---------------------------------------------------------------------------------------------------------------
# Bad camera files and options
# ---------------------------------------------------------------------------------------------------------------

GOOD_ROW = "0 0.8 1.1 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"


@pytest.mark.parametrize("content,where,problem", [
    (f"{GOOD_ROW}\n1 0.8 1.1 0.5 0.5 0 0 1 0 0", ":2:", "expected 19 numbers"),
    (f"https://youtu.be/x\n{GOOD_ROW}\n{GOOD_ROW.replace('1.1', 'abc')}", ":3:", "not a number"),
    (f"{GOOD_ROW.replace('0.8', 'nan')}", ":1:", "values must be finite"),
    (f"{GOOD_ROW.replace('0.8', '-0.8')}", ":1:", "focal lengths fx, fy must be > 0"),
    (f"{GOOD_ROW}\n# comment\n{GOOD_ROW.replace('0 0 1 0 0 0 0 1 0 0 0 0 1 0', '0 0 2 0 0 0 0 1 0 0 0 0 1 0')}",
     ":3:", "is not a rotation"),
    (f"{GOOD_ROW.replace('0 0 1 0 0 0 0 1 0 0 0 0 1 0', '0 0 -1 0 0 0 0 1 0 0 0 0 1 0')}", ":1:",
     "is not a rotation"),
    ("https://youtu.be/x\n\n", ":", "no camera lines"),
    ("\x89PNG\x00\xff", ":", "cannot read the camera file"),
    (f"{GOOD_ROW}\n{GOOD_ROW}", ":", "has 2 camera lines"),
])
def test_bad_camera_files_get_one_line_naming_the_file_and_line(tmp_path, tiny_model_f32, capsys, content, where,
                                                               problem):
    cams = tmp_path / "cams.txt"
    cams.write_bytes(content.encode("latin-1"))
    code = generate(photo(tmp_path / "p.png"), "--checkpoint", tiny_model_f32, "--domain", "scene", "--cameras", cams,
                    "--out", tmp_path / "o", "--steps", 1, "--no-progress")
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{cams}{where}" in err and problem in err
    assert not (tmp_path / "o" / "gaussians.ply").exists()


@pytest.mark.parametrize("options,problem", [
    (["--fov", "180"], "--fov: must be in (0, 180)"), (["--orbit-step", "0"], "--orbit-step: must be non-zero"),
    (["--frames", "0", "1", "2", "3"], "--frames: only with --cameras"),
    (["--cameras", "nope.txt"], "nope.txt: file not found"),
    (["--cameras", str(ROOM_CAMERAS), "--frames", "0", "4", "4", "8"], "--frames: must be distinct"),
])
def test_bad_scene_options_stop_before_the_model_is_loaded(tmp_path, capsys, monkeypatch, options, problem):
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Pipeline, "from_pretrained", fail)
    code = generate(photo(tmp_path / "p.png"), "--out", tmp_path / "o", *options)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and problem in err


@pytest.mark.parametrize("options,problem", [
    (["--cameras", str(ROOM_CAMERAS)], "--cameras: camera files are for scenes"),
    (["--domain", "scene", "--cameras", str(ROOM_CAMERAS), "--frames", "0", "4"], "so give 4 frames"),
    (["--domain", "scene", "--up", "y"], "--up y: applies to objects"),
])
def test_scene_options_that_do_not_fit_the_model_are_one_line(tmp_path, tiny_model_f32, capsys, options, problem):
    code = generate(photo(tmp_path / "p.png"), "--checkpoint", tiny_model_f32, "--out", tmp_path / "o", "--steps", 1,
                    *options)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and problem in err
