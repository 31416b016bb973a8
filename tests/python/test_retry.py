"""The retry budget from Python (ember.Client(retry_budget_s=...), README
"Failures") against real shards on loopback: an ember.torch model keeps
training (forward with a prefetch, backward's push) across a kill -9 of one of
two shards and its restart on the same checkpoint directory, and hears once
that the shard went and once that it came back; a shard that never returns
fails with UnavailableError naming it, not before the budget has passed;
closing or cancelling a client while a call waits raises CancelledError
promptly; bad budgets are refused. Budgets are short: seconds. The torch test
is skipped where PyTorch is not installed."""

import socket
import threading
import time
import unittest

import numpy as np

from ember_test_util import main

import ember  # noqa: E402
import ember.local  # noqa: E402

try:
    import torch
    import ember.torch as et
except ImportError:
    torch = None


def dead_address():
    """127.0.0.1:<a port nobody listens on>."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


class Notices:
    def __init__(self):
        self.mu = threading.Lock()
        self.events = []

    def __call__(self, shard, address, available, message):
        with self.mu:
            self.events.append((shard, address, available, message))


class RetryBudget(unittest.TestCase):
    def test_bad_budgets_refused(self):
        for bad in (-1, -0.5, "x", float("nan"), 1e12):
            with self.assertRaises(ember.InvalidArgumentError):
                ember.Client(dead_address(), retry_budget_s=bad)
        with self.assertRaises(ember.InvalidArgumentError):
            ember.Client(dead_address(), on_shard_notice=3)

    def test_never_returns_fails_after_budget(self):
        addr = dead_address()
        notices = Notices()
        with ember.Client(addr, retry_budget_s=0.8, on_shard_notice=notices) as c:
            t0 = time.monotonic()
            with self.assertRaises(ember.UnavailableError) as cm:
                c.pull("t", np.array([1], dtype=np.uint64), 4)
            took = time.monotonic() - t0
            self.assertGreaterEqual(took, 0.8)
            self.assertEqual(cm.exception.shard, 0)
            self.assertIn(addr, str(cm.exception))
            self.assertIn("retry budget 0.8 s", str(cm.exception))
            # an async pull's wait follows the same budget
            p = c.pull_async("t", np.array([1], dtype=np.uint64), 4)
            with self.assertRaises(ember.UnavailableError):
                p.wait()
        self.assertEqual([(s, a, up) for s, a, up, _ in notices.events], [(0, addr, False)])

    def test_close_while_waiting_cancels(self):
        c = ember.Client(dead_address(), retry_budget_s=60, on_shard_notice=Notices())
        out = {}

        def pull():
            try:
                c.pull("t", np.array([1], dtype=np.uint64), 4)
            except ember.Error as e:
                out["e"] = e

        t = threading.Thread(target=pull)
        t.start()
        time.sleep(0.5)
        t0 = time.monotonic()
        c.close()
        took = time.monotonic() - t0
        t.join(30)
        self.assertFalse(t.is_alive())
        self.assertIsInstance(out.get("e"), ember.CancelledError)
        self.assertLess(took, 20)  # of a 60 s budget

        # a pending async pull: cancel() makes its wait (and close) prompt
        c = ember.Client(dead_address(), retry_budget_s=60, on_shard_notice=Notices())
        p = c.pull_async("t", np.array([1], dtype=np.uint64), 4)
        threading.Timer(0.3, c.cancel).start()
        with self.assertRaises(ember.CancelledError):
            p.wait()
        c.close()

    @unittest.skipIf(torch is None, "PyTorch is not installed")
    def test_torch_rides_through_a_restart(self):
        with ember.local.LocalShards(2) as shards:
            notices = Notices()
            with ember.Client(shards.addresses, retry_budget_s=30, timeout_ms=2000,
                              on_shard_notice=notices) as c:
                emb = et.Embedding(c, "restart", 4, create=dict(
                    capacity_per_shard=4096, optimizer="sgd", lr=0.1,
                    initializer=("uniform", -0.5, 0.5), seed=3))
                ids = torch.arange(64, dtype=torch.int64)
                keys = ids.numpy().astype(np.uint64)
                on1 = [k for k in keys if ember.shard_of(int(k), 2) == 1]
                self.assertTrue(on1)

                def step():
                    emb.prefetch(ids)
                    rows = emb(ids)
                    rows.pow(2).sum().backward()

                step()
                c.save("restart")
                saved = c.pull("restart", keys, 4, insert=False)
                shards.kill(1)
                threading.Timer(1.0, shards.restart, args=(1,)).start()
                step()  # waits for shard 1, then trains on
                self.assertIn("event=restored table=restart", shards.log(1))
                # one step of SGD on sum(w^2) after the checkpoint: w - 0.1 * 2w
                after = c.pull("restart", keys, 4, insert=False)
                np.testing.assert_allclose(after, saved * 0.8, rtol=1e-5, atol=1e-6)
                step()
            ev = [(s, up) for s, _, up, _ in notices.events]
            self.assertEqual(ev, [(1, False), (1, True)])
            self.assertIn("is back after", notices.events[1][3])


if __name__ == "__main__":
    main()
