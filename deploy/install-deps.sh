#!/usr/bin/env bash
# Installs the Debian packages ember's build needs, if any is missing; with
# --tests, also those only the tests and benchmarks need. Used by
# deploy/quickstart.sh and deploy/Dockerfile (build only) and tests/run.sh
# (--tests); safe to run again.
set -euo pipefail

packages=(build-essential cmake pkg-config libjemalloc-dev check
          libgrpc-dev protobuf-c-compiler libprotobuf-c-dev libmicrohttpd-dev)

if [ "${1:-}" = "--tests" ]; then
  # interop.py (Python gRPC), rpc_bench's loopback ceiling (iperf3), the
  # manifest checks (PyYAML), tests/fuzz (clang, libFuzzer, llvm-symbolizer),
  # tests/python and client/python/examples: numpy, and PyTorch for ember.torch
  # (python3-torch is large: about 150 MB to download, 640 MB installed, a minute);
  # python3-venv for tests/run.sh's TensorFlow environment (PyPI's tensorflow-cpu).
  packages+=(python3-grpcio python3-protobuf protobuf-compiler iperf3 python3-yaml
             clang libclang-rt-dev llvm python3-numpy python3-torch python3-venv)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "ember: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
