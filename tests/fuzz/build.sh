#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (the main build uses gcc, and libFuzzer
# is clang's): every target is its tests/fuzz/fuzz_<name>.c with the sources it
# exercises compiled straight from the tree, under ASan + UBSan.
#
#   tests/fuzz/build.sh [OUT]      OUT defaults to build-fuzz/ at the repository root
#
# Writes OUT/fuzz_<target> for each target in tests/fuzz/targets, and
# OUT/make_seeds (no sanitizers; it writes the seed corpora). Objects are rebuilt
# when a source or any header under the tree is newer than them.
# Exit status: 0 built, 77 when clang or its libFuzzer runtime is missing (apt:
# clang libclang-rt-dev, as deploy/install-deps.sh installs; 1 instead when
# EMBER_FUZZ_REQUIRED=1), else 1.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:-$root/build-fuzz}
case "$out" in /*) ;; *) out=$PWD/$out ;; esac
cc=${EMBER_FUZZ_CC:-clang}
mkdir -p "$out/obj" "$out/gen"
# One build at a time per OUT (ctest runs the fuzz.* tests side by side).
exec 9>"$out/.lock"
flock 9

# Missing tools skip (77), unless EMBER_FUZZ_REQUIRED=1 (CI) makes them a failure.
missing=77
[ "${EMBER_FUZZ_REQUIRED:-0}" = 1 ] && missing=1
if ! command -v "$cc" >/dev/null; then
  echo "fuzz/build.sh: no $cc (apt-get install clang libclang-rt-dev)" >&2
  exit $missing
fi
probe=$out/probe.$$
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
  >"$probe.c"
if ! "$cc" -fsanitize=fuzzer "$probe.c" -o "$probe" 2>"$probe.log"; then
  echo "fuzz/build.sh: $cc cannot link libFuzzer (apt-get install libclang-rt-dev):" >&2
  cat "$probe.log" >&2
  rm -f "$probe" "$probe.c" "$probe.log"
  exit $missing
fi
rm -f "$probe" "$probe.c" "$probe.log"

# The generated protobuf-c code, as proto/CMakeLists.txt makes it.
for p in ember/v1/ember.proto grpc/health/v1/health.proto; do
  c=$out/gen/${p%.proto}.pb-c.c
  if [ ! -e "$c" ] || [ "$root/proto/$p" -nt "$c" ]; then
    (cd "$root/proto" && protoc-c -I. --c_out="$out/gen" "$p")
  fi
done

san=(-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer)
cflags=(-std=c11 -g -O1 -fno-math-errno -D_GNU_SOURCE= -I"$root" -I"$root/include" -I"$out/gen"
        $(pkg-config --cflags libprotobuf-c jemalloc) -Wall -Wextra -Wshadow -Wstrict-prototypes)
[ "${EMBER_WERROR:-1}" = 0 ] || cflags+=(-Werror)   # as -DEMBER_WERROR=OFF does for CMake
libs=($(pkg-config --libs libprotobuf-c jemalloc) -lpthread -lm)

# What the targets link: the codec, the generated messages, the storage layer
# and the server files that hold no gRPC (the table-name check lives in
# registry.c, which needs coalesce.c's queue teardown; CreateTable's config
# mapping in table_config.c).
srcs=("$root/proto/wire.c" "$root/proto/pool.c" "$out/gen/ember/v1/ember.pb-c.c"
      "$out/gen/grpc/health/v1/health.pb-c.c"
      "$root"/storage/*.c "$root/server/registry.c" "$root/server/coalesce.c"
      "$root/server/table_config.c")

# The newest header decides for every object (a header change rebuilds all).
newest_h=$(find "$root/include" "$root/storage" "$root/proto" "$root/server" "$root/tests/fuzz" \
             "$out/gen" -name '*.h' -printf '%T@ %p\n' | sort -n | tail -1 | cut -d' ' -f2-)

objs=()
pids=()
for s in "${srcs[@]}"; do
  o=$out/obj/$(echo "${s#"$root"/}" | tr '/' '_').o
  objs+=("$o")
  if [ ! -e "$o" ] || [ "$s" -nt "$o" ] || [ "$newest_h" -nt "$o" ]; then
    extra=()
    case "$s" in *.pb-c.c) extra=(-Wno-unused-parameter) ;; esac
    "$cc" "${cflags[@]}" "${extra[@]}" "${san[@]}" -fsanitize=fuzzer-no-link -c "$s" -o "$o" &
    pids+=($!)
  fi
done
for p in "${pids[@]}"; do wait "$p"; done
pids=()

# Links whose output is older than its source, any object or any header.
stale() {
  local o=$1 d
  shift
  [ -e "$o" ] || return 0
  for d in "$@" "$newest_h"; do [ "$d" -nt "$o" ] && return 0; done
  return 1
}
read -r -a targets <"$root/tests/fuzz/targets"
for t in "${targets[@]}"; do
  stale "$out/fuzz_$t" "$root/tests/fuzz/fuzz_$t.c" "${objs[@]}" || continue
  "$cc" "${cflags[@]}" "${san[@]}" -fsanitize=fuzzer "$root/tests/fuzz/fuzz_$t.c" "${objs[@]}" \
    "${libs[@]}" -o "$out/fuzz_$t" &
  pids+=($!)
done
# make_seeds: plain (no sanitizers, no libFuzzer), from the same sources.
if stale "$out/make_seeds" "$root/tests/fuzz/make_seeds.c" "${srcs[@]}"; then
  "$cc" "${cflags[@]}" -O1 "$root/tests/fuzz/make_seeds.c" "${srcs[@]}" "${libs[@]}" \
    -Wno-unused-parameter -o "$out/make_seeds" &
  pids+=($!)
fi
for p in "${pids[@]}"; do wait "$p"; done
echo "fuzz/build.sh: built ${targets[*]/#/fuzz_} in $out"
