import numpy as np
import pytest
import torch

from diffusiongs.gaussians import (
    DECODE_PRESETS,
    GAUSSIAN_CHANNELS,
    Y_UP_ROTATION,
    Gaussians,
    PlyFormatError,
    decode_free_gaussians,
    decode_pixel_gaussians,
    load_ply,
    quaternion_product,
    save_ply,
)
from diffusiongs.gaussians.layout import GAUSSIAN_LAYOUT
from diffusiongs.geometry import Cameras, orbit_cameras, pixel_rays, reference_depth
from diffusiongs.render import RenderConfig, render
from diffusiongs.render.projection import covariances, quat_to_rotmat

Z_UP_TO_Y_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
"""(x, y, z) -> (x, z, -y), written out by hand."""


def random_gaussians(n: int) -> Gaussians:
    return Gaussians(means=torch.randn(n, 3), quats=torch.nn.functional.normalize(torch.randn(n, 4), dim=-1),
                     scales=torch.rand(n, 3) * 0.2 + 0.01, opacities=torch.rand(n) * 0.98 + 0.01,
                     colors=torch.rand(n, 3))


def rays(n_views: int = 2, res: int = 8):
    o, d = pixel_rays(orbit_cameras(n_views, 3.0, 15.0, 50.0, res))
    return o.reshape(1, -1, 3), d.reshape(1, -1, 3)


def test_layout_covers_14_channels_without_overlap():
    ranges = [GAUSSIAN_LAYOUT.position, GAUSSIAN_LAYOUT.color, GAUSSIAN_LAYOUT.scale, GAUSSIAN_LAYOUT.rotation,
              GAUSSIAN_LAYOUT.opacity]
    covered = sorted(i for r in ranges for i in range(r.start, r.stop))
    assert covered == list(range(14)) and GAUSSIAN_CHANNELS == 14


@pytest.mark.parametrize("preset", ["object", "scene", "scene_official"])
def test_interval_depth_puts_centres_on_the_ray_within_the_interval(preset):
    cfg = DECODE_PRESETS[preset]
    o, d = rays()
    raw = torch.randn(1, o.shape[1], 14) * 3
    g = decode_pixel_gaussians(raw, o, d, cfg)
    u = ((g.means - o) * d).sum(-1)
    lo, hi = sorted((cfg.near, cfg.far))
    if cfg.clip_box is None:
        assert torch.allclose(g.means, o + u[..., None] * d, atol=1e-3)
        assert (u >= lo - 1e-3).all() and (u <= hi + 1e-3).all()
    else:
        assert (g.means.abs() <= cfg.clip_box).all()
    # Extreme raw values reach the interval's ends: w -> 1 gives u_near.
    big = torch.zeros_like(raw)
    big[..., GAUSSIAN_LAYOUT.position] = 30.0
    u_near = ((decode_pixel_gaussians(big, o, d, cfg).means - o) * d).sum(-1)
    if cfg.clip_box is None:
        assert torch.allclose(u_near, torch.full_like(u_near, cfg.near), atol=1e-2)


def test_reference_window_is_centred_on_reference_depth():
    cfg = DECODE_PRESETS["object_official"]
    o, d = rays()
    raw = torch.zeros(1, o.shape[1], 14)
    g = decode_pixel_gaussians(raw, o, d, cfg)
    assert torch.allclose(((g.means - o) * d).sum(-1), reference_depth(o, d), atol=1e-5)
    raw[..., GAUSSIAN_LAYOUT.position] = -40.0
    g = decode_pixel_gaussians(raw, o, d, cfg)
    assert torch.allclose(((g.means - o) * d).sum(-1), reference_depth(o, d) - 1.8, atol=1e-4)


def test_appearance_activations_match_reference_defaults():
    o, d = rays(1, 2)
    g = decode_pixel_gaussians(torch.zeros(1, 4, 14), o, d, DECODE_PRESETS["object"])
    assert torch.allclose(g.scales, torch.full_like(g.scales, float(np.exp(-2.3))))
    assert torch.allclose(g.opacities, torch.full_like(g.opacities, float(1 / (1 + np.exp(2.0)))))
    assert torch.allclose(g.colors, torch.full_like(g.colors, 0.5))
    huge = torch.full((1, 4, 14), 50.0)
    g = decode_pixel_gaussians(huge, o, d, DECODE_PRESETS["object"])
    assert torch.allclose(g.scales, torch.full_like(g.scales, float(np.exp(-1.2))))
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(1, 4))


