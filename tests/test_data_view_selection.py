import itertools
import math

import numpy as np
import pytest
import torch

from diffusiongs.data.view_selection import orbit_partners, select_views
from diffusiongs.errors import InputError
from diffusiongs.geometry.camera import (
    Cameras,
    angle_between_deg,
    look_at,
    orbit_cameras,
    random_sphere_cameras,
    ring_cameras,
)
from diffusiongs.geometry.layout import ViewLayout

CONSTRAINED = ViewLayout(mode="constrained")


def sphere_cameras(n: int, seed: int, jitter_target: bool = False) -> Cameras:
    """n cameras at random points of a sphere band, looking at (or near) the origin."""
    g = torch.Generator().manual_seed(seed)
    cams = random_sphere_cameras(n, (2.5, 3.5), 50.0, 32, generator=g, elevation_range_deg=(-60, 80))
    if not jitter_target:
        return cams
    target = torch.randn(n, 3, generator=g) * 0.4
    return Cameras(look_at(cams.centers, target), cams.K, 32, 32)


def check_constraints(cams: Cameras, indices: list[int], n: int, cfg: ViewLayout) -> None:
    """The paper's four constraints, recomputed independently of the implementation (with 1e-4 degree slack)."""
    cond, noisy, novel = indices[0], indices[1:1 + n], indices[1 + n:]
    p, z = cams.centers.double(), cams.forward.double()
    for i in noisy:
        assert angle_between_deg(p[cond], p[i]) <= cfg.theta1_deg + 1e-4
        assert angle_between_deg(z[cond], z[i]) <= cfg.phi1_deg + 1e-4
        for j in novel:
            assert angle_between_deg(p[i], p[j]) <= cfg.theta2_deg + 1e-4
    for j in novel:
        assert angle_between_deg(z[cond], z[j]) <= cfg.phi2_deg + 1e-4


@pytest.mark.parametrize("mode", ["constrained", "orbit", "random"])
@pytest.mark.parametrize("seed", range(20))
def test_selection_is_distinct_complete_and_in_range(mode, seed):
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 5)), int(rng.integers(0, 8))
    views = int(rng.integers(1 + n + m, 40))
    cams = sphere_cameras(views, seed, jitter_target=seed % 2 == 1)
    selection = select_views(cams, n, m, ViewLayout(mode=mode), rng)
    assert len(selection.indices) == 1 + n + m
    assert len(set(selection.indices)) == len(selection.indices)
    assert all(0 <= i < views for i in selection.indices)
    assert all(isinstance(i, int) for i in selection.indices)


@pytest.mark.parametrize("seed", range(40))
def test_satisfied_constrained_selections_meet_every_constraint(seed):
    rng = np.random.default_rng(seed)
    cfg = ViewLayout(mode="constrained", theta1_deg=float(rng.uniform(20, 70)),
                     theta2_deg=float(rng.uniform(30, 90)), phi1_deg=float(rng.uniform(20, 80)),
                     phi2_deg=float(rng.uniform(30, 90)))
    n, m = int(rng.integers(1, 4)), int(rng.integers(1, 7))
    cams = sphere_cameras(int(rng.integers(12, 48)), seed, jitter_target=True)
    selection = select_views(cams, n, m, cfg, rng)
    if selection.satisfied:
        check_constraints(cams, selection.indices, n, cfg)


def brute_force_feasible(cams: Cameras, n: int, m: int, cfg: ViewLayout) -> bool:
    """Whether any (condition, noisy, novel) set meets the constraints, by trying every condition and noisy set."""
    p, z = cams.centers.double(), cams.forward.double()
    pos = angle_between_deg(p[:, None], p[None]) <= cfg.theta1_deg + 1e-6
    near = angle_between_deg(p[:, None], p[None]) <= cfg.theta2_deg + 1e-6
    facing1 = angle_between_deg(z[:, None], z[None]) <= cfg.phi1_deg + 1e-6
    facing2 = angle_between_deg(z[:, None], z[None]) <= cfg.phi2_deg + 1e-6
    views = range(len(p))
    for c in views:
        admissible = [i for i in views if i != c and pos[c, i] and facing1[c, i]]
        for noisy in itertools.combinations(admissible, n):
            novel = [j for j in views if j != c and j not in noisy and facing2[c, j] and all(near[i, j] for i in noisy)]
            if len(novel) >= m:
                return True
    return False


