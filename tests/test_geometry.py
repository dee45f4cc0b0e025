import math

import pytest
import torch

from diffusiongs.geometry import (
    Cameras,
    intrinsics_from_fov,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    orbit_cameras,
    pixel_rays,
    plucker,
    random_sphere_cameras,
    ray_embedding,
    reference_depth,
    rppc,
)


def random_cameras(n: int, res: int = 16) -> Cameras:
    g = torch.Generator().manual_seed(1)
    cams = random_sphere_cameras(n, (1.5, 4.0), fov_deg=50, resolution=res, generator=g, dtype=torch.float64)
    # Move the targets off the origin so that rays do not all pass near it.
    eye = cams.centers
    target = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.3
    return Cameras(look_at(eye, target), cams.K, res, res)


def test_focal_matches_reference_value():
    K = intrinsics_from_fov(50.0, 256)
    assert K[0, 0].item() == pytest.approx(274.5, abs=0.05)
    assert K[0, 2].item() == 128 and K[1, 2].item() == 128


def test_look_at_is_rigid_and_points_at_target():
    cams = random_cameras(32)
    rot = cams.c2w[:, :3, :3]
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3, dtype=rot.dtype).expand(32, 3, 3), atol=1e-10)
    assert torch.allclose(torch.linalg.det(rot), torch.ones(32, dtype=rot.dtype))
    # Image "down" (y) has a negative component along world up (z): cameras are upright.
    assert (cams.c2w[:, 2, 1] < 0).all()


def test_w2c_inverts_c2w():
    cams = random_cameras(8)
    eye = torch.eye(4, dtype=torch.float64).expand(8, 4, 4)
    assert torch.allclose(cams.w2c() @ cams.c2w, eye, atol=1e-10)


def test_opengl_round_trip_and_axes():
    cams = random_cameras(4)
    gl = opencv_to_opengl(cams.c2w)
    assert torch.allclose(opengl_to_opencv(gl), cams.c2w)
    # OpenGL cameras look along -z: the OpenCV forward axis is the negated OpenGL z axis.
    assert torch.allclose(gl[:, :3, 2], -cams.forward)


def test_pixel_centre_ray_hits_projected_point():
    cams = random_cameras(6, res=20)
    origins, dirs = pixel_rays(cams)
    # Project a point along the ray of pixel (row 7, col 12) back into the image.
    point = origins[:, 7, 12] + 2.5 * dirs[:, 7, 12]
    cam = (cams.w2c() @ torch.cat([point, torch.ones(6, 1, dtype=point.dtype)], -1)[..., None])[..., :3, 0]
    uv = (cams.K @ cam[..., None])[..., 0]
    uv = uv[:, :2] / uv[:, 2:]
    assert torch.allclose(uv, torch.tensor([12.5, 7.5], dtype=uv.dtype).expand(6, 2), atol=1e-9)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones_like(dirs[..., 0]))


def test_rppc_matches_formula_on_random_cameras():
    cams = random_cameras(5)
    o, d = pixel_rays(cams)
    expected = torch.cat([o - (o * d).sum(-1, keepdim=True) * d, d], -1)
    assert torch.allclose(rppc(o, d), expected)
    assert torch.allclose(ray_embedding(cams, "rppc"), expected.movedim(-1, -3))
    assert torch.allclose(ray_embedding(cams, "plucker"), plucker(o, d).movedim(-1, -3))


def test_reference_point_is_closest_point_to_origin():
    cams = random_cameras(3)
    o, d = pixel_rays(cams)
    ref = rppc(o, d)[..., :3]
    # Orthogonal to the direction, and no point of the ray is closer to the origin.
    assert torch.allclose((ref * d).sum(-1), torch.zeros_like(d[..., 0]), atol=1e-10)
    for t in (-0.3, 0.1, 1.0):
        assert ((ref + t * d).norm(dim=-1) >= ref.norm(dim=-1) - 1e-12).all()
    assert torch.allclose(ref, o + reference_depth(o, d)[..., None] * d)


def test_rppc_is_invariant_to_sliding_the_origin_along_the_ray_but_plucker_moment_is_too():
    cams = random_cameras(3)
    o, d = pixel_rays(cams)
    shifted = o + 0.7 * d
    assert torch.allclose(rppc(shifted, d), rppc(o, d), atol=1e-10)
    # The reference depth shifts by exactly the slide.
    assert torch.allclose(reference_depth(shifted, d), reference_depth(o, d) - 0.7, atol=1e-10)


def test_rppc_changes_under_world_translation_while_directions_do_not():
    cams = random_cameras(2)
    o, d = pixel_rays(cams)
    offset = torch.tensor([0.2, -0.1, 0.3], dtype=o.dtype)
    moved = rppc(o + offset, d)
    assert torch.allclose(moved[..., 3:], d)
    # The reference point moves by the part of the offset orthogonal to the ray.
    ortho = offset - (offset * d).sum(-1, keepdim=True) * d
    assert torch.allclose(moved[..., :3] - rppc(o, d)[..., :3], ortho, atol=1e-10)


def test_orbit_cameras_spacing_and_radius():
    cams = orbit_cameras(8, radius=3.0, elevation_deg=20.0, fov_deg=50.0, resolution=32, dtype=torch.float64)
    assert torch.allclose(cams.centers.norm(dim=-1), torch.full((8,), 3.0, dtype=torch.float64))
    assert torch.allclose(cams.centers[:, 2], torch.full((8,), 3.0 * math.sin(math.radians(20.0)), dtype=torch.float64))
    assert torch.allclose(torch.nn.functional.normalize(-cams.centers, dim=-1), cams.forward)


def test_random_sphere_respects_elevation_band():
    g = torch.Generator().manual_seed(0)
    cams = random_sphere_cameras(200, 2.0, 50.0, 16, generator=g, elevation_range_deg=(-10.0, 40.0),
                                 dtype=torch.float64)
    elevation = torch.rad2deg(torch.asin(cams.centers[:, 2] / 2.0))
    assert elevation.min() >= -10.0 - 1e-6 and elevation.max() <= 40.0 + 1e-6


def test_resized_keeps_field_of_view():
    cams = orbit_cameras(2, 3.0, 0.0, 50.0, 64).resized(128, 128)
    assert cams.K[0, 0, 0].item() == pytest.approx(intrinsics_from_fov(50.0, 128)[0, 0].item(), rel=1e-6)
    assert (cams.width, cams.height) == (128, 128)
