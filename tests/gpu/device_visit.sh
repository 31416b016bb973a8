#!/usr/bin/env bash
# device_visit.sh — every GPU check of one visit to a lent GPU machine, in one go.
#
# Here (no GPU needed):   tests/gpu/device_visit.sh pack      builds build-gpu and
#                         packs programs + libraries into .devpack/
#                         (EMBER_HKV_SRC=<HierarchicalKV source> also builds HKV's
#                         benchmark with tests/gpu/build_hkv_bench.sh, unless
#                         build-hkv/hkv_bench is there already; either is packed)
# There (the GPU machine, from the repository root, through the device tool's run):
#   export LD_LIBRARY_PATH=$PWD/.devpack/lib; bash .devpack/bin/device_visit.sh run [WHAT]
# WHAT: tests, bench, rpc, train, kernels, a comma-separated list of them, or all
# (all = tests,bench,rpc,train; kernels, issue 16's measurements, is asked for by
# name: see "Issue 16 visit plan" in docs/BENCHMARKS.md).
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
  hkv=${EMBER_HKV_BUILD:-build-hkv}
  if [ -n "${EMBER_HKV_SRC:-}" ] && [ ! -x "$hkv/hkv_bench" ]; then
    tests/gpu/build_hkv_bench.sh "$EMBER_HKV_SRC" "$hkv" || exit 1
  fi
  progs=$(ls "$build"/tests/gpu/test_* "$build"/tests/bench/table_bench 2>/dev/null)
  for p in "$build"/server/ember-server "$build"/tests/integration/test_server \
           "$build"/tests/integration/test_client "$build"/tests/integration/test_server_backend \
           "$build"/tests/integration/test_server_coalesce "$build"/tests/integration/test_growth_ttl \
           "$build"/tests/bench/rpc_bench \
           "$build"/tests/bench/train_bench "$build"/tests/bench/gpu_micro \
           "$hkv"/hkv_bench "$(command -v iperf3)"; do
    [ -x "$p" ] && progs="$progs $p"
  done
  # shellcheck disable=SC2086
  "$root"/../shared/device/pack.sh .devpack $progs tests/gpu/device_visit.sh || exit 1
  [ -f "$hkv/hkv_rev.txt" ] && cp "$hkv/hkv_rev.txt" .devpack/bin/
  exit 0
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

want() {   # want GROUP — 1 if `run` was asked for GROUP
  case $what in
    all) [ "$1" != kernels ] ;;
    *) case ",$what," in *",$1,"*) return 0 ;; *) return 1 ;; esac ;;
  esac
}

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

if want tests; then
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

if want bench; then
  tb="$bin/table_bench"
  # The issue's matrix with HierarchicalKV's conventions: dim 64 at λ 0.5/0.75/1.0
  # in HBM, dim 8 and 128 at λ 0.5, and hybrid (128 M keys, 16 GiB HBM + 16 GiB host).
  step bench.hkv_matrix 400 "$tb" --backend gpu --hkv-matrix --reps 5 \
    --csv "$out/bench_hkv_matrix.csv"
fi

if want rpc; then
  # GPU- against CPU-backend servers, same run (rpc_bench's gpu-vs-cpu matrix).
  # --quick keeps every shape with short windows; drop it when the visit has time.
  EMBER_SERVER_BIN="$bin/ember-server" step bench.rpc_gpu_vs_cpu 280 "$bin/rpc_bench" \
    --matrix gpu-vs-cpu ${EMBER_VISIT_RPC_ARGS:---quick} --backends cpu,gpu \
    --csv "$out/rpc_gpu_vs_cpu.csv"
fi

if want train; then
  # The training job on CPU- and GPU-backend shards, same run, each configuration
  # (plain, the worker optimizations, PushPull); EMBER_VISIT_TRAIN_ARGS to change it.
  [ -x "$bin/train_bench" ] && EMBER_SERVER_BIN="$bin/ember-server" \
    step bench.train_gpu_vs_cpu 280 "$bin/train_bench" --backends cpu,gpu \
    ${EMBER_VISIT_TRAIN_ARGS:---workers 4 --shards 1 --steps 20 --reps 1}
fi

