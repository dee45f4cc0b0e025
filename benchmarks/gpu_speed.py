"""Training and sampling speed of DiffusionGS on one GPU (issue: "fast on the GPU").

Run on the GPU machine from the repository root (gsplat installed):

    python benchmarks/gpu_speed.py --out $OUT/gpu_speed.json

Training: the ``base`` preset (width 1024, depth 24, patch 8) at 256x256, 8 objects per step, 1 condition + 3 noisy
views as input and 6 novel views supervised (10 rendered views, as the official object config), BF16 autocast,
SDPA attention, LPIPS-VGG loss when its weights are found (``DIFFUSIONGS_LPIPS_WEIGHTS``). Variants differ in
gradient checkpointing, deferred rendering and torch.compile. MFU counts 3x the forward FLOPs of the network
(linear layers + attention, analytic) against the 790 TFLOP/s BF16 peak measured on these GPUs.

Sampling: 30 DDIM steps (``--sampler``, ``--sample-steps``) for one object at 256x256 and 512x512 (network in BF16,
gsplat in FP32), eager and with torch.compile of the network (``Pipeline(compile=True)``: one CUDA graph per step,
``diffusiongs/inference/graphed.py``). Random weights give every Gaussian a standard deviation of 0.1 world units (~18
pixels at 512^2) and opacity 0.12, which inflates rendering: the ``px`` option makes it about one pixel instead and
``px2`` two (all still visible; the trained demo model keeps 4-6 % of its Gaussians above the 1/255 opacity cut, at
~2 pixels: ``benchmarks/gaussian_footprint.py``); ``sparse`` also hides all but a fixed random 5 % of them (opacity
0), as many as the trained model lets gsplat draw. The options apply to training and sampling variants alike.

Network: the denoiser alone (bf16 weights, torch.compile), forward at inference or forward+backward for a
training batch, as in the issue's comparison with the official network.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from diffusiongs.data.types import TrainingBatch  # noqa: E402
from diffusiongs.diffusion import SamplerConfig  # noqa: E402
from diffusiongs.geometry import Cameras, look_at, random_sphere_cameras  # noqa: E402
from diffusiongs.inference.pipeline import GenerateConfig, Pipeline  # noqa: E402
from diffusiongs.model.denoiser import DenoiserConfig  # noqa: E402
from diffusiongs.render import RenderConfig  # noqa: E402
from diffusiongs.system import DiffusionGS, preset  # noqa: E402
from diffusiongs.system.model import ModelConfig  # noqa: E402
from diffusiongs.training.distributed import DistInfo  # noqa: E402
from diffusiongs.training.losses import LossConfig  # noqa: E402
from diffusiongs.training.step import StepConfig  # noqa: E402
from diffusiongs.training.trainer import OptimConfig, TrainConfig, Trainer  # noqa: E402

PEAK_BF16_TFLOPS = 790.0
"""Dense BF16 matrix-product rate measured on the lent H100/H200 machines (KINDS.md: 769-798 TFLOP/s)."""


def forward_flops(cfg: DenoiserConfig, views: int, resolution: int, batch: int) -> dict[str, float]:
    """Analytic FLOPs of one network forward pass (2 FLOPs per multiply-add)."""
    d, p = cfg.width, cfg.patch_size
    tokens = views * (resolution // p) ** 2 + cfg.num_global_tokens
    per_token_macs = cfg.depth * (4 * d * d + 2 * d * int(cfg.mlp_ratio * d))  # qkv+proj, fc1+fc2
    per_token_macs += p * p * 9 * d + len(cfg.decoders) * d * p * p * 14  # tokenizer, heads
    linear = 2.0 * per_token_macs * tokens * batch
    attention = 4.0 * tokens * tokens * d * cfg.depth * batch  # QK^T and AV
    return {"linear": linear, "attention": attention, "total": linear + attention, "tokens_per_sample": tokens}


def random_batch(batch: int, views: int, num_noisy: int, resolution: int, device: torch.device) -> TrainingBatch:
    g = torch.Generator().manual_seed(0)
    c2w, K = [], []
    for _ in range(batch):
        cams = random_sphere_cameras(views, 3.0, 50.0, resolution, generator=g, elevation_range_deg=(-10, 60))
        target = torch.randn(views, 3, generator=g) * 0.05
        c2w.append(look_at(cams.centers, target))
        K.append(cams.K)
    cameras = Cameras(torch.stack(c2w), torch.stack(K), resolution, resolution)
    images = torch.rand(batch, views, 3, resolution, resolution, generator=g)
    return TrainingBatch(images=images, cameras=cameras, is_object=torch.ones(batch, dtype=torch.bool),
                         num_noisy=num_noisy).to(device)


def cuda_time_ms(fn, repeats: int) -> list[float]:
    """Per-call milliseconds, from CUDA events (host clock on CPU: the --device cpu smoke run)."""
    times = []
    for _ in range(repeats):
        if not torch.cuda.is_available():
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
            continue
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


TRAIN_OPTIONS = {"ckpt", "deferred", "compile", "cudnn", "flash", "m3", "nolpips", "px", "px2", "sparse"}
"""Tokens of a training variant name, joined by '+' (``plain`` has none): gradient checkpointing, deferred
rendering, torch.compile of the network, the cuDNN or flash SDPA backend, 3 instead of 6 novel views, no LPIPS,
Gaussians about one or two pixels wide (see ``pixel_sized``), only 5 % of them visible (see ``sparse_rendering``)."""


def sdpa_backends(options: set[str]):
    """A context that restricts scaled_dot_product_attention to the backend a variant names (or leaves the
    default choice)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if "cudnn" in options:
        return sdpa_kernel([SDPBackend.CUDNN_ATTENTION])
    if "flash" in options:
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION])
    return contextlib.nullcontext()


