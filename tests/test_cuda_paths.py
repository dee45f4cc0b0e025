"""The CUDA fast paths besides the rasterizer (gsplat's own check is in tests/test_render.py), each against its
plain CPU reference on random inputs, forward and backward: LPIPS with channels-last convolutions and compiled
distances, a BF16 training step rendered by gsplat, and the Pipeline's BF16 network compiled with CUDA graphs.
Opt in with ``python -m pytest -m cuda`` on a machine with a GPU and gsplat."""

import copy
from pathlib import Path

import pytest
import torch
from blob_dataset import BlobDataset

from diffusiongs.data.types import collate_examples
from diffusiongs.diffusion import NoiseSchedule, SamplerConfig
from diffusiongs.geometry import orbit_cameras
from diffusiongs.inference.pipeline import GenerateConfig, Pipeline
from diffusiongs.metrics import LPIPS, LPIPSConfig, psnr
from diffusiongs.render import RenderConfig
from diffusiongs.system import DiffusionGS, preset
from diffusiongs.system.io import load_model
from diffusiongs.training.losses import LossConfig
from diffusiongs.training.step import StepConfig, StepNoise, draw_step_noise, train_step

pytestmark = pytest.mark.cuda
DEMO_MODEL = Path(__file__).resolve().parents[1] / "diffusiongs" / "assets" / "demo_model"


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.double().cpu() - ref.double().cpu()).norm() / ref.double().norm()).item()


def smooth_images(seed: int, n: int = 2, size: int = 64) -> torch.Tensor:
    """Random images with structure at several scales (pure noise would excite only VGG's first layers)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 8, 8, generator=g)
    up = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (up + 0.1 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def test_lpips_channels_last_and_compiled_distances_match_the_cpu_reference():
    torch.manual_seed(0)
    reference = LPIPS(LPIPSConfig(resize_to=None)).double()
    for head in reference.heads:  # LPIPS heads are non-negative weights
        head.weight.data.abs_()
    pred, target = smooth_images(1), smooth_images(2)

    def distance_and_grad(net: LPIPS, device: str, dtype: torch.dtype):
        x = pred.to(device, dtype).requires_grad_(True)
        d = net(x, target.to(device, dtype))
        (grad,) = torch.autograd.grad(d.sum(), x)
        return d.detach(), grad

    ref_d, ref_grad = distance_and_grad(reference, "cpu", torch.float64)
    gpu = copy.deepcopy(reference).float().to("cuda", memory_format=torch.channels_last)  # as the trainer does
    # Full float32 convolutions: cuDNN's default TF32 (10-bit mantissa) is a precision choice, not what is tested.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        eager_d, eager_grad = distance_and_grad(gpu, "cuda", torch.float32)
        gpu.fused = True
        fused_d, fused_grad = distance_and_grad(gpu, "cuda", torch.float32)
    errors = {"eager vs cpu": (relative_error(eager_d, ref_d), relative_error(eager_grad, ref_grad)),
              "fused vs eager": (relative_error(fused_d, eager_d), relative_error(fused_grad, eager_grad))}
    print("LPIPS relative errors (distance, gradient):", errors)
    # Measured on an H100 (2026-11-25): 1.6e-8 and 5.8e-7 against the CPU, 7.0e-8 and 2.5e-7 fused against eager.
    assert errors["eager vs cpu"][0] < 1e-5 and errors["eager vs cpu"][1] < 1e-5
    assert errors["fused vs eager"][0] < 1e-5 and errors["fused vs eager"][1] < 1e-5


def test_bf16_training_step_with_gsplat_follows_the_fp32_cpu_step():
    examples = BlobDataset(num_items=2, num_views=6, resolution=32, scene_every=2)
    batch = collate_examples([examples[0], examples[1]], num_noisy=3)
    torch.manual_seed(0)
    model = DiffusionGS(preset("tiny"))
    schedule = NoiseSchedule()
    noise = draw_step_noise(batch, schedule, [torch.Generator().manual_seed(i) for i in range(2)])
    cfg = StepConfig(loss=LossConfig(perceptual_weight=0), render=RenderConfig(backend="torch"))  # numba-free
    gpu_model = copy.deepcopy(model).cuda()

    out = train_step(model, batch, schedule, noise, step=10_000, cfg=cfg)
    out.loss.backward()
    gpu_noise = StepNoise(timesteps=noise.timesteps.cuda(), noise=noise.noise.cuda())
    with torch.autocast("cuda", dtype=torch.bfloat16):  # as Trainer.run_step does
        gpu_out = train_step(gpu_model, batch.to("cuda"), schedule, gpu_noise, step=10_000,
                             cfg=StepConfig(loss=cfg.loss, render=RenderConfig(backend="gsplat")))
    gpu_out.loss.backward()

    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    gpu_grads = torch.cat([p.grad.flatten().cpu() for p in gpu_model.parameters() if p.grad is not None])
    cosine = torch.nn.functional.cosine_similarity(grads, gpu_grads, dim=0).item()
    loss_error = abs(gpu_out.loss.item() - out.loss.item()) / out.loss.item()
    print(f"bf16 step: loss {gpu_out.loss.item():.5f} vs {out.loss.item():.5f}, gradient cosine {cosine:.5f}")
    assert loss_error < 2e-2 and cosine > 0.99


def test_compiled_bf16_pipeline_follows_the_fp32_cpu_pipeline():
    """The same seed gives the same chain on both devices (CPU-drawn noise), so the outputs differ only by the GPU
    path's arithmetic: BF16 network weights and activations, compiled kernels in one CUDA graph, gsplat. The graph
    is replayed over buffers filled per generation: a second condition must give its own result, and the first
    result must survive the second generation (the graph's outputs are overwritten by every replay)."""
    cameras = orbit_cameras(4, 3.0, 20.0, 50.0, 128)
    conditions = [smooth_images(seed, n=1, size=128)[0] for seed in (3, 4)]
    gen = GenerateConfig(sampler=SamplerConfig("ddim", 5), seed=0)
    cpu = Pipeline(load_model(DEMO_MODEL), "cpu", render_cfg=RenderConfig(backend="torch"))  # numba-free
    gpu = Pipeline.from_pretrained(DEMO_MODEL, device="cuda", compile=True)
    gpu.generate_from_condition(conditions[0], cameras.to("cuda"), gen)  # warm-up: compilation and capture
    results = [gpu.generate_from_condition(c, cameras.to("cuda"), gen) for c in conditions]
    for condition, (_, gpu_views) in zip(conditions, results):
        _, cpu_views = cpu.generate_from_condition(condition, cameras, gen)
        score = psnr(gpu_views.cpu().clamp(0, 1), cpu_views.clamp(0, 1)).mean().item()
        print(f"compiled bf16 pipeline vs fp32 CPU pipeline: {score:.1f} dB")
        assert score > 30
    first_gaussians, first_views = results[0]
    again = gpu.model.render(first_gaussians[None], cameras.to("cuda")[1:].reshape(1, -1), gpu.render_cfg).rgb[0]
    assert (again - first_views).abs().max().item() < 1e-5  # gsplat's forward pass is deterministic