if want kernels; then
  # Issue 16: everything that decides the GPU table's rewrite, in one go, within
  # EMBER_VISIT_KERNELS_S seconds (default 360) in all; a step that would not fit
  # what is left is cut to it, or skipped. In order of what matters most:
  #  1. find_lanes = 1 gives the CPU's results (find1 walks, torn-row races);
  #  2. find with 8 lanes against 1, --hkv-matrix, A then B (round 1);
  #  3. HierarchicalKV's own benchmark, same card, same shapes;
  #  4. gpu_micro: the gather ceiling and host-memory rows (4 KiB/2 MiB pages);
  #  5. Nsight Compute on find (8 and 1 lanes), find_or_insert and the fused
  #     apply (Adam): occupancy, stall reasons, DRAM bytes per key, spills;
  #  6. the A/B again (round 2), B then A, if time is left.
  kbudget=${EMBER_VISIT_KERNELS_S:-360}
  kstart=$SECONDS
  tb="$bin/table_bench"
  kstep() {   # kstep NAME TIMEOUT CMD... — step, cut to the group's time left
    local name=$1 limit=$2; shift 2
    local left=$((kbudget - (SECONDS - kstart)))
    if [ "$left" -lt 15 ]; then
      printf '%-28s %-14s %4ds\n' "$name" "SKIPPED(time)" 0 | tee -a "$summary"
      return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    step "$name" "$limit" "$@"
  }
  ab() {   # ab ROUND LANES
    kstep "kernels.ab_r$1_find$2" 75 "$tb" --backend gpu --hkv-matrix --ops find --reps 3 \
      --find-lanes "$2" --csv "$out/ab_r$1_find$2.csv"
  }
  export CK_FORK=no CK_DEFAULT_TIMEOUT=120
  [ -x "$bin/test_gpu_table" ] && CK_RUN_CASE=find1 kstep kernels.test_find1 120 \
    "$bin/test_gpu_table"
  [ -x "$bin/test_gpu_table_api" ] && CK_RUN_CASE=streams kstep kernels.test_streams 90 \
    "$bin/test_gpu_table_api"
  ab 1 8
  ab 1 1
  if [ -x "$bin/hkv_bench" ]; then
    echo "HierarchicalKV $(cat "$bin/hkv_rev.txt" 2>/dev/null || echo '(commit unknown)')" \
      >"$out/hkv_bench.txt"
    kstep kernels.hkv_bench 150 "$bin/hkv_bench" hbm64 hybrid64
  else
    printf '%-28s %-14s %4ds\n' kernels.hkv_bench "SKIPPED(none)" 0 | tee -a "$summary"
  fi
  [ -x "$bin/gpu_micro" ] && kstep kernels.gpu_micro 90 "$bin/gpu_micro" --device-gib 8 \
    --host-gib 4 --reps 5 --csv "$out/gpu_micro.csv"

  ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu /usr/local/cuda-*/bin/ncu \
              /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
  if [ -z "$ncu_bin" ]; then
    echo "ncu: not on this machine; Nsight Compute profiles skipped" | tee "$out/ncu.txt"
    printf '%-28s %-14s %4ds\n' kernels.ncu "SKIPPED(none)" 0 | tee -a "$summary"
  else
    "$ncu_bin" --version | tail -n 1 | tee "$out/ncu.txt"
    # One table of 16 M slots at λ 0.5, dim 64; the first launch of each kernel
    # with 1,048,576 keys (table_bench's warm-up call) is profiled.
    ncu_metrics=dram__bytes_read.sum,dram__bytes_write.sum,launch__registers_per_thread
    ncu_metrics=$ncu_metrics,l1tex__t_sectors_pipe_lsu_mem_local_op_ld.sum
    ncu_metrics=$ncu_metrics,l1tex__t_sectors_pipe_lsu_mem_local_op_st.sum
    ncu_metrics=$ncu_metrics,sm__warps_active.avg.pct_of_peak_sustained_active
    ncu_step() {   # ncu_step NAME KERNEL LANES OPS
      local name=$1 kernel=$2 lanes=$3 ops=$4
      local prof=("$ncu_bin" --target-processes all -k "regex:^$kernel\$" -c 1
                  --section SpeedOfLight --section Occupancy --section LaunchStats
                  --section WarpStateStats --section MemoryWorkloadAnalysis
                  --section SchedulerStats)
      local run=(-f -o "$out/ncu_$name" "$tb" --backend gpu --capacity 16777216 --dims 64
                 --lfs 0.5 --reps 1 --memcpy-mib 64 --ops "$ops" --find-lanes "$lanes")
      kstep "kernels.ncu_$name" 75 "${prof[@]}" --metrics "$ncu_metrics" "${run[@]}"
      if grep -q -i "failed to find metric\|invalid metric" "$logs/kernels.ncu_$name.log" \
           2>/dev/null; then
        kstep "kernels.ncu_${name}_sect" 75 "${prof[@]}" "${run[@]}"   # the sections alone
      fi
      [ -f "$out/ncu_$name.ncu-rep" ] || return 0
      "$ncu_bin" -i "$out/ncu_$name.ncu-rep" --csv --page raw --print-units base \
        >"$out/ncu_${name}_raw.csv" 2>/dev/null
      "$ncu_bin" -i "$out/ncu_$name.ncu-rep" --csv --page details --print-units base \
        >"$out/ncu_${name}_details.csv" 2>/dev/null
      # registers, occupancy, DRAM bytes per key, local (spill) sectors, top 5 stalls
      awk -F'","' -v name="$name" -v keys=1048576 '
        { gsub(/^"|"$/, "", $0) }
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        NR == 2 { next }
        { printf "%-16s regs %s occupancy %s%% dram read %.1f B/key write %.1f B/key" \
                 " local ld/st sectors %s/%s\n", name, $col["launch__registers_per_thread"],
            $col["sm__warps_active.avg.pct_of_peak_sustained_active"],
            $col["dram__bytes_read.sum"] / keys, $col["dram__bytes_write.sum"] / keys,
            $col["l1tex__t_sectors_pipe_lsu_mem_local_op_ld.sum"],
            $col["l1tex__t_sectors_pipe_lsu_mem_local_op_st.sum"]
          n = 0
          for (h in col)
            if (h ~ /^smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio$/) {
              r = h; sub(/^smsp__average_warps_issue_stalled_/, "", r)
              sub(/_per_issue_active\.ratio$/, "", r)
              n++; sv[n] = $col[h] + 0; sn[n] = r
            }
          printf "%-16s stalls (warps per issue):", name
          for (k = 0; k < 5 && k < n; k++) {
            b = 0
            for (m = 1; m <= n; m++) if (!(m in done) && (b == 0 || sv[m] > sv[b])) b = m
            done[b] = 1; printf " %s %.2f", sn[b], sv[b]
          }
          printf "\n"
        }' "$out/ncu_${name}_raw.csv" 2>/dev/null | tee -a "$out/ncu.txt"
    }
    ncu_step find8 k_find 8 find
    if grep -q "ERR_NVGPUCTRPERM" "$logs/kernels.ncu_find8.log" 2>/dev/null; then
      echo "ncu: no permission for GPU performance counters (ERR_NVGPUCTRPERM): skipped" \
        | tee -a "$out/ncu.txt"
    else
      ncu_step find1 k_find_warp 1 find
      ncu_step find_or_insert k_find_or_insert 8 find_or_insert
      ncu_step apply_adam k_apply 8 adam
    fi
  fi
  ab 2 1
  ab 2 8
  echo "-- kernels: find, 8 lanes (A) against 1 lane per key (B), B keys/s (2^30)"
  for f in "$logs"/kernels.ab_*.log; do
    [ -f "$f" ] || continue
    echo "   $(basename "$f" .log)"
    sed -n '/^summary/,$p' "$f" | grep -E '^dim|  find ' | head -n 14
  done
  [ -f "$out/ncu.txt" ] && { echo "-- kernels: Nsight Compute"; cat "$out/ncu.txt"; }
  [ -f "$logs/kernels.hkv_bench.log" ] && { echo "-- kernels: HierarchicalKV";
    grep -E '^\*|^\|' "$logs/kernels.hkv_bench.log" | head -n 30; }
  [ -f "$logs/kernels.gpu_micro.log" ] && { echo "-- kernels: gpu_micro";
    cat "$logs/kernels.gpu_micro.log" | head -n 40; }
  cp "$logs"/kernels.*.log "$out/" 2>/dev/null
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
