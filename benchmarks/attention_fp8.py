"""Does FP8 attention pay at the denoiser's shapes? cuDNN's FP8 flash attention (through cudnn-frontend's graph API,
per-tensor scales) against PyTorch's BF16 ``scaled_dot_product_attention``, timed on one GPU, with the error of each
against a float32 reference.

Shapes: the ``base`` preset's 16 heads of width 64 over 1 + 3 views of 8x8 patches: 4,098 tokens at 256^2 and 16,386
at 512^2 (with the official model's 2 global tokens), batch 1 (one object, as sampling runs).

The FP8 path quantises q, k and v per tensor (scale = 448 / amax, computed on the GPU, no host synchronisation),
runs cuDNN's kernel, whose output is FP8 on Hopper, and dequantises it to BF16: the timings include all of that
("fp8 total") and the kernel alone ("fp8 kernel"). Inputs are random normal; ``--logit-scale`` multiplies q to make
the softmax peakier (trained attention is far from uniform), which is where quantising P and O matters most.

    python3 benchmarks/attention_fp8.py --out results.json  # a CUDA GPU and the nvidia-cudnn-frontend wheel
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

E4M3_MAX = 448.0
"""The largest finite float8 e4m3 value."""


class CudnnFP8Attention:
    """Non-causal attention of BF16 ``[b, h, s, d]`` tensors through cuDNN's FP8 kernel, one graph per layout."""

    def __init__(self):
        import cudnn

        self.cudnn = cudnn
        self.handle = cudnn.create_handle()
        self.graphs: dict[tuple, tuple] = {}

    def _graph(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor):
        key = (q.shape, q.stride(), k.stride(), v.stride(), out.stride())
        if key in self.graphs:
            return self.graphs[key]
        cudnn = self.cudnn
        fp8, fp32 = cudnn.data_type.FP8_E4M3, cudnn.data_type.FLOAT
        graph = cudnn.pygraph(io_data_type=fp8, intermediate_data_type=fp32, compute_data_type=fp32,
                              handle=self.handle)
        tq, tk, tv = (graph.tensor(dim=list(t.shape), stride=list(t.stride()), data_type=fp8) for t in (q, k, v))
        scalars = [graph.tensor(dim=[1, 1, 1, 1], stride=[1, 1, 1, 1], data_type=fp32) for _ in range(6)]
        o, _, amax_s, amax_o = graph.sdpa_fp8(q=tq, k=tk, v=tv, descale_q=scalars[0], descale_k=scalars[1],
                                              descale_v=scalars[2], descale_s=scalars[3], scale_s=scalars[4],
                                              scale_o=scalars[5], is_inference=True,
                                              attn_scale=1.0 / math.sqrt(q.shape[-1]), use_causal_mask=False)
        o.set_output(True).set_dim(list(out.shape)).set_stride(list(out.stride())).set_data_type(fp8)
        for amax in (amax_s, amax_o):
            amax.set_output(True).set_dim([1, 1, 1, 1]).set_stride([1, 1, 1, 1]).set_data_type(fp32)
        graph.validate()
        graph.build_operation_graph()
        graph.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
        graph.check_support()
        graph.build_plans()
        workspace = torch.empty(graph.get_workspace_size(), device=q.device, dtype=torch.uint8)
        self.graphs[key] = (graph, (tq, tk, tv), scalars, o, (amax_s, amax_o), workspace)
        return self.graphs[key]

    @staticmethod
    def quantise(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x in float8 e4m3 scaled to its range, and the factor that undoes the scaling (both on the GPU)."""
        scale = E4M3_MAX / x.abs().amax().float().clamp(min=1e-12)
        return (x.float() * scale).to(torch.float8_e4m3fn), (1.0 / scale).reshape(1, 1, 1, 1)

    def kernel(self, q8, k8, v8, descales, out8, amax):
        graph, (tq, tk, tv), scalars, o, (amax_s, amax_o), workspace = self._graph(q8, k8, v8, out8)
        self.cudnn.set_stream(handle=self.handle, stream=torch.cuda.current_stream().cuda_stream)
        pack = {tq: q8, tk: k8, tv: v8, o: out8, amax_s: amax[0], amax_o: amax[1]}
        pack.update(zip(scalars, descales))
        graph.execute(pack, workspace, handle=self.handle)

    def prepare(self, q, k, v):
        """Quantised inputs, scales and output buffers for :meth:`kernel`."""
        (q8, dq), (k8, dk), (v8, dv) = self.quantise(q), self.quantise(k), self.quantise(v)
        scale_s = torch.full((1, 1, 1, 1), E4M3_MAX, device=q.device)
        scale_o = 1.0 / dv  # |O| <= amax(v): O takes v's range
        descales = [dq, dk, dv, 1.0 / scale_s, scale_s, scale_o]
        b, h, s, d = q.shape
        out8 = torch.empty(b, s, h, d, device=q.device, dtype=torch.float8_e4m3fn).transpose(1, 2)
        amax = [torch.empty(1, 1, 1, 1, device=q.device) for _ in range(2)]
        return (q8, k8, v8, descales, out8, amax), scale_o

    def __call__(self, q, k, v) -> torch.Tensor:
        args, scale_o = self.prepare(q, k, v)
        self.kernel(*args)
        return (args[4].float() / scale_o).to(q.dtype)


def cuda_ms(fn, repeats: int) -> float:
    """Median milliseconds of ``fn`` over ``repeats`` runs of 10 calls each, after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 10)
    return sorted(times)[len(times) // 2]


def reference(q, k, v) -> torch.Tensor:
    """Float32 attention, head by head (the full score matrix of all heads would not fit at 16k tokens)."""
    heads = [F.scaled_dot_product_attention(q[:, i:i + 1].float(), k[:, i:i + 1].float(), v[:, i:i + 1].float())
             for i in range(q.shape[1])]
    return torch.cat(heads, dim=1)


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref).norm() / ref.norm()).item()


