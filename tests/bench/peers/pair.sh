#!/bin/bash
# pair.sh RPC_BENCH_BINARY OUTDIR [PAIRS]   (PAIRS default 5)
# Paired ember (rpc_bench) vs ps-lite (pslite_bench) comparison on loopback, 1 client,
# dim 64, uniform distinct keys. For each pair index and each shape it runs ps-lite
# then ember (A,B,A,B ...), so every ember number has a ps-lite neighbour minutes apart.
#   S1: pull & push-SGD, 4,096 keys/call, universe 1,048,576, in-flight 1 and 4
#   S2: pull 65,536 keys/call, universe 1,048,576, in-flight 1 and 4
#       (the ember run also measures the iperf3 1-stream loopback ceiling, start and end)
#   S3: hot set: pull & push-SGD, 4,096 keys/call, universe 4,096, in-flight 1 and 4
# Raw output stays in OUTDIR (pairN_SHAPE_{pslite.txt,ember.txt,ember.csv}); then
# pair_report.py OUTDIR prints the table (run automatically at the end).
# PSLITE_BIN (required): a built pslite_bench (docs/BENCHMARKS.md, "Peers", says
# how to build it). Env knobs: PAIR_SECONDS (timed s per measurement, default 2),
#   PAIR_WARMUP (0.5), PAIR_IPERF_SECONDS (1), PSB_PORT (8917), EMBER_SERVER
#   (default: the ember-server of rpc_bench's build tree), PAIR_SHAPES (S1,S2,S3),
#   BASE_RPC_BENCH (an earlier build's rpc_bench, run third in each pair),
#   PAIR_EMBER_ARGS (more rpc_bench options for every ember run, e.g. --threads 1).
set -u
RPCB=${1:?usage: pair.sh RPC_BENCH_BINARY OUTDIR [PAIRS]}
OUT=${2:?usage: pair.sh RPC_BENCH_BINARY OUTDIR [PAIRS]}
PAIRS=${3:-5}
SECS=${PAIR_SECONDS:-2}
WARM=${PAIR_WARMUP:-0.5}
IPS=${PAIR_IPERF_SECONDS:-1}
PSLITE_BIN=${PSLITE_BIN:?set PSLITE_BIN to a built pslite_bench (docs/BENCHMARKS.md)}
SHAPES=${PAIR_SHAPES:-S1,S2,S3}
export PSB_PORT=${PSB_PORT:-8917}
here=$(cd "$(dirname "$0")" && pwd)
RPCB=$(readlink -f "$RPCB")
[ -x "$RPCB" ] || { echo "pair.sh: $RPCB is not executable" >&2; exit 2; }
[ -x "$PSLITE_BIN" ] || { echo "pair.sh: $PSLITE_BIN is not executable" >&2; exit 2; }
# the ember-server of the same build as rpc_bench (build/tests/bench/rpc_bench -> build/server/ember-server)
SRV=${EMBER_SERVER:-$(readlink -f "$(dirname "$RPCB")/../../server/ember-server")}
# BASE_RPC_BENCH: an earlier build's rpc_bench (its own ember-server), run third in
# every pair, so a change is measured before/after against the same ps-lite runs
BASE=${BASE_RPC_BENCH:+$(readlink -f "$BASE_RPC_BENCH")}
BASE_SRV=${BASE:+$(readlink -f "$(dirname "$BASE")/../../server/ember-server")}
SRVARG=()
if [ -x "$SRV" ]; then SRVARG=(--server "$SRV"); else echo "pair.sh: no ember-server at $SRV; rpc_bench picks its own" >&2; fi
unset EMBER_SERVER_BIN
command -v iperf3 >/dev/null || echo "pair.sh: iperf3 not on PATH; S2 gets no ceiling" >&2
mkdir -p "$OUT"

