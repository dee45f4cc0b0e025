# Source this on the lent GPU machine, from the repository root (see docs/BENCHMARKS.md):
#   source benchmarks/gpu_env.sh
# It installs the carried wheels (.whl: gsplat, moderngl, tyro, trimesh, ...) into a fixed folder on PYTHONPATH,
# unpacks the carried EGL loader packages (.gl) when the machine lacks them, and points LPIPS at the carried VGG
# weights (.gpu/lpips_vgg16_int8.safetensors or .gpu/lpips_vgg16.safetensors, made by
# `python -m diffusiongs.metrics.lpips --export FILE --dtype int8|float16`).
# The folder is kept for later calls on a warm machine, which then need not carry the wheels again; gsplat's JIT
# build is keyed on its source path, so they also reuse the build instead of compiling again (~80 s).
site=${DIFFUSIONGS_SITE:-/tmp/diffusiongs_site}
if [ ! -f "$site/.complete" ]; then
    rm -rf "$site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    touch "$site/.complete"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
# NVLink multicast stays off on the shared multi-GPU hosts (KINDS.md of the lending service): set here too, so
# that programs started with their own environment keep it.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
for weights in .gpu/lpips_vgg16_int8.safetensors .gpu/lpips_vgg16.safetensors; do
    if [ -f "$weights" ]; then export DIFFUSIONGS_LPIPS_WEIGHTS="$PWD/$weights"; break; fi
done
if [ -d .gl ] && ! ldconfig -p | grep -q 'libEGL.so.1 '; then  # .gl is carried by the calls that render
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
diffusiongs() { python3 -m diffusiongs.cli.main "$@"; }
export -f diffusiongs
