# Source this on the lent GPU machine, from the repository root (see docs/BENCHMARKS.md):
#   source benchmarks/gpu_env.sh
# It installs the carried wheels (.whl: gsplat, moderngl, tyro, trimesh, ...) into a temporary folder on
# PYTHONPATH, unpacks the carried EGL loader packages (.gl) when the machine lacks them, and points LPIPS at the
# carried float16 VGG weights (.gpu/lpips_vgg16.safetensors, made by `python -m diffusiongs.metrics.lpips --export`).
# A fixed folder per set of wheels: gsplat's JIT build is keyed on its source path, so a second call on a warm
# machine reuses the build instead of compiling again (~80 s).
site=/tmp/diffusiongs_site_$(cat .whl/*.whl | md5sum | cut -c1-12)
if [ ! -f "$site/.complete" ]; then
    rm -rf "$site"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" .whl/*.whl
    touch "$site/.complete"
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 PYTHONUNBUFFERED=1
if [ -f .gpu/lpips_vgg16.safetensors ]; then export DIFFUSIONGS_LPIPS_WEIGHTS="$PWD/.gpu/lpips_vgg16.safetensors"; fi
if ! ldconfig -p | grep -q 'libEGL.so.1 '; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
diffusiongs() { python3 -m diffusiongs.cli.main "$@"; }
export -f diffusiongs
