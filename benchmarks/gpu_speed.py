"""Training and sampling speed of DiffusionGS on one GPU (issue: "fast on the GPU").

Run on the GPU machine from the repository root (gsplat installed):

    python benchmarks/gpu_speed.py --out $OUT/gpu_speed.json

Training: the ``base`` preset (width 1024, depth 24, patch 8) at 256x256, 8 objects per step, 1 condition + 3 noisy
views as input and 6 novel views supervised (10 rendered views, as the official object config), BF16 autocast,
SDPA attention, LPIPS-VGG loss when its weights are found (``DIFFUSIONGS_LPIPS_WEIGHTS``). Variants differ in
gradient checkpointing, deferred rendering and torch.compile. MFU counts 3x the forward FLOPs of the network
(linear layers + attention, analytic) against the 790 TFLOP/s BF16 peak measured on these GPUs.

Sampling: 30 DDIM steps for one object at 256x256 and 512x512 (network in BF16, gsplat in FP32), eager and with
torch.compile of the network.
"""

from __future__ import annotations

import argparse
import json
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
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return times


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def bench_train(name: str, args, grad_ckpt: bool, deferred: bool, compile_net: bool) -> dict:
    device = torch.device("cuda")
    views = 1 + args.num_noisy + args.num_novel
    cfg = TrainConfig(out=Path(args.workdir) / f"train_{name}", preset="base", steps=10_000, batch_size=args.batch,
                      num_noisy=args.num_noisy,
                      grad_checkpointing=grad_ckpt, compile=compile_net, progress=False, num_workers=0,
                      optim=OptimConfig(warmup_steps=10), resolution=args.res,
                      step=StepConfig(loss=LossConfig(point_warmup_steps=0),
                                      render=RenderConfig(backend="gsplat", deferred=deferred)))
    trainer = Trainer(cfg, dataset=[None], info=DistInfo(device=device))
    trainer.prepare()
    batch = random_batch(args.batch, views, args.num_noisy, args.res, device)
    seeds = list(range(args.batch))

    def step():
        trainer.step += 1
        trainer.run_step(batch, seeds)

    warm_start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - warm_start
    torch.cuda.reset_peak_memory_stats()
    times = cuda_time_ms(step, args.repeats)
    step_ms = median(times)
    flops = forward_flops(trainer.model_cfg.denoiser, 1 + args.num_noisy, args.res, args.batch)
    mfu = 3 * flops["total"] / (step_ms / 1e3) / (PEAK_BF16_TFLOPS * 1e12)
    result = {"variant": name, "step_ms": step_ms, "step_ms_all": times, "samples_per_s": args.batch / step_ms * 1e3,
              "mfu": mfu, "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30, "warmup_s": warmup_s,
              "forward_tflop": flops["total"] / 1e12, "lpips": trainer.perceptual is not None}
    result["render_ms"] = bench_render_share(trainer, batch, deferred)
    result["render_share"] = result["render_ms"] / step_ms
    return result


def bench_render_share(trainer: Trainer, batch: TrainingBatch, deferred: bool) -> float:
    """Forward+backward time of rendering the step's Gaussians at all its views, alone."""
    n_in = 1 + batch.num_noisy
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        pred = trainer.model.predict_gaussians(batch.images[:, :n_in], batch.cameras[:, :n_in],
                                               torch.zeros(batch.images.shape[0], dtype=torch.long, device="cuda"),
                                               batch.is_object)
    g = pred.gaussians
    leaves = [t.detach().requires_grad_() for t in (g.means, g.quats, g.scales, g.opacities, g.colors)]
    gaussians = type(g)(*leaves)
    cfg = RenderConfig(backend="gsplat", deferred=deferred)

    def run():
        out = trainer.model.render(gaussians, batch.cameras, cfg)
        out.rgb.square().mean().backward()

    for _ in range(2):
        run()
    return median(cuda_time_ms(run, 5))


