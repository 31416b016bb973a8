#!/usr/bin/env bash
# ember's main job on this machine, from a fresh checkout: installs what the build
# needs, builds (Release), and runs it.
#
# Today ember is its embedding table: this runs the table benchmark at dim 64,
# load factor 0.75, uniform and Zipf keys, on every core, and prints billions of
# keys/s per operation next to this machine's memcpy bandwidth. (The shard
# server and a demo worker training through it replace this when they land.)
#
#   deploy/quickstart.sh [table_bench options]     e.g. --dims 8,64,128 --quick
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${EMBER_BUILD_DIR:-$root/build-release}

"$root/deploy/install-deps.sh"
# shellcheck source=env.sh
. "$root/deploy/env.sh"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" --target table_bench

args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(--dims 64 --lfs 0.75 --dist both)
fi
exec "$build/tests/bench/table_bench" "${args[@]}"
