#!/usr/bin/env bash
# The one test command: installs what the build needs, configures, builds with
# every core, runs every test (ctest, output shown on failure), and exits non-zero
# on any failure. GPU tests report "Skipped" where no GPU is visible.
#
#   tests/run.sh                       everything, in ./build
#   EMBER_BUILD_DIR=build-asan EMBER_CMAKE_ARGS="-DEMBER_SANITIZE=address,undefined" \
#     EMBER_CTEST_ARGS="-L unit" tests/run.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${EMBER_BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
jobs=$(nproc)

"$root/deploy/install-deps.sh" --tests
# shellcheck source=../deploy/env.sh
. "$root/deploy/env.sh"

# shellcheck disable=SC2086
cmake -S "$root" -B "$build" ${EMBER_CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure -j "$jobs" ${EMBER_CTEST_ARGS:-}
