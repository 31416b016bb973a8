"""Replication from Python (issue 19): a table created with ack="replicated",
pushes and writes with ack/ack_replicas, against a leader and a follower
(ember-server --replica-of) started by ember.local.LocalShards. A replicated
push is refused (UnavailableError, nothing applied) while no follower is
attached, and once one is, each acknowledged write is on the follower when the
call returns; the follower serves reads and refuses writes."""

import time
import unittest

import numpy as np

import ember_test_util as u
from ember_test_util import ember

DIM = 4


class Replication(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.leader = ember.local.LocalShards(1, threads=2).start()
        cls.follower = None

    @classmethod
    def tearDownClass(cls):
        if cls.follower:
            cls.follower.stop()
        cls.leader.stop()

    def test_replicated_writes(self):
        with ember.Client(self.leader.addresses, retry_budget_s=0) as c:
            with self.assertRaises(ember.InvalidArgumentError):
                c.create_table("py_bad", DIM, 64, ack="sync")
            c.create_table("py_r", DIM, 1024, ack="replicated", initializer="zeros")
            k = np.arange(10, 20, dtype=np.uint64)
            v = np.arange(40, dtype=np.float32).reshape(10, DIM)
            with self.assertRaises(ember.UnavailableError):
                c.write("py_r", k, v)
            with self.assertRaises(ember.InvalidArgumentError):
                c.write("py_r", k, v, ack="sometimes")
            _, found = c.pull("py_r", k, DIM, insert=False, return_found=True)
            self.assertFalse(found.any())  # refused before anything was applied
            c.write("py_r", k, v, ack="async")  # per call: no follower needed

            type(self).follower = ember.local.LocalShards(
                1, threads=2, extra_args=["--replica-of", self.leader.addresses[0]]).start()
            deadline = time.monotonic() + 30
            while True:  # until the follower is attached: refused, unapplied
                try:
                    c.write("py_r", k, v + 1)
                    break
                except ember.UnavailableError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            with ember.Client(self.follower.addresses, retry_budget_s=0) as f:
                for i in range(20):
                    kk = np.arange(1000 + 10 * i, 1010 + 10 * i, dtype=np.uint64)
                    vv = np.full((10, DIM), float(i), np.float32)
                    c.write("py_r", kk, vv)
                    got, found = f.pull("py_r", kk, DIM, insert=False, return_found=True)
                    self.assertTrue(found.all())
                    np.testing.assert_array_equal(got, vv)
                    c.push("py_r", kk, np.ones((10, DIM), np.float32), ack="replicated",
                           ack_replicas=1)
                    got = f.pull("py_r", kk, DIM, insert=False)
                    np.testing.assert_allclose(got, vv - 0.01, rtol=0, atol=1e-6)  # sgd lr 0.01
                with self.assertRaises(ember.FailedPreconditionError):
                    f.write("py_r", k, v)
                with self.assertRaises(ember.FailedPreconditionError):
                    f.pull("py_r", k, DIM)  # insert=True is a write
                # one shard given as "follower|leader": writes find the leader,
                # from_follower reads go to the follower (which holds each
                # acknowledged write of this replicated table)
                both = f"{self.follower.addresses[0]}|{self.leader.addresses[0]}"
                with ember.Client([both], retry_budget_s=0) as r:
                    kk = np.arange(3000, 3010, dtype=np.uint64)
                    vv = np.full((10, DIM), 7.0, np.float32)
                    r.write("py_r", kk, vv)
                    got = r.pull("py_r", kk, DIM, insert=False, from_follower=True)
                    np.testing.assert_array_equal(got, vv)
                    with self.assertRaises(ember.InvalidArgumentError):
                        r.pull("py_r", kk, DIM, from_follower=True)  # training pull
                # more followers than there are: refused, unapplied
                kk = np.arange(5000, 5010, dtype=np.uint64)
                with self.assertRaises(ember.UnavailableError):
                    c.write("py_r", kk, np.ones((10, DIM), np.float32), ack_replicas=2)
                _, found = c.pull("py_r", kk, DIM, insert=False, return_found=True)
                self.assertFalse(found.any())


if __name__ == "__main__":
    u.main()