def parse_variant(name: str, allowed: set[str]) -> set[str]:
    options = set() if name == "plain" else set(name.split("+"))
    unknown = options - allowed
    if unknown:
        raise ValueError(f"unknown variant options {sorted(unknown)} in '{name}'")
    return options


def bench_train(name: str, args) -> dict:
    options = parse_variant(name, TRAIN_OPTIONS)
    device = torch.device(args.device)
    num_novel = 3 if "m3" in options else args.num_novel
    views = 1 + args.num_noisy + num_novel
    loss = LossConfig(point_warmup_steps=0, perceptual_weight=0.0 if "nolpips" in options else 0.5)
    render_cfg = RenderConfig(backend=args.backend, deferred="deferred" in options)
    cfg = TrainConfig(out=Path(args.workdir) / f"train_{name}", preset=args.preset, steps=10_000, batch_size=args.batch,
                      num_noisy=args.num_noisy, grad_checkpointing="ckpt" in options, compile="compile" in options,
                      progress=False, num_workers=0, optim=OptimConfig(warmup_steps=10), resolution=args.res,
                      step=StepConfig(loss=loss, render=render_cfg))
    trainer = Trainer(cfg, dataset=[None], info=DistInfo(device=device))
    trainer.prepare()
    width = pixel_width(options)
    if width:
        trainer.model.cfg = pixel_sized(trainer.model.cfg, args.res, width)  # the decoder reads it at every call
    if "sparse" in options:
        sparse_rendering(trainer.model)
    batch = random_batch(args.batch, views, args.num_noisy, args.res, device)
    seeds = list(range(args.batch))

    def step():
        trainer.step += 1
        trainer.run_step(batch, seeds)

    with sdpa_backends(options):
        warm_start = time.perf_counter()
        for _ in range(args.warmup):
            step()
        synchronize()
        warmup_s = time.perf_counter() - warm_start
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        times = cuda_time_ms(step, args.repeats)
        if name in args.profile.split(","):
            profile(step, f"train {name}", args)
    step_ms = median(times)
    flops = forward_flops(trainer.model_cfg.denoiser, 1 + args.num_noisy, args.res, args.batch)
    mfu = 3 * flops["total"] / (step_ms / 1e3) / (PEAK_BF16_TFLOPS * 1e12)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    result = {"variant": name, "rendered_views": views, "step_ms": step_ms, "step_ms_all": times,
              "samples_per_s": args.batch / step_ms * 1e3, "mfu": mfu, "peak_mem_gb": peak_gb, "warmup_s": warmup_s,
              "forward_tflop": flops["total"] / 1e12, "lpips": trainer.perceptual is not None}
    result["render_ms"] = bench_render_share(trainer, batch, render_cfg)
    result["render_share"] = result["render_ms"] / step_ms
    return result


