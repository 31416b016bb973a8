#!/usr/bin/env bash
# The one test command: installs what the build needs, configures, builds with
# every core, runs every test (ctest, output shown on failure), and exits non-zero
# on any failure. GPU tests report "Skipped" where no GPU is visible.
#
#   tests/run.sh                       everything, in ./build
#   EMBER_BUILD_DIR=build-asan EMBER_CMAKE_ARGS="-DEMBER_SANITIZE=address,undefined" \
#     EMBER_CTEST_ARGS="-L unit" tests/run.sh
#
# TensorFlow (ember.tensorflow and its C ops, tests python.tensorflow and
# python.tf_ps_worker): Debian has none, so a virtual environment with a pinned
# tensorflow-cpu from PyPI is made in $EMBER_TF_VENV (default <build>/tf-venv)
# when missing (about 45 s and 1.4 GB) and the ops are built against it. Where it
# cannot be installed (no network) those tests report skipped. EMBER_TF=0 leaves
# TensorFlow out (the sanitizer passes of .ci/run).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${EMBER_BUILD_DIR:-$root/build}
case "$build" in /*) ;; *) build=$root/$build ;; esac
jobs=$(nproc)

"$root/deploy/install-deps.sh" --tests
# shellcheck source=../deploy/env.sh
. "$root/deploy/env.sh"

tf_args=(-DEMBER_TF_PYTHON=)   # none (an earlier configure's is forgotten)
if [ "${EMBER_TF:-1}" != 0 ]; then
  tf_version=2.18.1
  venv=${EMBER_TF_VENV:-$build/tf-venv}
  if ! "$venv/bin/python" -c "import sys, tensorflow as tf; sys.exit(tf.__version__ != '$tf_version')" \
       2>/dev/null; then
    echo "tests/run.sh: installing tensorflow-cpu==$tf_version into $venv"
    [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"   # a broken one of ours
    py=python3
    [ -x /usr/bin/python3 ] && py=/usr/bin/python3   # Debian's, as tests/python's
    if ! { "$py" -m venv "$venv" &&
           "$venv/bin/pip" install --no-cache-dir --quiet --timeout 60 --retries 2 \
             "tensorflow-cpu==$tf_version"; }; then
      echo "tests/run.sh: could not install TensorFlow: its tests will be skipped" >&2
      [ -f "$venv/pyvenv.cfg" ] && rm -rf "$venv"
    fi
  fi
  if [ -x "$venv/bin/python" ]; then
    tf_args=(-DEMBER_TF_PYTHON="$venv/bin/python")
  fi
fi

# shellcheck disable=SC2086
cmake -S "$root" -B "$build" ${EMBER_CMAKE_ARGS:-} "${tf_args[@]}"
cmake --build "$build" -j "$jobs"
# shellcheck disable=SC2086
ctest --test-dir "$build" --output-on-failure -j "$jobs" ${EMBER_CTEST_ARGS:-}