{
  echo "date: $(date -Is)"
  echo "host: $(hostname) cores: $(nproc)"
  echo "rpc_bench: $RPCB"
  echo "ember-server: ${SRVARG[1]:-rpc_bench default}"
  d=$(dirname "$RPCB"); src=$(grep -m1 '^CMAKE_HOME_DIRECTORY' "$d/../../CMakeCache.txt" 2>/dev/null | cut -d= -f2)
  bt=$(grep -m1 '^CMAKE_BUILD_TYPE' "$d/../../CMakeCache.txt" 2>/dev/null | cut -d= -f2)
  [ -n "$src" ] && echo "ember source: $src @ $(git -C "$src" log -1 --format='%h %s' 2>/dev/null | cut -c1-80) ($bt)"
  echo "pslite_bench: $PSLITE_BIN"
  [ -n "$BASE" ] && echo "base rpc_bench: $BASE (server $BASE_SRV)"
  echo "pairs: $PAIRS seconds: $SECS warmup: $WARM iperf-seconds: $IPS shapes: $SHAPES port: $PSB_PORT"
  echo "ember args: ${PAIR_EMBER_ARGS:-none}"
} > "$OUT/meta.txt"
cat "$OUT/meta.txt"

# shape -> ps-lite env / rpc_bench args
pslite_env() {
  case $1 in
    S1) echo "PSB_KEYS=4096 PSB_UNIVERSE=1048576 PSB_OPS=pull,push" ;;
    S2) echo "PSB_KEYS=65536 PSB_UNIVERSE=1048576 PSB_OPS=pull" ;;
    S3) echo "PSB_KEYS=4096 PSB_UNIVERSE=4096 PSB_OPS=pull,push" ;;
  esac
}
ember_args() {
  case $1 in
    S1) echo "--ops pull,push-sgd --keys 4096 --universe 1048576 --no-iperf" ;;
    S2) echo "--ops pull --keys 65536 --universe 1048576 --iperf-seconds $IPS --iperf-streams 2" ;;
    S3) echo "--ops pull,push-sgd --keys 4096 --universe 4096 --no-iperf" ;;
  esac
}

T0=$(date +%s)
for ((p = 1; p <= PAIRS; p++)); do
  for s in ${SHAPES//,/ }; do
    f="$OUT/pair${p}_${s}"
    t=$(date +%s)
    # A: ps-lite (retry once on failure, e.g. a port still in TIME_WAIT)
    for try in 1 2; do
      env $(pslite_env $s) PSB_DIM=64 PSB_INFLIGHT=1,4 PSB_SECONDS=$SECS PSB_WARMUP=$WARM PSB_REPS=1 \
        timeout -k 5 180 "$here/run_pslite.sh" "$PSLITE_BIN" > "$f"_pslite.txt 2>&1 && break
      echo "pair.sh: ps-lite $s pair $p failed (try $try), see ${f}_pslite.txt" >&2
      cp "$f"_pslite.txt "$f"_pslite.fail$try.txt; sleep 2
    done
    t1=$(date +%s)
    # B: ember
    timeout -k 5 300 "$RPCB" "${SRVARG[@]}" --backends cpu $(ember_args $s) ${PAIR_EMBER_ARGS:-} --dims 64 --dists uniform \
      --conc 1x1,1x4 --seconds $SECS --warmup $WARM --reps 1 --csv "$f"_ember.csv > "$f"_ember.txt 2>&1 \
      || echo "pair.sh: ember $s pair $p failed rc=$?, see ${f}_ember.txt" >&2
    # C: an earlier ember build, when given (BASE_RPC_BENCH): before/after in the same pairs
    if [ -n "$BASE" ]; then
      timeout -k 5 300 "$BASE" --server "$BASE_SRV" --backends cpu $(ember_args $s) ${PAIR_EMBER_ARGS:-} --dims 64 \
        --dists uniform --conc 1x1,1x4 --seconds $SECS --warmup $WARM --reps 1 \
        --csv "$f"_base.csv > "$f"_base.txt 2>&1 \
        || echo "pair.sh: base $s pair $p failed rc=$?, see ${f}_base.txt" >&2
    fi
    t2=$(date +%s)
    echo "pair $p $s: ps-lite $((t1 - t)) s, ember $((t2 - t1)) s (total $((t2 - T0)) s)"
  done
done
echo "elapsed: $(( $(date +%s) - T0 )) s" | tee -a "$OUT/meta.txt"
python3 "$here/pair_report.py" "$OUT" | tee "$OUT/report.txt"
