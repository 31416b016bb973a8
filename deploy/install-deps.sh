#!/usr/bin/env bash
# Installs the Debian packages ember's build needs, if any is missing.
# Used by tests/run.sh and deploy/quickstart.sh; safe to run again.
set -euo pipefail

packages=(build-essential cmake pkg-config libjemalloc-dev check
          libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
          python3-grpcio python3-protobuf protobuf-compiler
          iperf3 python3-yaml clang libclang-rt-dev llvm)  # clang..llvm: tests/fuzz

# tests/python and client/python/examples: numpy, and PyTorch for ember.torch
# (python3-torch is large: about 150 MB to download, 640 MB installed, a minute).
packages+=(python3-numpy python3-torch)

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