@pytest.mark.parametrize("seed", range(30))
def test_search_finds_a_valid_set_whenever_one_exists(seed):
    rng = np.random.default_rng(seed)
    cfg = ViewLayout(mode="constrained", theta1_deg=float(rng.uniform(25, 60)),
                     theta2_deg=float(rng.uniform(35, 80)), phi1_deg=float(rng.uniform(25, 70)),
                     phi2_deg=float(rng.uniform(35, 85)))
    n, m = int(rng.integers(1, 4)), int(rng.integers(1, 5))
    cams = sphere_cameras(int(rng.integers(8, 16)), 100 + seed, jitter_target=True)
    selection = select_views(cams, n, m, cfg, rng)
    assert selection.satisfied == brute_force_feasible(cams, n, m, cfg)


def test_defaults_are_satisfiable_for_most_32_view_objects():
    """The default angles with N=3, M=6 on 32 views drawn like `data synth` (elevations -30..70 degrees)."""
    found = 0
    for seed in range(50):
        g = torch.Generator().manual_seed(1000 + seed)
        cams = random_sphere_cameras(32, 3.0, 50.0, 32, generator=g, elevation_range_deg=(-30, 70))
        selection = select_views(cams, 3, 6, CONSTRAINED, np.random.default_rng(seed))
        if selection.satisfied:
            check_constraints(cams, selection.indices, 3, CONSTRAINED)
            found += 1
    assert found >= 40


def test_tight_cluster_is_always_satisfied():
    """All cameras within 10 degrees of each other: every constraint holds for any choice."""
    g = torch.Generator().manual_seed(0)
    cams = random_sphere_cameras(20, 3.0, 50.0, 32, generator=g, elevation_range_deg=(80, 90))
    for seed in range(10):
        selection = select_views(cams, 3, 6, CONSTRAINED, np.random.default_rng(seed))
        assert selection.satisfied


def test_impossible_set_falls_back_to_nearest_views():
    """Six cameras on the axes are 90 or 180 degrees apart: theta1 = 45 cannot hold, so the fallback picks the
    nearest views and says so."""
    axes = torch.tensor([[3.0, 0, 0], [-3, 0, 0], [0, 3, 0], [0, -3, 0], [0, 0.001, 3], [0, 0.001, -3]])
    cams = Cameras(look_at(axes), torch.eye(3).expand(6, 3, 3), 8, 8)
    selection = select_views(cams, 2, 2, CONSTRAINED, np.random.default_rng(0))
    assert not selection.satisfied
    assert len(set(selection.indices)) == 5
    cond, noisy = selection.indices[0], selection.indices[1:3]
    # The antipode of the condition view is the farthest: the fallback never takes it as a noisy view.
    antipode = {0: 1, 1: 0, 2: 3, 3: 2, 4: 5, 5: 4}[cond]
    assert antipode not in noisy


def test_fallback_prefers_closer_views():
    """Two clusters 120 degrees apart, each too small for the sample: noisy views come from the condition's
    cluster first."""
    g = torch.Generator().manual_seed(3)
    a = random_sphere_cameras(3, 3.0, 50.0, 32, generator=g, elevation_range_deg=(85, 90))
    rot = torch.tensor([[1.0, 0, 0], [0, math.cos(2.1), -math.sin(2.1)], [0, math.sin(2.1), math.cos(2.1)]])
    b_centers = a.centers @ rot.T
    cams = Cameras(torch.cat([a.c2w, look_at(b_centers)]), torch.cat([a.K, a.K]), 32, 32)
    for seed in range(5):
        selection = select_views(cams, 2, 3, CONSTRAINED, np.random.default_rng(seed))
        assert not selection.satisfied
        cluster = 0 if selection.indices[0] < 3 else 1
        assert all((i < 3) == (cluster == 0) for i in selection.indices[1:3])


