#!/usr/bin/env bash
# Fuzzes one target for a while (building the targets first if needed).
#
#   tests/fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#   tests/fuzz/run.sh wire 600                  ten minutes on the Pull/Push codec
#   tests/fuzz/run.sh ckpt 3600 -jobs=8 -workers=8
#
# TARGET is one of tests/fuzz/targets (wire, admin, ckpt). The fuzzer starts
# from the committed seeds (tests/assets/fuzz/TARGET, and for ckpt the fixtures
# in tests/assets/ckpt) plus what earlier runs found, kept in
# $EMBER_FUZZ_OUT/corpus/TARGET (default build-fuzz/): the committed seeds are
# only read. A crash, leak, timeout or failed FUZZ_CHECK stops the run with
# exit status 1 and leaves the input in $EMBER_FUZZ_OUT/artifacts/TARGET/;
# replay it with `build-fuzz/fuzz_TARGET FILE`. Commit a fixed crash's input
# under tests/assets/fuzz/crashes/TARGET/ (the replay tests run it from then on).
# EMBER_FUZZ_SECONDS, when set, overrides SECONDS (ctest's fuzz.TARGET runs 20).
# Exit status 77 when clang/libFuzzer is missing (as build.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
if [ $# -lt 2 ]; then
  echo "usage: tests/fuzz/run.sh TARGET SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
target=$1
seconds=${EMBER_FUZZ_SECONDS:-$2}
shift 2
read -r -a targets <"$root/tests/fuzz/targets"
case " ${targets[*]} " in *" $target "*) ;; *)
  echo "fuzz/run.sh: unknown target '$target' (one of: ${targets[*]})" >&2
  exit 2 ;;
esac
out=${EMBER_FUZZ_OUT:-$root/build-fuzz}

"$root/tests/fuzz/build.sh" "$out" >/dev/null

corpus=$out/corpus/$target
artifacts=$out/artifacts/$target
mkdir -p "$corpus" "$artifacts"
seeds=("$root/tests/assets/fuzz/$target")
if [ "$target" = ckpt ]; then
  seeds+=("$root/tests/assets/ckpt")
fi

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "fuzz/run.sh: fuzz_$target for ${seconds}s (corpus $corpus)" >&2
set +e
"$out/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$@" "$corpus" "${seeds[@]}"
rc=$?
set -e
if [ $rc -ne 0 ]; then
  echo "fuzz/run.sh: fuzz_$target FAILED (exit $rc); inputs: $(ls -t "$artifacts" | head -3 | tr '\n' ' ')" >&2
  echo "fuzz/run.sh: reproduce with $out/fuzz_$target $artifacts/<file>" >&2
  exit 1
fi
