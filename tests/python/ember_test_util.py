"""Shared by tests/python/test_*.py: imports, shard servers, exit codes.

ctest runs each test_*.py with EMBER_LIBRARY (the built libember.so),
EMBER_SERVER_BIN (the built ember-server) and PYTHONPATH (client/python and
this directory) set; see CMakeLists.txt. Exit codes: 0 passed, 1 failed, 77
skipped (a missing optional dependency: ctest's SKIP_RETURN_CODE).
"""

import os
import sys
import unittest

SKIP = 77

# The environment must not choose shards for a test behind its back.
for _v in ("EMBER_SHARDS", "EMBER_SHARD_PATTERN", "EMBER_SHARD_COUNT", "TF_CONFIG"):
    os.environ.pop(_v, None)

try:
    import numpy  # noqa: F401
except ImportError:
    print("FAILED: numpy is not installed (deploy/install-deps.sh installs python3-numpy)")
    sys.exit(1)

import ember  # noqa: E402
import ember.local  # noqa: E402


def need_torch():
    """Exits 77 (ctest: skipped) when PyTorch cannot be imported."""
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED: PyTorch is not installed ({e}); Debian: apt-get install python3-torch")
        sys.exit(SKIP)


class ShardsTest(unittest.TestCase):
    """Starts NSHARDS ember-server processes on loopback for the class, and a
    client over them (self.client, addresses in self.addresses)."""

    NSHARDS = 2

    @classmethod
    def setUpClass(cls):
        cls.shards = ember.local.LocalShards(cls.NSHARDS).start()
        cls.addresses = list(cls.shards.addresses)
        cls.client = ember.Client(cls.addresses)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.shards.stop()


def main():
    """unittest.main, verbose, exiting 0 or 1."""
    print(f"libember: {ember.library_path()}; server: {ember.local.find_server()}", flush=True)
    unittest.main(module="__main__", verbosity=2)


def need_tensorflow():
    """Exits 77 (ctest: skipped) when TensorFlow or ember's op library
    (libember_tf_ops.so, $EMBER_TF_OPS) is missing: tests/run.sh installs a
    pinned tensorflow-cpu into a virtual environment and builds the ops, and
    says why when it could not."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as e:
        print(f"SKIPPED: TensorFlow is not installed ({e}); tests/run.sh installs it "
              "(EMBER_TF_PYTHON)")
        sys.exit(SKIP)
    ops = os.environ.get("EMBER_TF_OPS")
    if not ops or not os.path.isfile(ops):
        print(f"SKIPPED: ember's TensorFlow ops were not built ({ops!r})")
        sys.exit(SKIP)
