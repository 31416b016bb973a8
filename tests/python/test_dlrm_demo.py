"""client/python/examples/dlrm_demo.py, briefly: a DLRM-style click model (four
field tables, a tag bag, an MLP) trains through two local shards for a few
hundred steps, and its held-out log loss ends well below the base rate's.
Skipped (exit 77) where PyTorch is not installed."""

import os
import re
import subprocess
import sys
import unittest

from ember_test_util import main, need_torch

need_torch()

DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "client", "python",
                    "examples", "dlrm_demo.py")


class DlrmDemo(unittest.TestCase):
    def test_loss_falls_below_the_base_rate(self):
        r = subprocess.run([sys.executable, DEMO, "--steps", "300", "--log-every", "100",
                            "--eval-examples", "10000", "--expect-below", "0.03"],
                           capture_output=True, text=True, timeout=240)
        print(r.stdout, r.stderr, sep="\n", flush=True)
        self.assertEqual(r.returncode, 0, "the demo failed (output above)")
        model = float(re.search(r"^\s*model\s+([0-9.]+)", r.stdout, re.M).group(1))
        base = float(re.search(r"^\s*base rate\s+([0-9.]+)", r.stdout, re.M).group(1))
        self.assertLess(model, base - 0.03)
        self.assertIn("from options.shards", r.stdout)  # the demo's own two shards


if __name__ == "__main__":
    main()
