"""client/python/examples/tf_ps_worker.py: a TensorFlow PS-Worker click model whose
`ps` tasks are two local ember shards. Two worker processes find the shards from
the TF_CONFIG the demo writes (cluster.ps), train asynchronously through the C
ops, and the held-out log loss ends well below the base rate's. Skipped (exit
77) where TensorFlow or the op library is missing."""

import os
import re
import subprocess
import sys
import unittest

from ember_test_util import main, need_tensorflow

need_tensorflow()

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python",
                    "examples", "tf_ps_worker.py")


class TfPsWorkerDemo(unittest.TestCase):
    def test_two_workers_from_tf_config_beat_the_base_rate(self):
        r = subprocess.run([sys.executable, DEMO, "--workers", "2", "--steps", "300",
                            "--expect-below", "0.05"],
                           capture_output=True, text=True, timeout=500)
        print(r.stdout, r.stderr, sep="\n", flush=True)
        self.assertEqual(r.returncode, 0, "the demo failed (output above)")
        m = re.search(r"held-out log loss ([0-9.]+); base rate ([0-9.]+)", r.stdout)
        self.assertLess(float(m.group(1)), float(m.group(2)) - 0.05)
        for i in (0, 1):  # both workers trained
            self.assertRegex(r.stdout, rf"worker {i}: 299 steps of 256 in")


if __name__ == "__main__":
    main()
