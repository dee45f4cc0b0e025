"""The renderer against a dense float64 brute-force reference (tests/render_reference.py), the pinhole model, and
its own contracts (background, culling, deferred backprop, autocast)."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from render_reference import one_thread, reference_render

from diffusiongs.gaussians import Gaussians
from diffusiongs.geometry import Cameras, intrinsics_from_fov, look_at, random_sphere_cameras
from diffusiongs.render import RenderConfig, RenderOutput, render
from diffusiongs.render.config import ALPHA_MIN
from diffusiongs.render.deferred import render_deferred
from diffusiongs.render.renderer import _render_views

BACKENDS = ["cpu", "torch"]
FIELDS = ("means", "quats", "scales", "opacities", "colors")
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}
"""u: the largest relative error of one rounding (half the machine epsilon)."""


def random_scene(batch: int = 2, views: int = 2, n: int = 200, width: int = 24, height: int = 20,
                 seed: int = 3) -> tuple[Gaussians, Cameras]:
    """Random Gaussians in [-1, 1]^3 seen from random cameras at distance 2.7 (some Gaussians fall outside the
    view, which exercises the Jacobian clamp), a few of them nearly opaque."""
    g = torch.Generator().manual_seed(seed)
    opacities = torch.rand(batch, n, generator=g) * 0.95 + 0.05
    opacities[:, :10] = 0.9995
    gaussians = Gaussians(means=torch.rand(batch, n, 3, generator=g) * 2 - 1,
                          quats=torch.randn(batch, n, 4, generator=g),
                          scales=torch.rand(batch, n, 3, generator=g) * 0.2 + 0.02,
                          opacities=opacities, colors=torch.rand(batch, n, 3, generator=g))
    cams = random_sphere_cameras(batch * views, 2.7, 50.0, width, generator=g)
    K = intrinsics_from_fov(50.0, width, height, batch_shape=(batch, views))
    return gaussians, Cameras(cams.c2w.reshape(batch, views, 4, 4), K, width, height)


def stacked_scene() -> tuple[Gaussians, Cameras]:
    """40 half-opaque Gaussians in a column along the view axis: the centre pixels saturate, so the
    stop-at-transmittance-1e-4 rule decides where compositing ends. The front one (opacity 0.9995) is centred on
    the ray of pixel (8, 8), where its alpha is clamped to 0.999."""
    n = 40
    g = torch.Generator().manual_seed(5)
    z = torch.linspace(-0.8, 0.8, n)
    means = torch.stack([0.05 * torch.randn(n, generator=g), 0.05 * torch.randn(n, generator=g), z], -1)
    K = intrinsics_from_fov(40.0, 16, batch_shape=(1, 1))
    # The camera at z = 3 looks down -z with image x along world x and image y along world -y.
    depth = 3.0 - z[-1]
    means[-1, :2] = torch.tensor([0.5, -0.5]) * depth / K[0, 0, 0, 0]
    opacities = torch.full((1, n), 0.5)
    opacities[0, -1] = 0.9995
    gaussians = Gaussians(means=means[None], quats=torch.randn(1, n, 4, generator=g),
                          scales=torch.rand(1, n, 3, generator=g) * 0.1 + 0.15, opacities=opacities,
                          colors=torch.rand(1, n, 3, generator=g))
    c2w = look_at(torch.tensor([[0.0, 0.0, 3.0]]), up=(0.0, 1.0, 0.0))
    return gaussians, Cameras(c2w[None], K, 16, 16)


def as_tuple(out: RenderOutput) -> tuple[torch.Tensor, ...]:
    return out.rgb, out.alpha, out.depth


def render_and_grads(fn, gaussians: Gaussians, background: torch.Tensor, seed: int = 11,
                     alpha_weighted_depth: tuple[bool, ...] = (False,)):
    """Outputs of ``fn(gaussians, background)`` and, for each entry of ``alpha_weighted_depth``, the gradients of a
    random linear function of (rgb, alpha, depth), or of (rgb, alpha, alpha * depth) where the entry is True."""
    leaves = {f: getattr(gaussians, f).detach().clone().requires_grad_() for f in FIELDS}
    leaves["background"] = background.detach().clone().requires_grad_()
    outputs = fn(Gaussians(**{f: leaves[f] for f in FIELDS}), leaves["background"])
    rgb, alpha, depth = outputs
    grads = []
    for k, weighted in enumerate(alpha_weighted_depth):
        g = torch.Generator().manual_seed(seed)
        terms = (rgb, alpha, alpha * depth if weighted else depth)
        loss = sum((out * torch.randn(out.shape, generator=g).to(out)).sum() for out in terms)
        values = torch.autograd.grad(loss, list(leaves.values()), retain_graph=k + 1 < len(alpha_weighted_depth))
        grads.append(dict(zip(leaves, values)))
    return [o.detach() for o in outputs], grads


def render_and_grad(fn, gaussians: Gaussians, background: torch.Tensor, seed: int = 11):
    """Outputs of ``fn(gaussians, background)`` and the gradients of a random linear function of them."""
    outputs, (grads,) = render_and_grads(fn, gaussians, background, seed)
    return outputs, grads


def gradient_error_bound(cameras: Cameras, dtype: torch.dtype, alpha: torch.Tensor | None = None) -> float:
    """Relative bound on the rounding error of a rendered gradient (of the loss of :func:`render_and_grads`).

    A gradient entry sums at most n = views x height x width per-pixel terms (one per pixel its Gaussian covers);
    summing n terms in floating point errs by at most n u times their magnitude, which the bound measures by the
    parameter's largest gradient entry (per entry) or its gradient norm (norm-wise). The few roundings inside each
    term add a small multiple of u. On this file's scenes and six more seeds the largest error was 0.09 of the
    bound, alike with AVX-512, AVX2 and generic kernels at 1 and 2 threads (AMD EPYC, 2026-11-29).

    Without ``alpha`` the loss holds alpha * depth. With ``alpha`` (the reference's) it holds depth itself:
    depth = accumulated z / alpha, and its gradient divides rounded quantities by alpha again, so rounding errors
    grow by up to 1 / (the smallest drawn alpha), at most 1 / ALPHA_MIN = 255: any drawn pixel composites at least
    one Gaussian of alpha >= 1/255.
    """
    terms = cameras.batch_shape[-1] * cameras.height * cameras.width
    amplification = 1.0 if alpha is None else 1.0 / max(alpha[alpha > 0].min().item(), ALPHA_MIN)
    return terms * UNIT_ROUNDOFF[dtype] * amplification


def assert_grads_close(actual: dict, expected: dict, bound: float) -> None:
    """Per parameter: every entry within ``bound`` x the largest reference entry, and the error's norm within
    ``bound`` x the reference's norm (magnitude-scaled, not per entry: entries near zero carry the rounding errors
    of the large terms that cancelled in them)."""
    for name, ref in expected.items():
        got, ref = actual[name].double(), ref.double()
        scale = ref.abs().max().item()
        assert scale > 0, name
        torch.testing.assert_close(got, ref, atol=bound * scale, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
        assert (got - ref).norm() <= bound * ref.norm(), name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("scene", [random_scene, stacked_scene])
def test_matches_brute_force_reference(backend, scene):
    gaussians, cameras = scene()
    background = torch.tensor([0.3, 0.6, 0.9])
    # The small stacked image also covers a second tile size: 8 px, 2 x 2 tiles.
    cfg = RenderConfig(backend=backend, tile_size=8 if scene is stacked_scene else 16)
    # Depth as it is, and weighted by alpha (which removes the 1/alpha amplification of its rounding errors and
    # so tightens the check of every gradient).
    weightings = (False, True)
    out, grads = render_and_grads(lambda g, bg: as_tuple(render(g, cameras, bg, cfg)), gaussians, background,
                                  alpha_weighted_depth=weightings)
    with one_thread():
        ref_out, ref_grads = render_and_grads(lambda g, bg: reference_render(g, cameras, bg), gaussians, background,
                                              alpha_weighted_depth=weightings)
    for name, got, ref in zip(("rgb", "alpha", "depth"), out, ref_out, strict=True):
        assert got.dtype == torch.float32 and got.shape == ref.shape
        # rgb and alpha: a pixel composites at most N = 200 splats, whose float32 products and sums err by at most
        # about N u = 1.2e-5 (the cpu kernels accumulate in float64 and err far less). Depth = accumulated z / alpha
        # adds z u / alpha <= 3.7 u 255 = 5.6e-5 at the faintest pixels (alpha >= 1/255).
        torch.testing.assert_close(got.double(), ref, atol=1e-4 if name == "depth" else 2e-5, rtol=1e-5,
                                   msg=lambda m, n=name: f"{n}: {m}")
    assert_grads_close(grads[0], ref_grads[0], gradient_error_bound(cameras, torch.float32, ref_out[1]))
    assert_grads_close(grads[1], ref_grads[1], gradient_error_bound(cameras, torch.float32))
    if scene is stacked_scene:
        # The centre saturates: compositing stops with the transmittance just above 1e-4 instead of ~1e-12.
        centre_alpha = out[1][0, 0, 0, 6:10, 6:10]
        assert (centre_alpha > 0.999).all() and (centre_alpha < 1 - 1e-4).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_blob_lands_where_the_pinhole_model_says(backend):
    width, height = 48, 40
    c2w = look_at(torch.tensor([[2.0, -2.5, 1.2]]), torch.tensor([[0.1, 0.2, -0.1]]))
    K = torch.tensor([[[60.0, 0.0, 25.3], [0.0, 55.0, 18.7], [0.0, 0.0, 1.0]]])
    cameras = Cameras(c2w[None], K[None], width, height)
    point = torch.tensor([0.25, -0.1, 0.15])
    cam = torch.linalg.inv(c2w[0]) @ torch.cat([point, torch.ones(1)])
    uv = (K[0] @ cam[:3])[:2] / cam[2]
    gaussians = Gaussians(means=point[None, None], quats=torch.tensor([[[1.0, 0.0, 0.0, 0.0]]]),
                          scales=torch.full((1, 1, 3), 0.06), opacities=torch.full((1, 1), 0.9),
                          colors=torch.ones(1, 1, 3))
    out = render(gaussians, cameras, torch.zeros(3), RenderConfig(backend=backend))
    weight = out.alpha[0, 0, 0].double()
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    centroid = torch.stack([(weight * xs).sum(), (weight * ys).sum()]) / weight.sum()
    assert weight.sum() > 5  # a blob of several pixels, entirely inside the image
    torch.testing.assert_close(centroid, uv.double(), atol=0.02, rtol=0)
    torch.testing.assert_close(out.depth[0, 0, 0][weight > 0.5].double(),
                               cam[2].double().expand(int((weight > 0.5).sum())), atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_background_is_seen_through_the_final_transmittance(backend):
    gaussians, cameras = random_scene(n=60)
    cfg = RenderConfig(backend=backend)
    per_view = torch.rand(2, 2, 3)
    black = render(gaussians, cameras, torch.zeros(3), cfg)
    coloured = render(gaussians, cameras, per_view, cfg)
    expected = black.rgb + (1 - black.alpha) * per_view[..., None, None]
    torch.testing.assert_close(coloured.rgb, expected, atol=1e-6, rtol=0)
    assert (black.alpha > 0.5).any() and (black.alpha < 0.5).any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_input_renders_background(backend):
    _, cameras = random_scene()
    means = torch.zeros(2, 0, 3, requires_grad=True)
    gaussians = Gaussians(means=means, quats=torch.zeros(2, 0, 4), scales=torch.zeros(2, 0, 3),
                          opacities=torch.zeros(2, 0), colors=torch.zeros(2, 0, 3))
    background = torch.tensor([0.2, 0.4, 0.6], requires_grad=True)
    out = render(gaussians, cameras, background, RenderConfig(backend=backend))
    assert out.rgb.shape == (2, 2, 3, 20, 24)
    torch.testing.assert_close(out.rgb, background.detach()[:, None, None].expand(2, 2, 3, 20, 24))
    assert (out.alpha == 0).all() and (out.depth == 0).all()
    out.rgb.sum().backward()
    torch.testing.assert_close(background.grad, torch.full((3,), 2 * 2 * 20 * 24.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gaussians_behind_the_camera_or_outside_near_far_are_culled(backend):
    cameras = Cameras(look_at(torch.tensor([[0.0, -3.0, 0.0]]))[None], intrinsics_from_fov(60.0, 16)[None, None],
                      16, 16)
    # On the optical axis: behind the camera, closer than the near plane, beyond the far plane; each would be
    # visible if it were drawn.
    depths = torch.tensor([-1.0, 0.005, 150.0])
    means = torch.stack([torch.zeros(3), -3.0 + depths, torch.zeros(3)], -1)[None].requires_grad_()
    gaussians = Gaussians(means=means, quats=torch.tensor([1.0, 0, 0, 0]).expand(1, 3, 4),
                          scales=torch.full((1, 3, 3), 0.5), opacities=torch.full((1, 3), 0.9),
                          colors=torch.ones(1, 3, 3))
    out = render(gaussians, cameras, torch.zeros(3), RenderConfig(backend=backend, far_plane=100.0))
    assert (out.alpha == 0).all() and (out.rgb == 0).all()
    (out.rgb.sum() + out.alpha.sum()).backward()
    assert (means.grad == 0).all()
    # The same Gaussian in front of the camera covers the image.
    visible = Gaussians(means=torch.tensor([[[0.0, -2.5, 0.0]]]), quats=torch.tensor([[[1.0, 0, 0, 0]]]),
                        scales=torch.full((1, 1, 3), 0.5), opacities=torch.full((1, 1), 0.9),
                        colors=torch.ones(1, 1, 3))
    assert (render(visible, cameras, torch.zeros(3), RenderConfig(backend=backend)).alpha > 0.5).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_deferred_matches_plain_rendering(backend):
    """Deferred rendering gives the same images (the same forward call) and gradients that differ from plain
    rendering's only by float32 summation order: each is within the rounding bound of the exact gradient, so the
    two are within twice that of each other."""
    gaussians, cameras = random_scene(n=80)
    background = torch.rand(2, 2, 3)
    plain = render_and_grad(lambda g, bg: as_tuple(render(g, cameras, bg, RenderConfig(backend=backend))),
                            gaussians, background)
    deferred = render_and_grad(
        lambda g, bg: as_tuple(render(g, cameras, bg, RenderConfig(backend=backend, deferred=True))),
        gaussians, background)
    for got, ref in zip(deferred[0], plain[0], strict=True):
        torch.testing.assert_close(got, ref, atol=0, rtol=0)
    assert_grads_close(deferred[1], plain[1], 2 * gradient_error_bound(cameras, torch.float32, plain[0][1]))


def test_deferred_backward_matches_plain_backward_in_float64():
    """The deferred machinery (per-view re-rendering, slicing and accumulation) on the torch backend run in float64:
    only float64 rounding separates the two, so a far tighter bound holds than in float32."""
    gaussians, cameras = random_scene(n=80)
    gaussians, cameras = gaussians.to(dtype=torch.float64).flatten_batch(), cameras.to(dtype=torch.float64)
    background = torch.rand(2, 2, 3, dtype=torch.float64)
    render_views = functools.partial(_render_views, cfg=RenderConfig(backend="torch"), backend="torch")
    plain = render_and_grad(lambda g, bg: render_views(g, cameras, bg), gaussians, background)
    deferred = render_and_grad(lambda g, bg: render_deferred(render_views, g, cameras, bg), gaussians, background)
    assert plain[0][0].dtype == torch.float64
    for got, ref in zip(deferred[0], plain[0], strict=True):
        torch.testing.assert_close(got, ref, atol=0, rtol=0)
    assert_grads_close(deferred[1], plain[1], 2 * gradient_error_bound(cameras, torch.float64, plain[0][1]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_are_the_same_bits_on_every_run(backend):
    """Exact resumption of a training run needs a deterministic backward: every Gaussian here is seen by 8 views,
    and its gradient sums their contributions."""
    gaussians, cameras = random_scene(batch=1, views=8, n=1000, width=24, height=24)
    background = torch.rand(1, 8, 3)
    runs = [render_and_grad(lambda g, bg: as_tuple(render(g, cameras, bg, RenderConfig(backend=backend))),
                            gaussians, background)[1] for _ in range(6)]
    for grads in runs[1:]:
        for name, ref in runs[0].items():
            assert torch.equal(grads[name], ref), name


def test_batch_shapes_and_validation():
    gaussians, cameras = random_scene(batch=1, views=3, n=30)
    background = torch.ones(3)
    batched = render(gaussians, cameras, background)
    unbatched = render(gaussians[0], cameras[0], background)
    assert unbatched.rgb.shape == (3, 3, 20, 24) and unbatched.depth.shape == (3, 1, 20, 24)
    torch.testing.assert_close(unbatched.rgb, batched.rgb[0])
    with pytest.raises(ValueError, match="batch shape"):
        render(gaussians, cameras[0], background)
    with pytest.raises(ValueError, match="background"):
        render(gaussians, cameras, torch.ones(2, 3))
    with pytest.raises(ValueError, match="CUDA"):
        render(gaussians, cameras, background, RenderConfig(backend="gsplat"))


def test_bfloat16_autocast_renders_in_float32():
    gaussians, cameras = random_scene(n=50)
    bf16 = gaussians.to(dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = render(bf16, cameras, torch.ones(3))
    expected = render(bf16.float(), cameras, torch.ones(3))
    assert out.rgb.dtype == torch.float32
    torch.testing.assert_close(out.rgb, expected.rgb, atol=0, rtol=0)


def test_projection_matches_gsplat_torch_reference():
    """Our projection against gsplat's own pure-torch EWA projection (runs where gsplat is installed)."""
    torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    from diffusiongs.render.projection import covariances, project

    gaussians, cameras = random_scene(batch=1, views=2, n=100)
    splats = project(gaussians, cameras, RenderConfig())
    _, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        gaussians.means, covariances(gaussians.quats, gaussians.scales), cameras.w2c(), cameras.K,
        cameras.width, cameras.height, eps2d=0.3, near_plane=0.01, far_plane=100.0)
    views, index = splats.image_ids, splats.gaussian_ids
    assert len(index) > 150  # most of the 2 x 100 pairs are visible
    torch.testing.assert_close(splats.means2d, means2d[0, views, index])
    torch.testing.assert_close(splats.conics, conics[0, views, index], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(splats.depths, depths[0, views, index])


@pytest.mark.cuda
@pytest.mark.parametrize("scene", [random_scene, stacked_scene])
def test_gsplat_matches_our_backends(scene):
    """gsplat on the GPU against the torch backend on the GPU and on the CPU, and the numba kernels on the CPU where
    numba is installed (the lent GPU machines lack it; tests/test_render.py checks those kernels on the CPU)."""
    pytest.importorskip("gsplat")
    gaussians, cameras = scene()
    background = torch.tensor([0.3, 0.6, 0.9])
    cuda_gaussians, cuda_cameras = gaussians.to("cuda"), cameras.to("cuda")

    def run(backend: str, device: str, deferred: bool = False):
        g, cams = (cuda_gaussians, cuda_cameras) if device == "cuda" else (gaussians, cameras)
        cfg = RenderConfig(backend=backend, deferred=deferred)
        out, grads = render_and_grad(lambda x, bg: as_tuple(render(x, cams, bg, cfg)), g, background.to(device))
        return [o.cpu().double() for o in out], {k: v.cpu().double() for k, v in grads.items()}

    gsplat_out, gsplat_grads = run("gsplat", "cuda")
    candidates = [("torch", "cuda"), ("torch", "cpu")] + ([("cpu", "cpu")] if importlib.util.find_spec("numba") else [])
    for backend, device in candidates:
        out, grads = run(backend, device)
        for name, got, ref in zip(("rgb", "alpha", "depth"), out, gsplat_out, strict=True):
            # Float32 fast-math exp on the GPU can flip the 1/255 threshold at a rare pixel: bound the worst pixel
            # loosely and the mean tightly.
            assert (got - ref).abs().max() < 5e-3, (backend, name)
            assert (got - ref).abs().mean() < 1e-5 * max(1.0, ref.abs().max().item()), (backend, name)
        for name, ref in gsplat_grads.items():
            assert (grads[name] - ref).norm() <= 5e-3 * ref.norm(), (backend, name)
    # gsplat's backward sums with float atomics, in an order that differs when the views are rendered one by one.
    _, deferred_grads = run("gsplat", "cuda", deferred=True)
    for name, ref in gsplat_grads.items():
        assert (deferred_grads[name] - ref).abs().max() <= 1e-4 * ref.abs().max(), name
        assert (deferred_grads[name] - ref).norm() <= 1e-5 * ref.norm(), name


NUMBA_CACHE_PROBE = """
import json, sys
import torch
from diffusiongs.geometry import orbit_cameras
from diffusiongs.gaussians import Gaussians
from diffusiongs.render import RenderConfig, render
from diffusiongs.render import composite_cpu

colors = torch.rand(1, 20, 3, requires_grad=True)
g = Gaussians(torch.rand(1, 20, 3) - 0.5, torch.randn(1, 20, 4), torch.full((1, 20, 3), 0.1),
              torch.full((1, 20), 0.5), colors)
cameras = orbit_cameras(1, 3.0, 10.0, 50.0, 16).reshape(1, 1)
render(g, cameras, torch.ones(3), RenderConfig(backend="cpu")).rgb.sum().backward()
stats = [composite_cpu._forward_kernel.stats, composite_cpu._backward_kernel.stats]
print(json.dumps({"path": stats[0].cache_path, "hits": sum(sum(s.cache_hits.values()) for s in stats),
                  "misses": sum(sum(s.cache_misses.values()) for s in stats)}))
"""


@pytest.mark.slow
def test_numba_cache_falls_back_to_the_user_cache_when_the_package_is_read_only(tmp_path):
    """Installed read-only (site-packages owned by root, say), the kernels still compile only once: numba caches
    them under the user's cache directory instead of the package's __pycache__."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    site = tmp_path / "site"
    shutil.copytree(Path(__file__).resolve().parents[1] / "diffusiongs", site / "diffusiongs",
                    ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(site))
    probe = [sys.executable, "-c", NUMBA_CACHE_PROBE]
    if os.geteuid() == 0:
        # Root writes through file modes: make the copy read-only with a private read-only bind mount instead.
        if shutil.which("unshare") is None:
            pytest.skip("running as root without unshare: cannot make the package read-only")
        mount = f"mount --bind {site} {site} && mount -o remount,ro,bind {site} && exec \"$@\""
        probe = ["unshare", "-m", "sh", "-c", mount, "sh", *probe]
    else:
        for path in site.rglob("*"):
            path.chmod(path.stat().st_mode & ~0o222)
        site.chmod(0o555)
    runs = []
    for _ in range(2):
        result = subprocess.run(probe, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        if result.returncode != 0 and "unshare" in probe[0]:
            pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()[-200:]}")
        assert result.returncode == 0, result.stderr
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    assert not list(site.rglob("*.nbi"))
    assert runs[0]["path"].startswith(str(home)) and runs[0]["misses"] == 2 and runs[0]["hits"] == 0
    assert runs[1]["path"] == runs[0]["path"] and runs[1]["hits"] == 2 and runs[1]["misses"] == 0
