"""ember's Python API with numpy against two real shards: pull/push round trips
equal to SGD computed in numpy, arrays in and out without copies, async pulls,
push-pull, the write modes, wire dtypes, table admin, and pip installability."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

from ember_test_util import ShardsTest, main

import ember

DIM = 8
LR = 0.25


def sgd_expected(w0_unique, inverse, grads, lr):
    """w - lr * (sum of each key's gradients, in caller order, in float32)."""
    gsum = np.zeros_like(w0_unique)
    np.add.at(gsum, inverse, grads)
    return (w0_unique - np.float32(lr) * gsum).astype(np.float32)


class NumpyApi(ShardsTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.create_table("sgd", DIM, 4096, optimizer="sgd", lr=LR,
                                initializer=("uniform", -0.1, 0.1), seed=7)

    def test_shards(self):
        c = self.client
        self.assertEqual(c.shard_count, 2)
        self.assertEqual(c.shard_addresses, self.addresses)
        self.assertEqual(c.shard_source, "options.shards")
        self.assertNotEqual(c.client_id, 0)
        self.assertEqual(ember.shard_of(12345, 1), 0)
        self.assertIn(c.shard_of(12345), (0, 1))

    def test_pull_push_equals_numpy_sgd(self):
        c = self.client
        rng = np.random.default_rng(1)
        # Duplicates, and keys above 2^63 (uint64 all the way).
        base = rng.integers(0, 2**64 - 8, 300, dtype=np.uint64)
        keys = base[rng.integers(0, 300, 1000)]
        w0 = c.pull("sgd", keys)
        self.assertEqual(w0.shape, (1000, DIM))
        self.assertEqual(w0.dtype, np.float32)
        self.assertTrue(np.all(np.abs(w0) <= 0.1) and np.any(w0 != 0))
        uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        # Duplicates read the same row.
        np.testing.assert_array_equal(w0, w0[first][inverse])

        grads = rng.normal(0, 1, (1000, DIM)).astype(np.float32)
        c.push("sgd", keys, grads)
        want = sgd_expected(w0[first], inverse, grads, LR)
        got = c.pull("sgd", uniq)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)

        # A second step from there, keys as int64 (the same bits) and 2-D.
        k2 = uniq[:64].view(np.int64).reshape(8, 8)
        g2 = rng.normal(0, 1, (8, 8, DIM)).astype(np.float32)
        c.push("sgd", k2, g2)
        got2 = c.pull("sgd", k2)
        self.assertEqual(got2.shape, (8, 8, DIM))
        np.testing.assert_allclose(got2, want[:64].reshape(8, 8, DIM) - LR * g2,
                                   rtol=1e-6, atol=1e-6)

    def test_out_is_filled_in_place(self):
        c = self.client
        keys = np.arange(100, 140, dtype=np.uint64)
        out = np.full((40, DIM), np.nan, dtype=np.float32)
        r = c.pull("sgd", keys, out=out)
        self.assertIs(r, out)
        self.assertFalse(np.isnan(out).any())
        np.testing.assert_array_equal(c.pull("sgd", keys, DIM), out)
        with self.assertRaises(ember.InvalidArgumentError):
            c.pull("sgd", keys, out=np.empty((40, DIM), dtype=np.float64))
        with self.assertRaises(ember.InvalidArgumentError):
            c.pull("sgd", keys, out=np.empty((20, DIM), dtype=np.float32))
        with self.assertRaises(ember.InvalidArgumentError):
            c.pull("sgd", keys, out=np.empty((DIM, 40), dtype=np.float32).T)

    def test_key_conversion_copies_only_when_needed(self):
        k = np.arange(10, dtype=np.uint64)
        self.assertIs(ember.as_keys(k), k)
        k64 = np.arange(10, dtype=np.int64)
        self.assertTrue(np.shares_memory(ember.as_keys(k64), k64))
        self.assertEqual(ember.as_keys(np.array([-1], dtype=np.int32))[0], 2**64 - 1)
        self.assertEqual(ember.as_keys([1, 2]).dtype, np.uint64)
        with self.assertRaises(ember.InvalidArgumentError):
            ember.as_keys(np.array([1.5]))

    def test_serving_pull_creates_nothing(self):
        c = self.client
        c.create_table("serve", 4, 1024, initializer=("constant", 0.5))
        try:
            keys = np.arange(1000, 1010, dtype=np.uint64)
            rows = c.pull("serve", keys, insert=False)
            np.testing.assert_array_equal(rows, np.full((10, 4), 0.5, np.float32))
            self.assertEqual(c.describe_table("serve").size, 0)
            c.pull("serve", keys)  # training pull: created
            self.assertEqual(c.describe_table("serve").size, 10)
        finally:
            c.drop_table("serve")

    def test_async_pull_and_push(self):
        c = self.client
        keys = np.arange(5000, 5100, dtype=np.uint64)
        want = c.pull("sgd", keys)
        p = c.pull_async("sgd", keys)
        got = p.wait()
        self.assertTrue(p.done)
        np.testing.assert_array_equal(got, want)
        self.assertIs(p.wait(), got)  # waiting twice: the same result
        g = np.ones((100, DIM), np.float32)
        q = c.push_async("sgd", keys, g)
        self.assertIsNone(q.wait())
        np.testing.assert_allclose(c.pull("sgd", keys), want - LR, rtol=1e-6, atol=1e-6)
        # Several in flight at once, collected in any order.
        ps = [c.pull_async("sgd", keys[i::4]) for i in range(4)]
        for i, p in reversed(list(enumerate(ps))):
            np.testing.assert_array_equal(p.wait(), want[i::4] - np.float32(LR))

    def test_push_pull_sees_the_push(self):
        c = self.client
        keys = np.arange(7000, 7016, dtype=np.uint64)
        w0 = c.pull("sgd", keys)
        g = np.full((16, DIM), 2.0, np.float32)
        got = c.push_pull("sgd", keys, g, keys)
        np.testing.assert_allclose(got, w0 - 2 * np.float32(LR), rtol=1e-6, atol=1e-6)

    def test_write_modes(self):
        c = self.client
        keys = np.array([9001, 9002, 9001], dtype=np.uint64)
        vals = np.arange(3 * DIM, dtype=np.float32).reshape(3, DIM)
        c.write("sgd", keys, vals)  # insert_or_assign: the last of equal keys wins
        got = c.pull("sgd", keys[:2])
        np.testing.assert_array_equal(got, vals[[2, 1]])
        c.write("sgd", keys[:2], np.ones((2, DIM), np.float32), mode="accum")
        np.testing.assert_array_equal(c.pull("sgd", keys[:2]), vals[[2, 1]] + 1)
        with self.assertRaises(ember.InvalidArgumentError):
            c.write("sgd", keys, vals, mode="gradients")

    def test_float16_on_the_wire(self):
        keys = np.arange(11000, 11050, dtype=np.uint64)
        want = self.client.pull("sgd", keys)
        with ember.Client(self.addresses, wire_dtype="float16") as c16:
            got = c16.pull("sgd", keys)
            self.assertEqual(got.dtype, np.float32)
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
            # Gradients may come in any float dtype; they are converted once.
            c16.push("sgd", keys, np.ones((50, DIM), np.float16))
        np.testing.assert_allclose(self.client.pull("sgd", keys), want - LR, rtol=1e-3, atol=1e-3)

    def test_table_admin(self):
        c = self.client
        c.create_table("adm", 3, 100, optimizer="adagrad", lr=0.1, scores="lfu")
        c.create_table("adm", 3, 100, if_not_exists=True)
        info = c.describe_table("adm")
        self.assertEqual((info.name, info.dim, info.size), ("adm", 3, 0))
        self.assertGreaterEqual(info.capacity, 200)
        c.pull("adm", np.arange(30, dtype=np.uint64))
        names = [t.name for t in c.list_tables()]
        self.assertEqual(names, sorted(names))
        self.assertIn("adm", names)
        self.assertIn("sgd", names)
        listed = {t.name: t for t in c.list_tables()}["adm"]
        self.assertEqual((listed.dim, listed.size), (3, 30))
        self.assertAlmostEqual(listed.load_factor, listed.size / listed.capacity)
        # Dim looked up (describe) when not given.
        c2 = ember.Client(self.addresses)
        self.assertEqual(c2.pull("adm", [1, 2]).shape, (2, 3))
        c2.close()
        c.drop_table("adm")
        self.assertNotIn("adm", [t.name for t in c.list_tables()])
        c.drop_table("adm", if_exists=True)

    def test_growth_and_ttl(self):
        c = self.client
        c.create_table("grows", 2, 128, initializer="zeros", max_capacity_per_shard=4096,
                       ttl_seconds=3600)
        keys = np.arange(3000, dtype=np.uint64)
        vals = np.repeat(keys.astype(np.float32)[:, None], 2, axis=1)
        c.write("grows", keys, vals)
        info = c.describe_table("grows")
        self.assertEqual((info.size, info.evictions), (3000, 0))
        self.assertGreaterEqual(info.capacity, 4000)  # grew from 2 x 128
        np.testing.assert_array_equal(c.pull("grows", keys, insert=False), vals)
        c.set_ttl("grows", 0)
        with self.assertRaises(ember.InvalidArgumentError):
            c.set_ttl("grows", -1)
        with self.assertRaises(ember.InvalidArgumentError):
            c.create_table("neg", 2, 128, ttl_seconds=-5)
        with self.assertRaises(ember.NotFoundError):
            c.set_ttl("nosuch", 60)
        with self.assertRaises(ember.NotFoundError):
            c.describe_table("neg")
        c.drop_table("grows")

    def test_many_tables_listed(self):
        c = self.client
        names = [f"many{i:02d}" for i in range(20)]  # more than list_tables' first guess
        for n in names:
            c.create_table(n, 1, 16)
        try:
            listed = [t.name for t in c.list_tables()]
            for n in names:
                self.assertIn(n, listed)
        finally:
            for n in names:
                c.drop_table(n)

    def test_save_and_load(self):
        c = self.client
        c.create_table("ck", 2, 64, initializer="zeros")
        keys = np.arange(20, dtype=np.uint64)
        vals = np.arange(40, dtype=np.float32).reshape(20, 2)
        c.write("ck", keys, vals)
        c.save("ck")
        c.drop_table("ck")
        c.load("ck")
        np.testing.assert_array_equal(c.pull("ck", keys, insert=False), vals)
        c.drop_table("ck")

    def test_closed_client(self):
        c = ember.Client(self.addresses)
        p = c.pull_async("sgd", [1, 2, 3])
        c.close()  # waits for the pull first
        self.assertTrue(p.done)
        c.close()
        with self.assertRaises(ember.FailedPreconditionError):
            c.pull("sgd", [1], DIM)

    @unittest.skipUnless(shutil.which("pip3") or subprocess.run(
        [sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0,
        "pip is not installed")
    def test_pip_installs_the_package(self):
        src = os.path.join(os.path.dirname(ember.__file__), "..")
        with tempfile.TemporaryDirectory() as tmp:
            # A copy, so that pip's in-tree build leaves nothing in the checkout.
            shutil.copytree(src, os.path.join(tmp, "src"),
                            ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
            r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                                "--no-build-isolation", "--no-index", "--target",
                                os.path.join(tmp, "site"), os.path.join(tmp, "src")],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            env = dict(os.environ, PYTHONPATH=os.path.join(tmp, "site"))
            r = subprocess.run([sys.executable, "-c", "import ember, sys; "
                                "print(ember.__file__); ember.Client(sys.argv[1]).close()",
                                self.addresses[0]],
                               capture_output=True, text=True, env=env, cwd=tmp)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(os.path.join(tmp, "site"), r.stdout)


if __name__ == "__main__":
    main()