def attention_flops(b: int, h: int, s: int, d: int) -> float:
    return 4.0 * b * h * s * s * d


def measure(tokens: int, args, fp8: CudnnFP8Attention) -> dict:
    b, h, d = 1, args.heads, args.head_dim
    g = torch.Generator(device="cuda").manual_seed(0)
    # q, k, v as the network makes them: slices of one [b, s, 3, h, d] projection (strided views).
    qkv = torch.randn(b, tokens, 3, h, d, device="cuda", generator=g, dtype=torch.bfloat16)
    qkv[:, :, 0] *= args.logit_scale
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    ref = reference(q, k, v)
    flops = attention_flops(b, h, tokens, d)
    row = {"tokens": tokens, "batch": b, "heads": h, "head_dim": d, "logit_scale": args.logit_scale}
    for name, backend in (("bf16 cudnn", SDPBackend.CUDNN_ATTENTION), ("bf16 flash", SDPBackend.FLASH_ATTENTION)):
        with sdpa_kernel(backend):
            ms = cuda_ms(lambda: F.scaled_dot_product_attention(q, k, v), args.repeats)
            row[name] = {"ms": ms, "tflops": flops / ms / 1e9,
                         "relative_error": relative_error(F.scaled_dot_product_attention(q, k, v), ref)}
    kernel_args, _ = fp8.prepare(q, k, v)
    row["fp8 kernel"] = {"ms": cuda_ms(lambda: fp8.kernel(*kernel_args), args.repeats)}
    row["fp8 kernel"]["tflops"] = flops / row["fp8 kernel"]["ms"] / 1e9
    ms = cuda_ms(lambda: fp8(q, k, v), args.repeats)
    row["fp8 total"] = {"ms": ms, "tflops": flops / ms / 1e9, "relative_error": relative_error(fp8(q, k, v), ref)}
    return row


def shape_parser(description: str) -> argparse.ArgumentParser:
    """The options every attention probe shares: where to write, and the shapes and repeats to time."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", required=True)
    parser.add_argument("--tokens", type=int, nargs="+", default=[4098, 16386])
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    return parser


def new_report(**versions) -> dict:
    """A report's header (when, on which GPU, with which torch and ``versions``); rows go to ``report["rows"]``."""
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "gpu": torch.cuda.get_device_name(),
            "torch": torch.__version__, **versions, "rows": []}


def add_row(report: dict, row: dict) -> None:
    report["rows"].append(row)
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = shape_parser(__doc__.splitlines()[0])
    parser.add_argument("--logit-scales", type=float, nargs="+", default=[1.0, 3.0])
    args = parser.parse_args()
    import cudnn

    fp8 = CudnnFP8Attention()
    report = new_report(cudnn_backend=getattr(cudnn, "backend_version", lambda: "?")(),
                        cudnn_frontend=getattr(cudnn, "__version__", "?"))
    for logit_scale in args.logit_scales:
        for tokens in args.tokens:
            args.logit_scale = logit_scale
            add_row(report, measure(tokens, args, fp8))
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