def profile(fn, title: str, args, calls: int = 2) -> None:
    """Append a table of the CUDA kernels of ``calls`` calls, by total device time, to ``<out>.profile.txt``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        synchronize()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=70)
    with open(Path(args.out).with_suffix(".profile.txt"), "a") as f:
        f.write(f"\n### {title} ({calls} calls)\n{table}\n")
    print(f"\n### {title}\n" + "\n".join(table.splitlines()[:22]), flush=True)


def bench_render_share(trainer: Trainer, batch: TrainingBatch, cfg: RenderConfig) -> float:
    """Forward+backward time of rendering the step's Gaussians at all its views, alone."""
    n_in = 1 + batch.num_noisy
    device = batch.images.device
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        pred = trainer.model.predict_gaussians(batch.images[:, :n_in], batch.cameras[:, :n_in],
                                               torch.zeros(batch.images.shape[0], dtype=torch.long, device=device),
                                               batch.is_object)
    g = pred.gaussians
    leaves = [t.detach().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors)]
    gaussians = type(g)(*leaves)

    def run():
        out = trainer.model.render(gaussians, batch.cameras, cfg)
        out.rgb.square().mean().backward()

    for _ in range(2):
        run()
    return median(cuda_time_ms(run, 5))


SAMPLE_OPTIONS = {"compile", "cudnn", "flash", "px", "px2", "sparse"}
"""Tokens after the resolution of a sampling variant (e.g. ``256+compile``): the Pipeline's torch.compile with CUDA
graphs, an SDPA backend, Gaussians about one or two pixels wide (see ``pixel_sized``), only 5 % of them visible (see
``sparse_rendering``). The Pipeline keeps the network in bfloat16 on CUDA."""

VISIBLE_FRACTION = 0.05
"""Share of the Gaussians the ``sparse`` option leaves visible: the trained demo model's 4.9-6.3 % above gsplat's
1/255 opacity cut at every sampling step (stages 2-6, ``benchmarks/results/gaussian_footprint_demo_stage*.json``)."""


def pixel_width(options: set[str]) -> float | None:
    """The standard deviation, in pixels, that a variant's ``px`` (1) or ``px2`` (2: the trained demo model's median
    drawn Gaussian, 1.7-2.1 pixels) option asks for; None for the random weights' own widths."""
    return 2.0 if "px2" in options else 1.0 if "px" in options else None


def pixel_sized(cfg: ModelConfig, resolution: int, pixels: float = 1.0) -> ModelConfig:
    """``cfg`` with object Gaussians decoded ``pixels`` wide: a raw log-scale of 0 gives a standard deviation of that
    many pixels' footprint at the rig distance instead of 0.1 world units."""
    rig = cfg.object_rig
    footprint = pixels * rig.radius * 2 * math.tan(math.radians(rig.fov_deg) / 2) / resolution
    return replace(cfg, object_decode=replace(cfg.object_decode, log_scale_bias=math.log(footprint)))


def sparse_rendering(model: DiffusionGS, fraction: float = VISIBLE_FRACTION) -> None:
    """Make ``model.render`` draw only a fixed random ``fraction`` of the Gaussians (the others get opacity 0, which
    gsplat culls before tile intersection). The extra multiplication per step is timed with the rest."""
    render, keep = model.render, {}

    def sparse(gaussians, cameras, cfg=RenderConfig()):
        shape = gaussians.opacities.shape
        if keep.get("shape") != shape:
            g = torch.Generator(device=gaussians.device).manual_seed(0)
            keep.update(shape=shape, mask=torch.rand(shape, generator=g, device=gaussians.device) < fraction)
        return render(replace(gaussians, opacities=gaussians.opacities * keep["mask"]), cameras, cfg)

    model.render = sparse


