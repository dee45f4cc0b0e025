"""Mesh export (``diffusiongs.inference.mesh``): a shell of Gaussians becomes a closed mesh on that shell with its
colours, the GLB re-imports with trimesh in glTF's frame, faint results give an empty mesh, the scores of a mesh,
and ``generate --mesh``."""

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from diffusiongs.cli.main import entrypoint
from diffusiongs.errors import InputError
from diffusiongs.evaluation import GeometryConfig
from diffusiongs.evaluation.scoring import mesh_geometry_scores
from diffusiongs.gaussians import Gaussians
from diffusiongs.inference import mesh as mesh_module
from diffusiongs.inference.mesh import (
    GLTF_FROM_WORLD,
    ColoredMesh,
    MeshConfig,
    extract_mesh,
    grid_points,
    render_views,
    save_glb,
    srgb_to_linear,
)
from diffusiongs.metrics import chamfer_distance
from diffusiongs.render.config import EXTEND_MAX, RenderConfig

trimesh = pytest.importorskip("trimesh")
pytest.importorskip("skimage")

ROOT = Path(__file__).resolve().parents[1]
CENTRE = torch.tensor([0.12, -0.08, 0.05])
"""Off the origin, so that a flipped or permuted axis or a grid offset moves the mesh."""
RADIUS = 0.5
SIGMA = 0.006
RED, BLUE = (0.9, 0.1, 0.1), (0.1, 0.1, 0.9)
SMALL = MeshConfig(resolution=48, views=16, image_size=96, bound=0.8)


def fibonacci_sphere(count: int) -> torch.Tensor:
    k = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - 2 * k / count
    azimuth = k * math.pi * (3 - math.sqrt(5))
    ring = torch.sqrt(1 - z * z)
    return torch.stack([ring * torch.cos(azimuth), ring * torch.sin(azimuth), z], dim=-1).float()


def shell(count: int = 40_000) -> Gaussians:
    """Small opaque Gaussians on a sphere (about 1.5 sigma apart: an opaque surface), red above its equator and blue
    below."""
    means = CENTRE + RADIUS * fibonacci_sphere(count)
    colors = torch.where(means[:, 2:] > CENTRE[2], torch.tensor(RED), torch.tensor(BLUE))
    return Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).expand(count, 4).clone(),
                     scales=torch.full((count, 3), SIGMA), opacities=torch.full((count,), 0.9), colors=colors)


@pytest.fixture(scope="module")
def sphere_mesh() -> ColoredMesh:
    return extract_mesh(shell(), SMALL)


def pixel_size(cfg: MeshConfig) -> float:
    """World size of a render's pixel at the renders' distance (the object is nearer: its pixels are smaller)."""
    distance = math.sqrt(3) * cfg.bound / math.sin(math.radians(cfg.fov_deg) / 2)
    return distance * 2 * math.tan(math.radians(cfg.fov_deg) / 2) / cfg.image_size


def test_a_shell_of_gaussians_becomes_a_closed_outward_mesh_on_it(sphere_mesh):
    cfg, pixel = SMALL, pixel_size(SMALL)
    # Error sources, each at most: the renderer draws a splat out to EXTEND_MAX standard deviations of its screen
    # footprint (world sigma plus the eps2d low-pass filter), and opacity saturates, so the silhouette where alpha
    # reaches min_alpha can grow by that much; a node reads the nearest pixel (half a pixel diagonal away); marching
    # cubes places the surface by linear interpolation between nodes one spacing apart.
    splat_reach = EXTEND_MAX * math.sqrt(SIGMA**2 + RenderConfig().eps2d * pixel**2)
    bound = splat_reach + pixel / math.sqrt(2) + cfg.spacing
    radial = np.linalg.norm(sphere_mesh.vertices - CENTRE.numpy(), axis=1) - RADIUS
    assert np.abs(radial).max() < bound
    # The error is radially symmetric up to the lattices' irregularity: the centre stays well within half a
    # spacing (a one-node shift of the grid or a swapped axis moves it by a spacing or more).
    assert np.linalg.norm(sphere_mesh.vertices.mean(0) - CENTRE.numpy()) < cfg.spacing / 2
    shape = trimesh.Trimesh(sphere_mesh.vertices, sphere_mesh.faces, process=False)
    assert shape.is_watertight
    assert 4 / 3 * math.pi * (RADIUS - bound) ** 3 < shape.volume < 4 / 3 * math.pi * (RADIUS + bound) ** 3


def test_mesh_colours_are_the_gaussians_colours(sphere_mesh):
    offset = sphere_mesh.vertices - CENTRE.numpy()
    # Away from the equator a vertex sees one colour; grazing renders may bring a little of the other half into the
    # fusion band. 10 levels still tell an sRGB/linear mix-up (0.9 -> 230 vs 201) or a channel swap.
    for side, color in ((offset[:, 2] > 0.15, RED), (offset[:, 2] < -0.15, BLUE)):
        assert side.sum() > 100
        assert np.abs(sphere_mesh.colors[side].astype(int) - np.round(np.array(color) * 255)).max() <= 10


