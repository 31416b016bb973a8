"""failover_time.py — the failover time and what a failover keeps (README
"Replication and failover"): one worker writing 8-key rows through a shard given as
"leader|follower" (libember finds the leader), the leader killed with SIGKILL after
3 s, the follower promoted by `emberctl promote` at once; prints when the first push
after the kill was acknowledged, the longest gap between acknowledgements, and how
many acknowledged pushes the new leader lacks.

    python3 tests/bench/failover_time.py async|replicated [BUILD_DIR]

replicated: no push is acknowledged after the promotion (the new leader has no
follower yet), and none acknowledged before it is missing. async: the worker goes on
within tens of ms; what the follower had not copied is lost.
"""
import os
import subprocess
import sys
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
B = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "build"))
sys.path.insert(0, os.path.join(ROOT, "client", "python"))
os.environ.setdefault("EMBER_LIBRARY", os.path.join(B, "client", "libember.so"))
import ember  # noqa: E402
import ember.local  # noqa: E402
L = ember.local.LocalShards(1, threads=2, server=f"{B}/server/ember-server").start()
F = ember.local.LocalShards(1, threads=2, server=f"{B}/server/ember-server",
                            extra_args=["--replica-of", L.addresses[0]]).start()
both = f"{L.addresses[0]}|{F.addresses[0]}"
c = ember.Client([both], retry_budget_s=30, timeout_ms=2000, on_shard_notice=lambda *a: None)
MODE = sys.argv[1] if len(sys.argv) > 1 else "replicated"
c.create_table("fo", 16, 1 << 20, ack=MODE, initializer="zeros")
acked, times = [], []
stop = False


def load():
    i = 0
    while not stop:
        k = np.arange(8, dtype=np.uint64) + 8 * i + 1
        try:
            c.write("fo", k, np.full((8, 16), float(i), np.float32))
            acked.append(i); times.append(time.monotonic())
        except ember.Error:
            pass
        i += 1


t = threading.Thread(target=load); t.start()
time.sleep(3)
L.kill(0)
killed = time.monotonic()
subprocess.run([f"{B}/client/ctl/emberctl", "promote", F.addresses[0], "--advertise", "-"],
               check=True, stdout=subprocess.DEVNULL)
promoted = time.monotonic()
time.sleep(2)
stop = True; t.join()
gaps = np.diff(times)
after = [x for x in times if x > killed] or [float("nan")]
print(f"acknowledged pushes {len(acked)}; emberctl promote took {1000*(promoted-killed):.0f} ms after the kill; "
      f"first acknowledged push after the kill at +{1000*(after[0]-killed):.0f} ms; longest gap between acks {1000*gaps.max():.0f} ms (mode {MODE})")
with ember.Client([F.addresses[0]], retry_budget_s=0) as f:
    lost = 0
    for i in acked:
        k = np.arange(8, dtype=np.uint64) + 8 * i + 1
        got = f.pull("fo", k, 16, insert=False)
        lost += not np.array_equal(got, np.full((8, 16), float(i), np.float32))
print("acknowledged pushes missing on the new leader:", lost)
c.close(); F.stop(); L.stop()