def bench_sampling(spec: str, args) -> dict:
    res_text, *rest = spec.split("+")
    resolution, options = int(res_text), parse_variant("+".join(rest) or "plain", SAMPLE_OPTIONS)
    cfg = replace(preset(args.preset), resolution=resolution)
    width = pixel_width(options)
    model = DiffusionGS(pixel_sized(cfg, resolution, width) if width else cfg)
    pipe = Pipeline(model, device=args.device, render_cfg=RenderConfig(backend=args.backend),
                    compile="compile" in options)
    if "sparse" in options:
        sparse_rendering(pipe.model)
    cameras = pipe.rig_cameras()
    condition = torch.rand(3, resolution, resolution)
    gen = GenerateConfig(sampler=SamplerConfig(name=args.sampler, num_steps=args.sample_steps))

    def run():
        pipe.generate_from_condition(condition, cameras, gen)

    with sdpa_backends(options):
        start = time.perf_counter()
        run()  # warm-up (and compilation)
        synchronize()
        warmup_s = time.perf_counter() - start
        times = []
        for _ in range(args.sample_repeats):
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            times.append(time.perf_counter() - start)
        if spec in args.profile.split(","):
            profile(run, f"sample {spec}", args, calls=1)
    return {"variant": spec, "resolution": resolution, "sampler": args.sampler, "steps": args.sample_steps,
            "seconds_per_object": median(times), "all": times, "warmup_s": warmup_s}


NETWORK_OPTIONS = {"train", "cudnn", "eager"}
"""Tokens after the resolution of a network variant (e.g. ``512+train``): forward+backward of a training batch
(``--batch`` objects, L2 on the raw maps) instead of one object's inference forward, the cuDNN SDPA backend, no
torch.compile."""


def bench_network(spec: str, args) -> dict:
    """The denoiser alone on 1 condition + ``--num-noisy`` views: bf16 weights (inference) or bf16 autocast over
    float32 weights (training), compiled unless ``eager``."""
    res_text, *rest = spec.split("+")
    resolution, options = int(res_text), parse_variant("+".join(rest) or "plain", NETWORK_OPTIONS)
    training = "train" in options
    device = torch.device(args.device)
    model_cfg = preset(args.preset)
    net = DiffusionGS(model_cfg).net.to(device)
    if not training and device.type == "cuda":
        net = net.to(torch.bfloat16).eval()
    if "eager" not in options:
        net.compile()
    batch, views = (args.batch if training else 1), 1 + args.num_noisy
    g = torch.Generator(device).manual_seed(0)
    images = torch.rand(batch, views, 3, resolution, resolution, device=device, generator=g)
    rays = torch.randn(batch, views, 6, resolution, resolution, device=device, generator=g)
    steps = torch.randint(0, 1000, (batch,), device=device, generator=g)
    is_object = torch.ones(batch, dtype=torch.bool, device=device)

    def run():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            if training:
                net(images, rays, steps, is_object).pixel_raw.float().square().mean().backward()
            else:
                with torch.no_grad():
                    net(images, rays, steps, is_object)

    with sdpa_backends(options):
        start = time.perf_counter()
        for _ in range(3):
            run()
        synchronize()
        warmup_s = time.perf_counter() - start
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        ms = median(cuda_time_ms(run, args.repeats))
        if spec in args.profile.split(","):
            profile(run, f"network {spec}", args)
    flops = forward_flops(model_cfg.denoiser, views, resolution, batch)["total"] * (3 if training else 1)
    peak_gb = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0
    return {"variant": spec, "resolution": resolution, "batch": batch, "views": views, "ms": ms,
            "tflops": flops / (ms / 1e3) / 1e12, "mfu": flops / (ms / 1e3) / (PEAK_BF16_TFLOPS * 1e12),
            "peak_mem_gb": peak_gb, "warmup_s": warmup_s}


def bench_matmul() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ms = median(cuda_time_ms(lambda: a @ b, 10))
    return 2 * 8192**3 / (ms / 1e3) / 1e12