def test_glb_reimports_in_the_gltf_frame_with_linear_vertex_colours(sphere_mesh, tmp_path):
    path = save_glb(sphere_mesh, tmp_path / "mesh.glb")
    (loaded,) = trimesh.load(path, process=False).geometry.values()
    assert loaded.faces.shape == sphere_mesh.faces.shape
    np.testing.assert_allclose(loaded.vertices, sphere_mesh.vertices @ GLTF_FROM_WORLD.T, atol=1e-6)
    # With a material, trimesh keeps COLOR_0 as a vertex attribute of its texture visuals.
    colors = loaded.visual.vertex_attributes["color"]
    np.testing.assert_array_equal(colors[:, :3], srgb_to_linear(sphere_mesh.colors))
    # y is up in glTF: the red (upper) half is above the blue one.
    red = colors[:, 0] > colors[:, 2]
    assert np.median(loaded.vertices[red, 1]) - np.median(loaded.vertices[~red, 1]) > RADIUS
    header = json.loads(path.read_bytes()[20:20 + int.from_bytes(path.read_bytes()[12:16], "little")])
    assert header["materials"][0]["pbrMetallicRoughness"]["metallicFactor"] == 0.0


def test_srgb_to_linear_matches_the_standard_curve():
    values = np.array([[0, 10, 128], [188, 230, 255]], np.uint8)
    # IEC 61966-2-1 reference points: 10 -> 0.003035 (linear segment), 128 -> 0.2159, 188 -> 0.5029, 230 -> 0.7913.
    expected = np.round(np.array([[0.0, 0.003035, 0.2159], [0.5029, 0.7913, 1.0]]) * 255)
    np.testing.assert_array_equal(srgb_to_linear(values), expected)


def test_the_renders_see_the_whole_volume():
    cfg = MeshConfig(resolution=9, views=24, image_size=32, bound=1.0)
    gaussians = shell(2000)
    cameras, _, _, _ = render_views(gaussians, cfg)
    points = grid_points(cfg).reshape(-1, 3)
    camera_points = points @ cameras.w2c()[:, :3, :3].transpose(1, 2) + cameras.w2c()[:, None, :3, 3]
    pixels = camera_points[..., :2] / camera_points[..., 2:] * cameras.K[:, None, 0, 0, None] + 16
    assert (camera_points[..., 2] > 0).all() and ((pixels >= 0) & (pixels < 32)).all()


def test_faint_or_outside_gaussians_give_an_empty_mesh_and_glb(tmp_path):
    faint = shell(500)
    faint = Gaussians(faint.means, faint.quats, faint.scales, torch.full((500,), 0.02), faint.colors)
    outside = shell(500)
    outside = Gaussians(outside.means + 2.0, outside.quats, outside.scales, outside.opacities, outside.colors)
    for gaussians in (faint, outside):
        empty = extract_mesh(gaussians, SMALL)
        assert empty.num_faces == 0 and len(empty.vertices) == 0
    scene = trimesh.load(io.BytesIO(save_glb(empty, tmp_path / "empty.glb").read_bytes()), file_type="glb")
    assert len(scene.geometry) == 0
    scores = mesh_geometry_scores(empty, torch.rand(10, 3), GeometryConfig())
    assert scores.chamfer == math.inf and scores.f_score == 0.0


def test_mesh_scores_sample_its_area():
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=RADIUS)
    mesh = ColoredMesh(sphere.vertices.astype(np.float32), sphere.faces.astype(np.int64),
                       np.zeros((len(sphere.vertices), 3), np.uint8))
    on_sphere = RADIUS * fibonacci_sphere(5000)
    scores = mesh_geometry_scores(mesh, on_sphere, GeometryConfig(max_points=5000))
    # Two uniform samples of 5,000 points on the same sphere (area 3.14): nearest neighbours are about
    # sqrt(area / n) / 2 = 0.013 apart on average, far below the 0.05 F-score threshold.
    assert scores.chamfer < math.sqrt(4 * math.pi * RADIUS**2 / 5000) and scores.f_score == 1.0
    shifted = mesh_geometry_scores(mesh, on_sphere + torch.tensor([0.0, 0.0, 0.3]), GeometryConfig(max_points=5000))
    assert shifted.chamfer > 0.05 and shifted.f_score < 0.5


def test_missing_libraries_name_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_skimage(name, *args, **kwargs):
        if name.startswith("skimage"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_skimage)
    with pytest.raises(InputError, match=r"pip install 'diffusiongs\[mesh\]'"):
        mesh_module.require_mesh_extra()


def test_generate_mesh_writes_a_glb_next_to_the_ply(tmp_path, tiny_model):
    out = tmp_path / "out"
    image = ROOT / "examples" / "images" / "checker_cube.png"
    assert entrypoint(["generate", str(image), "--checkpoint", str(tiny_model), "--out", str(out), "--steps", "1",
                       "--turntable-seconds", "0", "--mesh", "--mesh-options.resolution", "24",
                       "--mesh-options.views", "6", "--mesh-options.image-size", "32",
                       "--mesh-options.min-opacity", "0"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["mesh"]["resolution"] == 24 and "mesh_s" in meta["timings"]
    scene = trimesh.load(out / "mesh.glb", file_type="glb")
    faces = sum(len(g.faces) for g in scene.geometry.values())
    assert faces == meta["mesh"]["faces"]


@pytest.mark.cuda
def test_mesh_on_the_gpu_matches_the_cpu(sphere_mesh):
    """gsplat renders and a fusion on the device against the numba renders and fusion on the CPU: the renders
    agree to ~1e-5 (docs/BENCHMARKS.md), so the surfaces may differ only where a node's nearest pixel flips."""
    on_gpu = extract_mesh(shell().to("cuda"), SMALL)
    gpu_vertices, cpu_vertices = torch.from_numpy(on_gpu.vertices), torch.from_numpy(sphere_mesh.vertices)
    assert chamfer_distance(gpu_vertices, cpu_vertices) < SMALL.spacing / 4
    assert abs(on_gpu.num_faces - sphere_mesh.num_faces) < 0.05 * sphere_mesh.num_faces
