#!/bin/bash
# replication_lag.sh — a follower's lag under a push load (README "Replication and
# failover"): a leader and a --replica-of follower on loopback, rpc_bench pushing
# into the leader (given servers), the follower's /metrics sampled every 50 ms from
# when it is current after the table's pre-fill to the end of the load.
#
#   tests/bench/replication_lag.sh [BUILD_DIR] [CxD]     e.g. build 4x2
set -u
build=${1:-build}
conc=${2:-1x1}
S=$build/server/ember-server
work=$(mktemp -d /tmp/ember-lag.XXXXXX)
lp=$((20000 + RANDOM % 20000)); fp=$((lp + 1)); mp=$((lp + 2))
$S --listen 127.0.0.1:$lp --threads 2 --backend cpu --log-level warn > "$work/leader.log" 2>&1 & LP=$!
$S --listen 127.0.0.1:$fp --threads 2 --backend cpu --log-level warn \
   --replica-of 127.0.0.1:$lp --metrics-listen 127.0.0.1:$mp > "$work/follower.log" 2>&1 & FP=$!
trap 'kill $LP $FP 2>/dev/null; rm -rf "$work"' EXIT
sleep 1
"$build/tests/bench/rpc_bench" --shards 127.0.0.1:$lp --ops push-sgd --keys 4096 --dims 64 \
    --dists uniform --conc "$conc" --universe 262144 --seconds 3 --reps 3 --no-iperf \
    > "$work/bench.txt" 2>&1 & BP=$!
until grep -q "filled with" "$work/bench.txt"; do
    kill -0 $BP 2>/dev/null || { cat "$work/bench.txt"; exit 1; }
    sleep 0.05
done
t0=$(date +%s.%N)
until curl -s 127.0.0.1:$mp/metrics | awk '/^ember_replication_lag_seconds /{exit !($2 < 0.05)}'; do
    sleep 0.05
done
echo "follower current $(echo "$(date +%s.%N) - $t0" | bc) s after the leader's pre-fill ended"
while kill -0 $BP 2>/dev/null; do
    curl -s 127.0.0.1:$mp/metrics | awk '/^ember_replication_lag_versions /{v=$2}
        /^ember_replication_lag_seconds /{s=$2} END{print v, s}' >> "$work/lag.txt"
    sleep 0.05
done
grep -E "^given push" "$work/bench.txt" | tail -1
python3 - "$work/lag.txt" <<'PY'
import statistics, sys
v = [tuple(map(float, l.split())) for l in open(sys.argv[1]) if len(l.split()) == 2]
lv = sorted(a for a, b in v); lm = sorted(1000 * b for a, b in v)
q = lambda a, p: a[min(len(a) - 1, int(len(a) * p))]
print(f"{len(v)} samples: lag_versions median {statistics.median(lv):.0f} p90 {q(lv, .9):.0f} "
      f"max {lv[-1]:.0f}; lag ms median {statistics.median(lm):.0f} p90 {q(lm, .9):.0f} "
      f"p99 {q(lm, .99):.0f} max {lm[-1]:.0f}")
PY
