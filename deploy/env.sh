# Sourced by ember's scripts: finds nvcc where the CUDA toolkit is installed but not
# on PATH, so EMBER_CUDA=AUTO builds the GPU code wherever a toolkit exists.
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
