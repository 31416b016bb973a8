#!/usr/bin/env bash
# build_hkv_bench.sh — builds HierarchicalKV's benchmark for a GPU visit, here.
#
#   tests/gpu/build_hkv_bench.sh HKV_SRC [OUT_DIR] [--full]
#
# HKV_SRC: a HierarchicalKV source tree (github.com/NVIDIA-Merlin/HierarchicalKV,
# header-only: include/merlin/, benchmark/). Nothing of it is copied into ember;
# the binaries land in OUT_DIR (default build-hkv/, which .gitignore's build*
# covers) and travel to the GPU machine in device_visit.sh's pack (that machine
# has no network).
#
# Builds, with this machine's nvcc for sm_90 (CUDA_ARCH=NN to change):
#   hkv_bench       tests/gpu/hkv_bench_main.cu: HKV's benchmark code, unchanged,
#                   on the shapes table_bench --hkv-matrix measures (see that file)
#   merlin_hashtable_benchmark   with --full: HKV's benchmark program as its own
#                   CMakeLists.txt builds it (its fixed matrix runs for many minutes
#                   and wants ~96 GiB of pinned host memory for its last shape)
# HKV_REV=<commit> names the source's commit where HKV_SRC is not a git checkout
# (it is written to OUT_DIR/hkv_rev.txt for the visit's log).
# The flags follow HKV's CMakeLists.txt: C++17, -gencode arch=compute_NN,code=sm_NN
# (its `-Dsm=NN`), Release (-O3), include/ on the include path; its
# CUDA_SEPARABLE_COMPILATION only matters for its multi-file targets.
set -euo pipefail

src=${1:?usage: build_hkv_bench.sh HKV_SRC [OUT_DIR] [--full]}
out=${2:-build-hkv}
full=0
for a in "$@"; do [ "$a" = --full ] && full=1; done
[ "$out" = --full ] && out=build-hkv
here=$(cd "$(dirname "$0")" && pwd)
arch=${CUDA_ARCH:-90}
nvcc=${CUDACXX:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}

if [ ! -f "$src/benchmark/merlin_hashtable_benchmark.cc.cu" ] ||
   [ ! -f "$src/include/merlin_hashtable.cuh" ]; then
  echo "build_hkv_bench.sh: $src is not a HierarchicalKV source tree" >&2
  exit 2
fi
[ -x "$nvcc" ] || { echo "build_hkv_bench.sh: no nvcc ($nvcc)" >&2; exit 2; }
mkdir -p "$out"

flags=(-std=c++17 -O3 -DNDEBUG
       -gencode "arch=compute_$arch,code=sm_$arch"
       -I "$src/include" -I "$src/benchmark" -Xcompiler -pthread)
rev=${HKV_REV:-$(git -C "$src" rev-parse --short HEAD 2>/dev/null || echo unknown)}

echo "nvcc: $("$nvcc" --version | tail -n 2 | head -n 1); HKV: $src ($rev); sm_$arch"
t0=$SECONDS
"$nvcc" "${flags[@]}" -o "$out/hkv_bench" "$here/hkv_bench_main.cu"
echo "built $out/hkv_bench in $((SECONDS - t0)) s"
if [ "$full" = 1 ]; then
  t0=$SECONDS
  "$nvcc" "${flags[@]}" -o "$out/merlin_hashtable_benchmark" \
    "$src/benchmark/merlin_hashtable_benchmark.cc.cu"
  echo "built $out/merlin_hashtable_benchmark in $((SECONDS - t0)) s"
fi
echo "$rev" >"$out/hkv_rev.txt"
