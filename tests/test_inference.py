"""Inference from Python: inputs of every kind, background removal, the export filter, progress, the README's
Python snippet as written."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from readme_snippets import readme_block

from diffusiongs.errors import InputError, InputWarning
from diffusiongs.gaussians import Gaussians
from diffusiongs.inference import ExportFilter, GenerateConfig, Pipeline, PreprocessConfig, SamplerConfig
from diffusiongs.inference import segment as segment_module
from diffusiongs.inference.preprocess import prepare_condition_image, read_rgba
from diffusiongs.inference.segment import U2NETP_PATH, U2NETP_SHA256, segment
from diffusiongs.system import DiffusionGS, preset

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "images"


def rendered_object(name: str = "pedestal") -> np.ndarray:
    """A shipped example: a procedural object rendered with exact alpha, float RGBA in [0, 1]."""
    return np.asarray(Image.open(EXAMPLES / f"{name}.png").convert("RGBA"), dtype=np.float32) / 255.0


def over(rgba: np.ndarray, colour: tuple[float, float, float]) -> np.ndarray:
    alpha = rgba[..., 3:]
    return rgba[..., :3] * alpha + np.asarray(colour, dtype=np.float32) * (1 - alpha)


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    a, b = mask > 0.5, truth > 0.5
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def tiny_pipeline() -> Pipeline:
    torch.manual_seed(0)
    return Pipeline(DiffusionGS(preset("tiny")), device="cpu")


def without_onnxruntime(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

def test_path_pil_image_and_arrays_give_the_same_condition(tmp_path):
    rgba8 = (rendered_object() * 255).round().astype(np.uint8)
    path = tmp_path / "object.png"
    Image.fromarray(rgba8).save(path)
    inputs = [path, str(path), Image.open(path), rgba8, rgba8.astype(np.float32) / 255.0]
    conditions = [prepare_condition_image(image, 32) for image in inputs]
    for condition in conditions[1:]:
        assert torch.equal(condition.rgb, conditions[0].rgb) and torch.equal(condition.alpha, conditions[0].alpha)
    assert {c.foreground for c in conditions} == {"alpha"}


def test_exif_orientation_turns_phone_photos_upright(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)  # landscape as stored by the sensor, marker in the top-left corner
    stored[:10, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.fromarray(stored).save(tmp_path / "phone.png", exif=exif)
    rgba, _ = read_rgba(tmp_path / "phone.png")
    expected = np.rot90(stored, k=-1)  # clockwise: the marker ends up top-right of a portrait image
    assert rgba.shape == (60, 40, 4)
    np.testing.assert_array_equal((rgba[..., :3] * 255).round().astype(np.uint8), expected)


def test_high_bit_depth_grey_images_keep_their_values(tmp_path):
    """16-bit grey PNGs (Pillow mode I;16) and float images (mode F) are scaled, not clipped to white above 255."""
    ramp = np.linspace(0, 65535, 48 * 32).reshape(48, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode == "I;16"
    rgba, has_alpha = read_rgba(tmp_path / "scan.png")
    expected = ramp / 65535.0
    for channel in range(3):
        np.testing.assert_allclose(rgba[..., channel], expected, atol=1e-6)
    assert not has_alpha and (rgba[..., 3] == 1).all()
    floats = (ramp / 65535.0).astype(np.float32)
    np.testing.assert_allclose(read_rgba(Image.fromarray(floats))[0][..., 0], floats, atol=1e-7)


def test_small_inputs_warn_and_large_ones_do_not():
    small = np.ones((16, 16, 4), np.float32)
    with pytest.warns(InputWarning, match="16x16 pixels is small"):
        prepare_condition_image(small, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputWarning)
        prepare_condition_image(np.ones((64, 64, 4), np.float32), 128)  # half the model resolution is enough


@pytest.mark.parametrize("array,problem", [
    (np.full((8, 8, 3), 2.0, np.float32), "in \\[0, 1\\]"),
    (np.zeros((8, 8, 3), np.int64), "dtype int64"),
    (np.zeros((8, 8, 2), np.uint8), "HxW, HxWx3 or HxWx4"),
])
def test_unusable_arrays_are_named_input_errors(array, problem):
    with pytest.raises(InputError, match=f"<array .*{problem}"):
        prepare_condition_image(array, 32)


# ---------------------------------------------------------------------------------------------------------------
# Background removal
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("segmenter", ["u2netp", "border-fill"])
@pytest.mark.parametrize("backdrop", [(1.0, 1.0, 1.0), (0.25, 0.45, 0.8)])
def test_background_removers_find_a_rendered_object(segmenter, backdrop):
    rgba = rendered_object("checker_cube")
    result = segment(over(rgba, backdrop), segmenter)
    assert result.method == segmenter and result.alpha.shape == rgba.shape[:2]
    assert 0.0 <= result.alpha.min() and result.alpha.max() <= 1.0
    assert iou(result.alpha, rgba[..., 3]) > 0.9  # measured >= 0.99 (docs/segmentation.md); 0.9 = clearly broken


def test_rgb_input_is_segmented_by_u2netp_by_default():
    condition = prepare_condition_image(over(rendered_object(), (1, 1, 1)), 64)
    assert condition.foreground == "u2netp"
    assert 0.05 < condition.alpha.mean() < 0.9


def test_without_onnxruntime_the_border_fill_is_used_and_says_so(monkeypatch):
    without_onnxruntime(monkeypatch)
    rgb = over(rendered_object(), (1, 1, 1))
    with pytest.warns(InputWarning, match="border-colour fallback") as record:
        condition = prepare_condition_image(rgb, 64)
    assert len(record) == 1 and condition.foreground == "border-fill"
    with pytest.raises(InputError, match="needs onnxruntime"):
        prepare_condition_image(rgb, 64, PreprocessConfig(segmenter="u2netp"))


def test_the_border_fill_refuses_a_busy_backdrop_in_one_line():
    rgb = over(rendered_object(), (1, 1, 1))
    rgb[:40] = np.random.default_rng(0).uniform(0, 1, rgb[:40].shape)  # noise along the top border
    rgb[:, :40] = np.random.default_rng(1).uniform(0, 1, rgb[:, :40].shape)
    with pytest.raises(InputError, match="found no object .it needs a plain backdrop"):
        prepare_condition_image(rgb, 64, PreprocessConfig(segmenter="border-fill"))


def test_the_shipped_u2netp_file_is_checked(monkeypatch, tmp_path):
    tampered = tmp_path / "u2netp.onnx"
    tampered.write_bytes(U2NETP_PATH.read_bytes()[:-1] + b"\x00")
    segment_module._u2netp_session.cache_clear()
    monkeypatch.setattr(segment_module, "U2NETP_PATH", tampered)
    with pytest.raises(RuntimeError, match=U2NETP_SHA256):
        segment(np.ones((8, 8, 3), np.float32), "u2netp")
    segment_module._u2netp_session.cache_clear()


# ---------------------------------------------------------------------------------------------------------------
# Export filter, progress, the README snippet
# ---------------------------------------------------------------------------------------------------------------

def test_export_filter_drops_transparent_and_clamped_gaussians():
    means = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.99, 0.2], [1.0, 0.0, 0.0], [0.0, -1.0, 0.3], [0.1, 0.1, 0.1]])
    opacities = torch.tensor([0.5, 0.9, 0.9, 0.9, 0.02])
    n = len(means)
    g = Gaussians(means=means, quats=torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), scales=torch.full((n, 3), 0.1),
                  opacities=opacities, colors=torch.rand(n, 3))
    assert torch.equal(ExportFilter().apply(g, clip_box=1.0).means, means[:2])  # on a face: index 2, 3; 0.02: 4
    assert ExportFilter().apply(g, clip_box=None).num_gaussians == 4  # no clip box (official decoder): none pinned
    assert ExportFilter(drop_clipped=False).apply(g, clip_box=1.0).num_gaussians == 4
    assert ExportFilter(min_opacity=0.0, drop_clipped=False).apply(g, clip_box=1.0).num_gaussians == 5


def test_pipeline_reports_progress_and_records_what_it_did(tiny_pipeline):
    reports = []
    image = over(rendered_object(), (1, 1, 1))
    result = tiny_pipeline(image, GenerateConfig(sampler=SamplerConfig(num_steps=3)),
                           progress=lambda done, total: reports.append((done, total)))
    assert reports == [(1, 3), (2, 3), (3, 3)]
    assert result.condition.foreground == "u2netp" and result.input.startswith("<array 256x256x3")
    assert result.num_raw_gaussians == 4 * 32 * 32 >= result.gaussians.num_gaussians
    assert (result.gaussians.opacities > 0.02).all() and (result.gaussians.means.abs() < 1.0).all()


def test_readme_python_snippet_runs_as_written(tmp_path, monkeypatch, capsys):
    """Run from a folder that has the repository's examples/ beside it, as a user in a checkout would."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_block("python-api"), "README.md", "exec"), {})
    outputs = [p for p in (tmp_path / "outputs").rglob("meta.json")]
    assert len(outputs) == 1
    meta = json.loads(outputs[0].read_text())
    assert set(meta["files"]) >= {"gaussians.ply", "views.png", "meta.json"}
    assert capsys.readouterr().out.strip()
