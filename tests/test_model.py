import pytest
import torch

from diffusiongs.geometry import Cameras, orbit_cameras
from diffusiongs.model import Denoiser, DenoiserConfig
from diffusiongs.model.embeddings import patchify, unpatchify
from diffusiongs.system import PRESETS, DiffusionGS, preset


def rig(batch: int, views: int, res: int, elevation: float = 20.0) -> Cameras:
    cams = orbit_cameras(views, 3.0, elevation, 50.0, res)
    return Cameras(cams.c2w.expand(batch, views, 4, 4).clone(), cams.K.expand(batch, views, 3, 3).clone(), res, res)


def test_patchify_round_trip_and_token_order():
    x = torch.randn(2, 3, 9, 16, 24)
    tokens = patchify(x, 8)
    assert tokens.shape == (2, 3 * 2 * 3, 8 * 8 * 9)
    # Token 0 is view 0's top-left patch, features ordered (row, column, channel).
    assert torch.equal(tokens[0, 0, :9], x[0, 0, :, 0, 0])
    assert torch.equal(tokens[0, 0, 9:18], x[0, 0, :, 0, 1])
    assert torch.equal(unpatchify(tokens, 3, 16, 24, 8), x.permute(0, 1, 3, 4, 2))


@pytest.mark.parametrize("global_tokens,pos", [(0, "sincos"), (2, "none")])
def test_denoiser_output_shapes(global_tokens, pos):
    cfg = DenoiserConfig(width=32, depth=2, num_heads=2, num_global_tokens=global_tokens, position_embedding=pos)
    net = Denoiser(cfg)
    out = net(torch.rand(2, 4, 3, 16, 16), torch.randn(2, 4, 6, 16, 16), torch.tensor([3, 999]),
              torch.tensor([True, False]))
    assert out.pixel_raw.shape == (2, 4, 16, 16, 14)
    assert out.global_raw.shape == (2, global_tokens, 14)


def test_each_sample_uses_its_domains_decoder():
    net = Denoiser(DenoiserConfig(width=32, depth=1, num_heads=2))
    args = (torch.rand(2, 2, 3, 8, 8), torch.randn(2, 2, 6, 8, 8), torch.tensor([5, 5]))
    both_obj = net(*args, torch.tensor([True, True])).pixel_raw
    mixed = net(*args, torch.tensor([True, False])).pixel_raw
    assert torch.equal(mixed[0], both_obj[0])
    assert not torch.allclose(mixed[1], both_obj[1])
    with torch.no_grad():
        net.decoders["scene"].image_token_decoder.linear.weight.zero_()
    assert torch.equal(net(*args, torch.tensor([False, False])).pixel_raw, torch.zeros_like(mixed))


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = Denoiser(DenoiserConfig(width=32, depth=2, num_heads=2))
    ckpt = Denoiser(DenoiserConfig(width=32, depth=2, num_heads=2, grad_checkpointing=True))
    ckpt.load_state_dict(plain.state_dict())
    args = (torch.rand(1, 2, 3, 8, 8), torch.randn(1, 2, 6, 8, 8), torch.tensor([7]), torch.tensor([True]))
    for net in (plain, ckpt):
        net(*args).pixel_raw.square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), name


def test_base_preset_has_the_official_size():
    net = Denoiser(preset("official-object").denoiser)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(460.4e6, rel=2e-3)


def test_resolution_independence():
    model = DiffusionGS(preset("tiny"))
    for res in (16, 32):
        pred = model.predict_gaussians(torch.rand(1, 2, 3, res, res), rig(1, 2, res), torch.tensor([10]),
                                       torch.tensor([True]))
        assert pred.gaussians.means.shape == (1, 2 * res * res, 3)


def test_rays_kept_from_an_earlier_call_are_the_ones_used():
    """The sampler computes the rays once per generation and passes them to every step: the Gaussians must be those
    of the rays passed (here another rig's), exactly as if computed in the call."""
    model = DiffusionGS(preset("tiny")).eval()
    cams, other, images = rig(1, 3, 16), rig(1, 3, 16, elevation=40.0), torch.rand(1, 3, 3, 16, 16)
    step, is_object = torch.tensor([500]), torch.tensor([True])
    with torch.no_grad():
        own = model.predict_gaussians(images, cams, step, is_object).gaussians
        passed = model.predict_gaussians(images, cams, step, is_object, rays=model.rays(other)).gaussians
        computed = model.predict_gaussians(images, other, step, is_object).gaussians
    for name in ("means", "quats", "scales", "opacities", "colors"):
        assert torch.equal(getattr(passed, name), getattr(computed, name)), name
    assert not torch.allclose(passed.means, own.means)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_predicts_finite_gaussians_on_their_rays(name):
    cfg = preset(name, width=32, depth=1, num_heads=2)
    model = DiffusionGS(cfg)
    res = 16
    cams = rig(2, 3, res)
    pred = model.predict_gaussians(torch.rand(2, 3, 3, res, res), cams, torch.tensor([0, 999]),
                                   torch.tensor([True, False]))
    g = pred.gaussians
    n_global = cfg.denoiser.num_global_tokens
    assert g.means.shape == (2, n_global + 3 * res * res, 3)
    for t in (g.means, g.quats, g.scales, g.opacities, g.colors):
        assert torch.isfinite(t).all()
    # Pixel Gaussians lie on their pixel's ray: (mu - o) is parallel to the ray direction.
    from diffusiongs.geometry import pixel_rays
    o, d = pixel_rays(cams)
    offset = pred.pixel_means - o
    if cfg.object_decode.clip_box is None:
        cross = torch.linalg.cross(offset[0], d[0], dim=-1)
        assert cross.norm(dim=-1).max() < 1e-3 * max(1.0, offset[0].norm(dim=-1).max().item())
    out = model.render(g, cams)
    assert out.rgb.shape == (2, 3, 3, res, res) and torch.isfinite(out.rgb).all()