def bench_sampling(args, resolution: int, compile_net: bool) -> dict:
    model = DiffusionGS(replace(preset("base"), resolution=resolution))
    pipe = Pipeline(model, device="cuda", render_cfg=RenderConfig(backend="gsplat"))
    if compile_net:
        pipe.model.net.compile()
    cameras = pipe.rig_cameras()
    condition = torch.rand(3, resolution, resolution)
    gen = GenerateConfig(sampler=SamplerConfig(name="ddim", num_steps=args.sample_steps))
    start = time.perf_counter()
    pipe.generate_from_condition(condition, cameras, gen)  # warm-up (and compilation)
    torch.cuda.synchronize()
    warmup_s = time.perf_counter() - start
    times = []
    for _ in range(args.sample_repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        pipe.generate_from_condition(condition, cameras, gen)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    del pipe, model
    torch.cuda.empty_cache()
    return {"resolution": resolution, "compile": compile_net, "steps": args.sample_steps,
            "seconds_per_object": median(times), "all": times, "warmup_s": warmup_s}


def bench_matmul() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    ms = median(cuda_time_ms(lambda: a @ b, 10))
    return 2 * 8192**3 / (ms / 1e3) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."), "gpu_speed.json"))
    parser.add_argument("--workdir", default="/tmp/dgs_bench")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--num-noisy", type=int, default=3)
    parser.add_argument("--num-novel", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--sample-steps", type=int, default=30)
    parser.add_argument("--sample-repeats", type=int, default=3)
    parser.add_argument("--train-variants", default="plain,deferred,ckpt,compile")
    parser.add_argument("--sample-variants", default="256,512,256c,512c")
    args = parser.parse_args()
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
              "date": time.strftime("%Y-%m-%d"), "args": vars(args)}
    report["matmul_bf16_tflops"] = bench_matmul()
    print(f"bf16 8192^3 matmul: {report['matmul_bf16_tflops']:.0f} TFLOP/s", flush=True)
    variants = {"plain": (False, False, False), "deferred": (False, True, False), "ckpt": (True, False, False),
                "compile": (False, False, True), "compile_ckpt": (True, False, True)}
    report["train"] = []
    for name in filter(None, args.train_variants.split(",")):
        try:
            r = bench_train(name, args, *variants[name])
            torch.cuda.empty_cache()
            report["train"].append(r)
            print(f"train {name}: {r['step_ms']:.0f} ms/step, {r['samples_per_s']:.1f} samples/s, "
                  f"MFU {100 * r['mfu']:.1f} %, peak {r['peak_mem_gb']:.1f} GB, render {r['render_ms']:.1f} ms",
                  flush=True)
        except Exception:  # keep going: one failing variant must not lose the others' numbers
            traceback.print_exc()
            report["train"].append({"variant": name, "error": traceback.format_exc(limit=3)})
            torch.cuda.empty_cache()
    report["sample"] = []
    for spec in filter(None, args.sample_variants.split(",")):
        res, compile_net = int(spec.rstrip("c")), spec.endswith("c")
        try:
            r = bench_sampling(args, res, compile_net)
            report["sample"].append(r)
            print(f"sample {res}px compile={compile_net}: {r['seconds_per_object']:.3f} s/object "
                  f"({args.sample_steps} DDIM steps; warm-up {r['warmup_s']:.1f} s)", flush=True)
        except Exception:
            traceback.print_exc()
            report["sample"].append({"resolution": res, "compile": compile_net, "error": traceback.format_exc(limit=3)})
            torch.cuda.empty_cache()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print("\n| variant | step ms | samples/s | MFU | peak GB | render ms |\n|---|---|---|---|---|---|")
    for r in report["train"]:
        if "error" not in r:
            print(f"| {r['variant']} | {r['step_ms']:.0f} | {r['samples_per_s']:.1f} | {100 * r['mfu']:.1f} % | "
                  f"{r['peak_mem_gb']:.1f} | {r['render_ms']:.1f} |")
    for r in report["sample"]:
        if "error" not in r:
            print(f"| sample {r['resolution']} compile={r['compile']} | {r['seconds_per_object']:.3f} s/object |")


if __name__ == "__main__":
    main()
