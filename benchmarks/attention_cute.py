"""Is FlashAttention's CuTe-DSL Hopper kernel faster than cuDNN's at the denoiser's shapes? BF16 forward (what
sampling runs) and forward + backward (what training runs), timed on one GPU against PyTorch's
``scaled_dot_product_attention`` on cuDNN (its default there), with the error of each against a float32 reference.

Why: at 512^2 the attention is 1.73 s of the 30 sampling steps, and 30 steps in 2.0 s need it at ~590 TFLOP/s for
head width 64 (docs/BENCHMARKS.md, "GPU: the speed issue, second round"); cuDNN's kernel runs at 407-457. The CuTe-DSL
kernels of flash-attn 2.8.3 (``flash_attn/cute``, the FlashAttention-3 design written in CUTLASS's Python DSL and
compiled on first use) are the one Hopper kernel left to try that can run on the lent machine: flash-attn is not
installed there, FlashAttention-3's CUDA sources are not on PyPI, and the machine reaches no other index.

Shapes as in ``attention_fp8.py``: 16 heads of width 64, 4,098 tokens (256^2) and 16,386 (512^2), batch 1; the
backward at the training step's shape, 8 objects of 4,098 tokens. In 2.8.3 the Hopper forward is a Hopper kernel
(``FlashAttentionForwardSm90``) but the backward is the Ampere-style one (``flash_bwd.py``), so the backward row says
whether that kernel can serve training at all.

    bash benchmarks/attention_cute_carry.sh                  # project machine: makes .fa (47 MB) from PyPI
    python3 benchmarks/attention_cute.py --out results.json  # GPU machine, carrying .fa
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from attention_fp8 import (  # noqa: E402
    add_row,
    attention_flops,
    cuda_ms,
    new_report,
    reference,
    relative_error,
    shape_parser,
)

CARRY = Path(".fa")
SITE = Path("/tmp/fa_site")


def install_carry() -> None:
    """Unpack ``.fa`` into ``SITE`` once per machine and put it on the import path (``--target`` installs skip the
    DSL's ``.pth`` file, so its package folder is added by hand)."""
    if not (SITE / ".complete").exists():
        SITE.mkdir(parents=True, exist_ok=True)
        wheels = sorted(str(p) for p in CARRY.glob("*.whl"))
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--target", str(SITE), *wheels], check=True)
        for archive in sorted(CARRY.glob("*.tar.xz")):
            subprocess.run(["tar", "xJf", str(archive), "-C", str(SITE)], check=True)
        (SITE / ".complete").touch()
    sys.path[:0] = [str(SITE), str(SITE / "nvidia_cutlass_dsl" / "python_packages")]


def measure(tokens: int, args, cute_attention) -> dict:
    b, h, d = 1, args.heads, args.head_dim
    g = torch.Generator(device="cuda").manual_seed(0)
    qkv = torch.randn(b, tokens, 3, h, d, device="cuda", generator=g, dtype=torch.bfloat16)
    q, k, v = qkv.unbind(2)  # [b, s, h, d]: FlashAttention's layout; SDPA takes the [b, h, s, d] views
    q_t, k_t, v_t = (t.transpose(1, 2) for t in (q, k, v))
    ref = reference(q_t, k_t, v_t)
    flops = attention_flops(b, h, tokens, d)
    row = {"tokens": tokens, "batch": b, "heads": h, "head_dim": d}
    with torch.no_grad():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            ms = cuda_ms(lambda: F.scaled_dot_product_attention(q_t, k_t, v_t), args.repeats)
            error = relative_error(F.scaled_dot_product_attention(q_t, k_t, v_t), ref)
        row["bf16 cudnn"] = {"ms": ms, "tflops": flops / ms / 1e9, "relative_error": error}
        # The kernel reads contiguous [b, s, h, d] tensors: the copies the network's strided q, k, v would need
        # are left out of the time, as they could be fused into the projection.
        q_c, k_c, v_c = (t.contiguous() for t in (q, k, v))
        ms = cuda_ms(lambda: cute_attention(q_c, k_c, v_c), args.repeats)
        error = relative_error(cute_attention(q_c, k_c, v_c).transpose(1, 2), ref)
        row["bf16 cute"] = {"ms": ms, "tflops": flops / ms / 1e9, "relative_error": error}
    return row


def reference_gradients(q, k, v, grad_out) -> list[torch.Tensor]:
    """Float32 gradients of attention with respect to q, k, v ([b, h, s, d]), batch element by batch element."""
    grads = []
    for i in range(q.shape[0]):
        leaves = [t[i:i + 1].detach().float().requires_grad_() for t in (q, k, v)]
        reference(*leaves).backward(grad_out[i:i + 1].float())
        grads.append([t.grad for t in leaves])
    return [torch.cat(parts) for parts in zip(*grads)]


def measure_backward(args, cute_attention) -> dict:
    """Forward + backward at the training step's shape; error of each input's gradient against float32."""
    b, s, h, d = args.backward_batch, args.backward_tokens, args.heads, args.head_dim
    g = torch.Generator(device="cuda").manual_seed(1)
    q, k, v, grad_out = (torch.randn(b, s, h, d, device="cuda", generator=g, dtype=torch.bfloat16)
                         for _ in range(4))
    ref = reference_gradients(*(t.transpose(1, 2) for t in (q, k, v, grad_out)))
    flops = 3.5 * attention_flops(b, h, s, d)  # backward 2.5x the forward's products (recomputed scores)
    row = {"tokens": s, "batch": b, "heads": h, "head_dim": d, "pass": "forward+backward"}

    def time_and_check(attend) -> dict:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]

        def step():
            for t in leaves:
                t.grad = None
            attend(*leaves).backward(grad_out)

        ms = cuda_ms(step, args.repeats)
        step()
        errors = [relative_error(t.grad.transpose(1, 2), r) for t, r in zip(leaves, ref)]
        return {"ms": ms, "tflops": flops / ms / 1e9, "relative_error_dq_dk_dv": errors}

    def sdpa(q_, k_, v_):  # [b, s, h, d] in and out, as the CuTe kernel takes them
        return F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q_, k_, v_))).transpose(1, 2)

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        row["bf16 cudnn"] = time_and_check(sdpa)
    row["bf16 cute"] = time_and_check(cute_attention)
    return row


