#!/usr/bin/env bash
# device_visit.sh — every GPU check of one visit to a lent GPU machine, in one go.
#
# Here (no GPU needed):   tests/gpu/device_visit.sh pack      builds build-gpu and
#                         packs programs + libraries into .devpack/
# There (the GPU machine, from the repository root, through the device tool's run):
#   export LD_LIBRARY_PATH=$PWD/.devpack/lib; bash .devpack/bin/device_visit.sh run [tests|bench|rpc|train|all]
#
# `run` writes one log per step under $OUT (or ./visit-out), and prints a summary
# table last: each GPU test's verdict, then the benchmark's summary. Steps are
# bounded by `timeout`, so one hung step cannot eat the visit.
set -uo pipefail

mode=${1:-run}
what=${2:-all}
root=$(cd "$(dirname "$0")/../.." && pwd)

if [ "$mode" = pack ]; then
  cd "$root"
  build=${EMBER_GPU_BUILD:-build-gpu}
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DEMBER_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES=90 >/dev/null
  cmake --build "$build" -j "$(nproc)" || exit 1
  rm -rf .devpack
  progs=$(ls "$build"/tests/gpu/test_* "$build"/tests/bench/table_bench 2>/dev/null)
  for p in "$build"/server/ember-server "$build"/tests/integration/test_server \
           "$build"/tests/integration/test_client "$build"/tests/integration/test_server_backend \
           "$build"/tests/integration/test_server_coalesce "$build"/tests/integration/test_growth_ttl \
           "$build"/tests/bench/rpc_bench \
           "$build"/tests/bench/train_bench "$(command -v iperf3)"; do
    [ -x "$p" ] && progs="$progs $p"
  done
  # shellcheck disable=SC2086
  "$root"/../shared/device/pack.sh .devpack $progs tests/gpu/device_visit.sh
  exit $?
fi

bin=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-$PWD/visit-out}
mkdir -p "$out"
# Step logs stay on the machine (the tool returns a few files only); a failing
# step's log is copied next to the summary.
logs=$(mktemp -d)
summary=$out/summary.txt
: >"$summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  | tee "$out/gpu.txt"

step() {   # step NAME TIMEOUT CMD... — runs CMD, logs to $out/NAME.log, records a verdict
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" >"$logs/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  case $rc in
    0) verdict=passed ;;
    77) verdict=SKIPPED ;;
    124|137) verdict="TIMED OUT" ;;
    *) verdict="FAILED rc=$rc" ;;
  esac
  printf '%-28s %-14s %4ds\n' "$name" "$verdict" $((SECONDS - t0)) | tee -a "$summary"
  if [ "$rc" != 0 ] && [ "$rc" != 77 ]; then
    cp "$logs/$name.log" "$out/"
    tail -n 40 "$logs/$name.log"
  fi
}

if [ "$what" = all ] || [ "$what" = tests ]; then
  export CK_FORK=no CK_DEFAULT_TIMEOUT=300
  for t in "$bin"/test_gpu_* "$bin"/test_cuda_*; do
    [ -x "$t" ] || continue
    step "$(basename "$t")" 300 "$t"
  done
  if [ -x "$bin/test_server" ] && [ -x "$bin/ember-server" ]; then
    EMBER_SERVER_BIN="$bin/ember-server" EMBER_TEST_BACKEND=gpu \
      step gpu.server 240 "$bin/test_server"
    EMBER_SERVER_BIN="$bin/ember-server" EMBER_TEST_BACKEND=gpu \
      step gpu.client 240 "$bin/test_client"
    EMBER_SERVER_BIN="$bin/ember-server" EMBER_TEST_BACKEND=gpu \
      step gpu.server_coalesce 240 "$bin/test_server_coalesce"
    [ -x "$bin/test_growth_ttl" ] && EMBER_SERVER_BIN="$bin/ember-server" \
      EMBER_TEST_BACKEND=gpu step gpu.growth_ttl 120 "$bin/test_growth_ttl"
    EMBER_SERVER_BIN="$bin/ember-server" step server_backend 120 "$bin/test_server_backend"
  fi
fi

if [ "$what" = all ] || [ "$what" = bench ]; then
  tb="$bin/table_bench"
  # The issue's matrix with HierarchicalKV's conventions: dim 64 at λ 0.5/0.75/1.0
  # in HBM, dim 8 and 128 at λ 0.5, and hybrid (128 M keys, 16 GiB HBM + 16 GiB host).
  step bench.hkv_matrix 400 "$tb" --backend gpu --hkv-matrix --reps 5 \
    --csv "$out/bench_hkv_matrix.csv"
fi

if [ "$what" = all ] || [ "$what" = rpc ]; then
  # GPU- against CPU-backend servers, same run (rpc_bench's gpu-vs-cpu matrix).
  # --quick keeps every shape with short windows; drop it when the visit has time.
  EMBER_SERVER_BIN="$bin/ember-server" step bench.rpc_gpu_vs_cpu 280 "$bin/rpc_bench" \
    --matrix gpu-vs-cpu ${EMBER_VISIT_RPC_ARGS:---quick} --backends cpu,gpu \
    --csv "$out/rpc_gpu_vs_cpu.csv"
fi

if [ "$what" = all ] || [ "$what" = train ]; then
  # The training job on CPU- and GPU-backend shards, same run, each configuration
  # (plain, the worker optimizations, PushPull); EMBER_VISIT_TRAIN_ARGS to change it.
  [ -x "$bin/train_bench" ] && EMBER_SERVER_BIN="$bin/ember-server" \
    step bench.train_gpu_vs_cpu 280 "$bin/train_bench" --backends cpu,gpu \
    ${EMBER_VISIT_TRAIN_ARGS:---workers 4 --shards 1 --steps 20 --reps 1}
fi

for f in "$logs"/bench.*.log; do
  [ -f "$f" ] || continue
  echo "-- $(basename "$f" .log)"
  grep -E '^gpu find ' "$f" | head -3
  sed -n '/^summary/,$p' "$f" | head -90
  sed -n '/^backend  *config/,$p' "$f" | head -12
done
cp "$logs"/bench.*.log "$out/" 2>/dev/null
echo
echo "== summary =="
cat "$summary"