def run_variants(names: str, bench, describe, results: list[dict], save) -> None:
    """Run ``bench`` on each comma-separated variant, appending to ``results``, printing ``describe(name, result)``
    and calling ``save()`` after each (a call cut short keeps what it measured); a failing variant is recorded with
    its error and must not lose the others' numbers."""
    for name in filter(None, names.split(",")):
        try:
            result = bench(name)
            results.append(result)
            print(describe(name, result), flush=True)
        except Exception:
            traceback.print_exc()
            results.append({"variant": name, "error": traceback.format_exc(limit=3)})
        save()
        torch._dynamo.reset()  # else the next variant's new shapes would be compiled as dynamic ones
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_speed.json"))
    parser.add_argument("--workdir", default="/tmp/dgs_bench")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--device", default="cuda", help="cpu runs a smoke test of this script")
    parser.add_argument("--backend", default="gsplat")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--num-noisy", type=int, default=3)
    parser.add_argument("--num-novel", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpmpp2m"])
    parser.add_argument("--sample-steps", type=int, default=30)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--train-variants", default="plain,deferred,ckpt,compile",
                        help=f"comma-separated; each 'plain' or options joined by '+' from {sorted(TRAIN_OPTIONS)}")
    parser.add_argument("--sample-variants", default="256,512,256+compile,512+compile",
                        help=f"comma-separated RES[+option...], options from {sorted(SAMPLE_OPTIONS)}")
    parser.add_argument("--network-variants", default="",
                        help=f"comma-separated RES[+option...], options from {sorted(NETWORK_OPTIONS)}")
    parser.add_argument("--profile", default="", help="comma-separated variants whose kernels to profile into "
                        "<out>.profile.txt")
    args = parser.parse_args()
    on_gpu = args.device == "cuda"
    report = {"device": torch.cuda.get_device_name() if on_gpu else "cpu", "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "args": vars(args),
              "train": [], "network": [], "sample": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        Path(args.out).write_text(json.dumps(report, indent=2))

    if on_gpu:
        report["matmul_bf16_tflops"] = bench_matmul()
        print(f"bf16 8192^3 matmul: {report['matmul_bf16_tflops']:.0f} TFLOP/s", flush=True)
    run_variants(args.train_variants, lambda name: bench_train(name, args), lambda name, r: (
        f"train {name}: {r['step_ms']:.0f} ms/step, {r['samples_per_s']:.1f} samples/s, MFU {100 * r['mfu']:.1f} %, "
        f"peak {r['peak_mem_gb']:.1f} GB, render {r['render_ms']:.1f} ms"), report["train"], save)
    run_variants(args.network_variants, lambda spec: bench_network(spec, args), lambda spec, r: (
        f"network {spec}: {r['ms']:.2f} ms ({r['batch']} x {r['views']} views), {r['tflops']:.0f} TFLOP/s, "
        f"peak {r['peak_mem_gb']:.1f} GB"), report["network"], save)
    run_variants(args.sample_variants, lambda spec: bench_sampling(spec, args), lambda spec, r: (
        f"sample {spec}: {r['seconds_per_object']:.3f} s/object ({args.sample_steps} {args.sampler} steps; "
        f"warm-up {r['warmup_s']:.1f} s)"), report["sample"], save)
    save()
    print("\n| variant | step ms | samples/s | MFU | peak GB | render ms |\n|---|---|---|---|---|---|")
    for r in report["train"]:
        if "error" not in r:
            print(f"| {r['variant']} | {r['step_ms']:.0f} | {r['samples_per_s']:.1f} | {100 * r['mfu']:.1f} % | "
                  f"{r['peak_mem_gb']:.1f} | {r['render_ms']:.1f} |")
    for r in report["network"]:
        if "error" not in r:
            print(f"| network {r['variant']} | {r['ms']:.2f} ms | {r['tflops']:.0f} TFLOP/s |")
    for r in report["sample"]:
        if "error" not in r:
            print(f"| sample {r['variant']} | {r['seconds_per_object']:.3f} s/object |")


if __name__ == "__main__":
    main()