def main() -> None:
    parser = shape_parser(__doc__.splitlines()[0])
    parser.add_argument("--backward-batch", type=int, default=8)
    parser.add_argument("--backward-tokens", type=int, default=4098)
    args = parser.parse_args()
    install_carry()
    import cuda.bindings  # the 12.9 bindings of the carry, unless a regular `cuda` package elsewhere shadows them
    from flash_attn.cute import flash_attn_func

    def cute_attention(q, k, v):
        return flash_attn_func(q, k, v)[0]  # (out, log-sum-exp)

    report = new_report(cudnn=torch.backends.cudnn.version(),
                        cuda_bindings=f"{cuda.bindings.__version__} ({Path(cuda.bindings.__file__).parent})")

    def keep(row: dict, start: float) -> None:  # written row by row: a kernel that crashes later loses nothing
        add_row(report, {**row, "seconds_with_compilation": time.perf_counter() - start})
        Path(args.out).write_text(json.dumps(report, indent=2))

    for tokens in args.tokens:
        start = time.perf_counter()
        keep(measure(tokens, args, cute_attention), start)
    if args.backward_batch > 0:
        start = time.perf_counter()
        try:
            row = measure_backward(args, cute_attention)
        except Exception as error:  # an unsupported backward is a result too
            row = {"pass": "forward+backward", "error": f"{type(error).__name__}: {error}"}
        keep(row, start)


if __name__ == "__main__":
    main()