def test_orbit_mode_picks_views_90_degrees_apart_on_a_ring():
    ring = orbit_cameras(24, 3.0, 20.0, 50.0, 32)
    extra = random_sphere_cameras(8, 3.0, 50.0, 32, generator=torch.Generator().manual_seed(1))
    cams = Cameras.cat([ring, extra])
    azimuth = torch.rad2deg(torch.atan2(cams.centers[:, 1], cams.centers[:, 0]))
    for seed in range(10):
        selection = select_views(cams, 3, 4, ViewLayout(mode="orbit"), np.random.default_rng(seed))
        cond, noisy = selection.indices[0], selection.indices[1:4]
        if cond >= 24:  # conditions off the ring have no exact partners
            continue
        assert selection.satisfied
        offsets = [float((azimuth[i] - azimuth[cond]) % 360) for i in noisy]
        assert offsets == pytest.approx([90.0, 180.0, 270.0], abs=1e-3)


@pytest.mark.parametrize("seed", range(10))
def test_orbit_selection_on_rings_is_exactly_the_inference_rig(seed):
    """On `data synth`'s ring views every orbit sample is the layout's rig around its condition camera: the noisy
    views are the condition camera turned about z by 90, 180 and 270 degrees, to float precision."""
    g = torch.Generator().manual_seed(seed)
    cams = ring_cameras(4, 8, 3.0, 50.0, 32, generator=g, elevation_range_deg=(-30, 70)).to(dtype=torch.float64)
    layout = ViewLayout(mode="orbit")
    for draw in range(5):
        selection = select_views(cams, 3, 6, layout, np.random.default_rng([seed, draw]))
        assert selection.satisfied
        cond, noisy = selection.indices[0], selection.indices[1:4]
        rig = layout.rig(cams[cond], 3)
        torch.testing.assert_close(cams.c2w[noisy], rig.c2w[1:], atol=1e-9, rtol=0)


def test_orbit_selection_on_random_views_says_it_is_approximate():
    """32 random views almost never hold an exact rig: the nearest distinct views are taken, marked unsatisfied."""
    cams = random_sphere_cameras(32, 3.0, 50.0, 32, generator=torch.Generator().manual_seed(4),
                                 elevation_range_deg=(-30, 70))
    partners, miss = orbit_partners(cams.centers.double().numpy(), 3, ViewLayout())
    assert (miss.max(1) > 0.5).all()
    for seed in range(5):
        selection = select_views(cams, 3, 6, ViewLayout(), np.random.default_rng(seed))
        assert not selection.satisfied
        assert len(set(selection.indices)) == 10


def test_constrained_inference_rig_sits_where_training_draws_noisy_views():
    """Each noisy view of the constrained rig is within theta1 of the condition (at the median angle of a uniform
    draw in that cap), roll-free like the training cameras, and the bearings spread around the condition."""
    layout = ViewLayout(mode="constrained", theta1_deg=45.0)
    for elevation in (-25.0, 20.0, 65.0):
        condition = orbit_cameras(1, 3.0, elevation, 50.0, 32, dtype=torch.float64)[0]
        rig = layout.rig(condition, 3)
        angles = angle_between_deg(rig.centers[:1].expand(3, 3), rig.centers[1:])
        expected = math.degrees(math.acos((1 + math.cos(math.radians(45.0))) / 2))
        torch.testing.assert_close(angles, torch.full((3,), expected, dtype=torch.float64), atol=1e-6, rtol=0)
        torch.testing.assert_close(rig.c2w, look_at(rig.centers), atol=1e-9, rtol=0)
        # Evenly spread bearings: the offsets' components in the condition's tangent plane cancel.
        p = rig.centers[0] / rig.centers[0].norm()
        offsets = rig.centers[1:] - rig.centers[0]
        tangential = offsets - (offsets @ p)[:, None] * p
        assert float(tangential.sum(0).norm()) < 1e-9 * float(tangential.norm(dim=-1).mean()) + 1e-12
        check_constraints(rig, [0, 1, 2, 3], 3, layout)


def test_same_seed_same_selection_and_seeds_vary():
    cams = sphere_cameras(32, 7)
    cfg = CONSTRAINED
    first = select_views(cams, 3, 6, cfg, np.random.default_rng(5)).indices
    assert select_views(cams, 3, 6, cfg, np.random.default_rng(5)).indices == first
    assert len({tuple(select_views(cams, 3, 6, cfg, np.random.default_rng(s)).indices) for s in range(10)}) > 5


def test_too_few_views_is_an_input_error():
    with pytest.raises(InputError, match="has 5 views, a sample needs 10"):
        select_views(sphere_cameras(5, 0), 3, 6, CONSTRAINED, np.random.default_rng(0))
