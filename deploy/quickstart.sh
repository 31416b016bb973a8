#!/usr/bin/env bash
# ember's main job on this machine, from a fresh checkout: installs what the build
# needs, builds (Release, in build-release), starts two shard servers on loopback,
# and trains a click-through model through them with the demo worker
# (client/examples/ctr_demo.c): generated Zipf click data from a planted model,
# pull → logistic loss and gradients on the CPU → push to an Adagrad table. It
# prints loss and throughput as it goes, and ends with the learned model's
# held-out loss next to the planted model's (the floor) and a constant click
# rate's (the baseline). Exit 0 when all of that worked.
#
#   deploy/quickstart.sh [ctr_demo options]     e.g. --model fm, --steps 3000
#
# With no options the demo runs its defaults (about a minute on 2 cores) and must
# end within 0.03 of the planted loss. Server logs go to a temporary directory,
# kept and named if anything fails; the servers are stopped on exit.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${EMBER_BUILD_DIR:-$root/build-release}
case "$build" in /*) ;; *) build=$root/$build ;; esac

"$root/deploy/install-deps.sh"
# shellcheck source=env.sh
. "$root/deploy/env.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target ember-server emberctl ctr_demo

server=$build/server/ember-server
emberctl=$build/client/ctl/emberctl
demo=$build/client/examples/ctr_demo

logs=$(mktemp -d "${TMPDIR:-/tmp}/ember-quickstart.XXXXXX")
pids=()
ok=0
stop() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$ok" -eq 1 ]; then
    rm -rf "$logs"
  else
    echo "ember: quickstart failed; server logs in $logs" >&2
  fi
}
trap stop EXIT

# Each server listens on port 0 (the kernel picks a free one) and logs the
# address it got; a port chosen here and handed over could be taken meanwhile.
shards=""
for i in 0 1; do
  "$server" --listen 127.0.0.1:0 --shard-index "$i" --shard-count 2 \
    --checkpoint-dir "$logs/ckpt$i" 2>"$logs/server$i.log" &
  pids+=($!)
  addr=""
  for _ in $(seq 100); do
    addr=$(sed -n 's/.*event=listening addr=\([^ ]*\).*/\1/p' "$logs/server$i.log" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "${pids[$i]}" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    echo "ember: shard server $i did not start:" >&2
    cat "$logs/server$i.log" >&2
    exit 1
  fi
  shards+="${shards:+,}$addr"
done
export EMBER_SHARDS=$shards

echo "ember: two shard servers on $shards"
"$emberctl" health --wait 20

args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--expect-within 0.03)
fi
echo
"$demo" "${args[@]}"

echo
echo "ember: the table on each shard after training:"
"$emberctl" stats
ok=1
echo "ember: quickstart done"
