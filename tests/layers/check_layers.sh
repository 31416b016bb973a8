#!/usr/bin/env bash
# The layers of DESIGN section 2 hold (issue 13, "checks that keep it so"):
#   1. storage/ and cuda/ include nothing from server/, client/ or proto/, and
#      nothing of gRPC or protobuf: the table knows nothing of RPC;
#   2. libember's sources (client/*.c|h and client/include, not client/ctl,
#      examples or python) include nothing from storage/ or server/;
#   3. the built libember (shared and static) defines no symbol that the storage
#      or server libraries define: it links neither.
# Every violation is printed as file:line or library: symbol; exit 1 if any.
#
#   check_layers.sh SOURCE_ROOT [--lib LIBEMBER]... [--not-in LIB]...
set -uo pipefail
usage="usage: check_layers.sh SOURCE_ROOT [--lib LIBEMBER]... [--not-in LIBRARY]..."
root=${1:?$usage}
shift
libs=() others=()
while [ $# -gt 0 ]; do
    case "$1" in
        --lib) libs+=("$2"); shift 2 ;;
        --not-in) others+=("$2"); shift 2 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
done
bad=0

# $1: folders, $2: extended regex of forbidden include targets
forbid_includes() {
    local hits
    hits=$(cd "$root" && grep -rnE --include='*.[ch]' --include='*.cu' --include='*.cuh' \
        "^[[:space:]]*#[[:space:]]*include[[:space:]]*[\"<]($2)" $1 2>/dev/null)
    if [ -n "$hits" ]; then
        printf '%s\n' "$hits" | sed 's/^/layer violation: /'
        bad=1
    fi
}

# storage/ and cuda/: no RPC. "../" escapes are refused too.
forbid_includes "storage cuda" '(\.\./)*(server|client|proto)/|grpc/|grpcpp/|protobuf-c/|ember/v1/|ember/ember\.h|\.\./'
# libember: no storage, no server (its own folder's headers and the shared
# vocabulary in include/ember/ are fine).
lib_sources=$(cd "$root" && ls client/*.c client/*.h client/include/ember/*.h 2>/dev/null | tr '\n' ' ')
forbid_includes "$lib_sources" '(\.\./)*(storage|server|cuda)/'

# Global symbols a library defines, one per line, sorted.
defined() { nm -g --defined-only "$1" 2>/dev/null | awk 'NF >= 3 {print $3}' | sort -u; }

for f in "${libs[@]}" "${others[@]}"; do
    if [ ! -e "$f" ]; then
        echo "layer check: $f does not exist"
        bad=1
    fi
done
for lib in "${libs[@]}"; do
    for other in "${others[@]}"; do
        both=$(comm -12 <(defined "$lib") <(defined "$other"))
        if [ -n "$both" ]; then
            printf '%s\n' "$both" |
                sed "s|^|layer violation: $(basename "$lib") defines $(basename "$other")'s |"
            bad=1
        fi
    done
done

if [ "$bad" -eq 0 ]; then
    echo "layers hold: storage/ and cuda/ know no RPC; libember holds no storage or server code"
fi
exit "$bad"
