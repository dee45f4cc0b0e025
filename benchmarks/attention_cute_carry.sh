#!/usr/bin/env bash
# Make .fa, what benchmarks/attention_cute.py carries to the lent GPU machine (which reaches no package index), on
# the project machine from PyPI, from the repository root:
#   - flash_attn/cute: the CuTe-DSL FlashAttention kernels of the flash-attn 2.8.3.post2 sdist (pure Python, compiled
#     on the GPU at first use), under an empty flash_attn/__init__.py: the sdist's own imports the CUDA extension
#     that is not built here;
#   - the CUTLASS DSL they were written for (nvidia-cutlass-dsl 4.1.0), unpacked and xz-compressed: its wheel is
#     58 MB, 40 MB this way, so that .fa (47 MB) and the code fit a call's 64 MiB with the demo model's weights
#     left behind (move diffusiongs/assets/demo_model out of the tree for that call);
#   - cuda-bindings 12.9 (the DSL asks for cuda-python < 13; the 12.x driver API runs on the machines' CUDA 13 driver)
#     and cuda-pathfinder, which it imports.
set -euo pipefail
out=.fa
sdist=https://files.pythonhosted.org/packages/6c/b1/b77625e3d11260d2bd6a4fc249a4be9a3da97ff848e2222e810c4f0e0211/flash_attn-2.8.3.post2.tar.gz
sdist_sha256=d0f9f0b08a986cdeadbffcf5ec8b3a8f514366c68ad1853d3ab061bc83cc340b
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rm -rf "$out" && mkdir -p "$out"
grep -qx "/$out/" .git/info/exclude 2>/dev/null || echo "/$out/" >> .git/info/exclude

# `pip download` of this sdist stops at building its metadata (setup.py wants CUDA), so it is fetched directly.
curl -sSfL -o "$tmp/flash_attn.tar.gz" "$sdist"
echo "$sdist_sha256  $tmp/flash_attn.tar.gz" | sha256sum --check --quiet
tar xzf "$tmp/flash_attn.tar.gz" -C "$tmp" --wildcards '*/flash_attn/cute/*.py'
mkdir -p "$tmp/fa/flash_attn" && mv "$tmp"/flash_attn-*/flash_attn/cute "$tmp/fa/flash_attn/"
: > "$tmp/fa/flash_attn/__init__.py"
tar cJf "$out/flash_attn_cute.tar.xz" -C "$tmp/fa" flash_attn

pip download -q --no-deps --only-binary :all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d "$tmp/wheels" \
    nvidia-cutlass-dsl==4.1.0 cuda-bindings==12.9.9 cuda-pathfinder==1.9.1
python3 -m zipfile -e "$tmp"/wheels/nvidia_cutlass_dsl-*.whl "$tmp/dsl"
XZ_OPT=-6 tar cJf "$out/nvidia_cutlass_dsl.tar.xz" -C "$tmp/dsl" nvidia_cutlass_dsl
mv "$tmp"/wheels/cuda_*.whl "$out/"
du -sh "$out"