def test_free_gaussians_take_position_channels_as_centres():
    raw = torch.randn(2, 3, 14)
    g = decode_free_gaussians(raw, DECODE_PRESETS["object_official"])
    assert torch.equal(g.means, raw[..., :3])


def test_container_rejects_bad_shapes():
    with pytest.raises(ValueError, match="opacities"):
        Gaussians(torch.zeros(5, 3), torch.zeros(5, 4), torch.zeros(5, 3), torch.zeros(4), torch.zeros(5, 3))


def test_ply_round_trip(tmp_path):
    g = random_gaussians(257)
    path = save_ply(g, tmp_path / "g.ply")
    back = load_ply(path)
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.allclose(getattr(back, name), getattr(g, name), atol=1e-5), name


def test_ply_header_has_standard_attributes(tmp_path):
    path = save_ply(random_gaussians(3), tmp_path / "g.ply")
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]


def test_ply_rejects_garbage_with_file_name(tmp_path):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(b"hello")
    with pytest.raises(PlyFormatError, match="bad.ply"):
        load_ply(bad)
    truncated = tmp_path / "trunc.ply"
    truncated.write_bytes(save_ply(random_gaussians(10), tmp_path / "ok.ply").read_bytes()[:-40])
    with pytest.raises(PlyFormatError, match="trunc.ply"):
        load_ply(truncated)


def test_quaternion_product_composes_rotations():
    a, b = (torch.nn.functional.normalize(torch.randn(20, 4, dtype=torch.float64), dim=-1) for _ in range(2))
    assert torch.allclose(quat_to_rotmat(quaternion_product(a, b)), quat_to_rotmat(a) @ quat_to_rotmat(b), atol=1e-12)


def test_rotated_gaussians_have_rotated_centres_and_covariances():
    g = random_gaussians(100)
    r = torch.nn.functional.normalize(torch.randn(4), dim=-1)
    R = quat_to_rotmat(r)
    moved = g.rotated(r)
    # float32: a few roundings of values up to |mean| ~ 4 and covariances ~ 0.04.
    assert torch.allclose(moved.means, g.means @ R.T, atol=1e-5)
    assert torch.allclose(covariances(moved.quats, moved.scales), R @ covariances(g.quats, g.scales) @ R.T, atol=1e-6)
    for name in ("scales", "opacities", "colors"):
        assert torch.equal(getattr(moved, name), getattr(g, name))


def test_y_up_rotation_is_the_documented_axis_swap():
    R = quat_to_rotmat(torch.tensor(Y_UP_ROTATION, dtype=torch.float64))
    assert torch.allclose(R, Z_UP_TO_Y_UP.double(), atol=1e-12) and torch.linalg.det(R) > 0  # not a mirror


def test_rotated_gaussians_render_like_the_originals_seen_from_rotated_cameras():
    torch.manual_seed(1)
    g = random_gaussians(200)
    g = Gaussians(means=g.means * 0.4, quats=g.quats, scales=g.scales * 0.5, opacities=g.opacities, colors=g.colors)
    cameras = orbit_cameras(3, 3.0, 20.0, 50.0, 24)
    rotation = torch.eye(4)
    rotation[:3, :3] = Z_UP_TO_Y_UP
    moved_cameras = Cameras(c2w=rotation @ cameras.c2w, K=cameras.K, width=cameras.width, height=cameras.height)
    white, cfg = torch.ones(3), RenderConfig(backend="torch")
    before = render(g[None], cameras.reshape(1, -1), white, cfg).rgb
    after = render(g.rotated(torch.tensor(Y_UP_ROTATION))[None], moved_cameras.reshape(1, -1), white, cfg).rgb
    assert torch.allclose(before, after, atol=1e-4)  # the same scene: float32 projection roundings only


def test_ply_written_y_up_holds_the_rotated_gaussians(tmp_path):
    g = random_gaussians(64)
    back = load_ply(save_ply(g, tmp_path / "y.ply", up="y"))
    assert torch.allclose(back.means, g.means @ Z_UP_TO_Y_UP.T, atol=1e-5)
    expected = quat_to_rotmat(g.quats)
    assert torch.allclose(quat_to_rotmat(back.quats), Z_UP_TO_Y_UP @ expected, atol=1e-5)
    assert torch.allclose(load_ply(save_ply(g, tmp_path / "z.ply")).means, g.means, atol=1e-6)
