"""Pooled lookups from Python against real shards (README "Pooled lookups"):
Client.pull_pooled equals pooling Client.pull's rows in numpy in key order
(float32: bit for bit on one shard; on two shards bit for bit where the sums are
exact, rows of sixteenths), push_pooled leaves the table as pushing the worker's
own expansion does, bad bags raise InvalidArgumentError and change nothing, and
ember.torch.EmbeddingBag(pooled=True) gives torch's EmbeddingBag forward and
moves the rows as the unpooled module does (sqrtn too, checked by hand).
The torch part is skipped where PyTorch is not installed."""

import unittest

import numpy as np

import ember
from ember_test_util import ShardsTest, main

DIM = 8
COMBS = ("sum", "mean", "sqrtn")


def worker_pool(rows, offs, w, comb):
    """Pooling on the worker, in key order, in float32 (proto/pool.h's formula)."""
    out = np.zeros((len(offs) - 1, rows.shape[1]), dtype=np.float32)
    for b in range(len(offs) - 1):
        lo, hi = int(offs[b]), int(offs[b + 1])
        acc = np.zeros(rows.shape[1], dtype=np.float32)
        norm = np.float32(0)
        for i in range(lo, hi):
            wi = np.float32(1) if w is None else np.float32(w[i])
            acc = acc + wi * rows[i]
            norm = norm + (wi * wi if comb == "sqrtn" else wi)
        if comb == "sqrtn":
            norm = np.sqrt(norm)
        if comb == "sum":
            out[b] = acc
        elif norm != 0:
            out[b] = acc / norm
    return out


def worker_expand(g, offs, w, comb, n):
    """Each key's gradient g_b · c_i on the worker (c_i = w or w / divisor)."""
    ex = np.zeros((n, g.shape[1]), dtype=np.float32)
    for b in range(len(offs) - 1):
        lo, hi = int(offs[b]), int(offs[b + 1])
        ws = [np.float32(1) if w is None else np.float32(w[i]) for i in range(lo, hi)]
        norm = np.float32(0)
        for x in ws:
            norm = norm + (x * x if comb == "sqrtn" else x)
        if comb == "sqrtn":
            norm = np.sqrt(norm)
        for j, i in enumerate(range(lo, hi)):
            c = ws[j] if comb == "sum" else (np.float32(0) if norm == 0 else ws[j] / norm)
            ex[i] = g[b] * c
    return ex


def random_bags(rng, bags, most, pool):
    sizes = rng.integers(0, most + 1, size=bags)
    offs = np.concatenate([[0], np.cumsum(sizes)]).astype(np.uint64)
    keys = rng.integers(1, pool, size=int(offs[-1])).astype(np.uint64)
    w = (rng.integers(-8, 17, size=keys.size) / 8.0).astype(np.float32)
    return keys, offs, w


def push_equals_expanded(c, ta, tb, optimizer, lr, seed, bags):
    """Pooled pushes into ta, the worker's expansion pushed into tb: equal rows."""
    for t in (ta, tb):
        c.create_table(t, DIM, 4096, optimizer=optimizer, lr=lr,
                       initializer=("uniform", -1, 1), seed=seed)
    rng = np.random.default_rng(seed)
    for comb in COMBS:
        keys, offs, w = random_bags(rng, bags, 9, 2 * bags + 30)
        g = rng.standard_normal((bags, DIM)).astype(np.float32)
        c.push_pooled(ta, keys, offs, g, comb, weights=w)
        c.push(tb, keys, worker_expand(g, offs, w, comb, keys.size))
        np.testing.assert_array_equal(c.pull(ta, keys, DIM, insert=False),
                                      c.pull(tb, keys, DIM, insert=False), err_msg=comb)


class PooledOneShard(ShardsTest):
    NSHARDS = 1

    def test_pull_equals_worker_pooling(self):
        c = self.client
        c.create_table("p", DIM, 4096, initializer=("uniform", -1, 1), seed=5)
        rng = np.random.default_rng(1)
        keys, offs, w = random_bags(rng, 100, 12, 300)
        rows = c.pull("p", keys, DIM)
        for comb in COMBS:
            for weights in (None, w):
                got = c.pull_pooled("p", keys, offs, comb, weights=weights)
                self.assertEqual(got.shape, (100, DIM))
                want = worker_pool(rows, offs, weights, comb)
                np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32),
                                              err_msg=f"{comb} weighted={weights is not None}")

    def test_push_equals_expanded_push(self):
        push_equals_expanded(self.client, "a", "b", "adagrad", 0.1, seed=2, bags=80)

    def test_bad_bags_refused_and_change_nothing(self):
        c = self.client
        c.create_table("bad", DIM, 4096)
        keys = np.array([1, 2, 3], dtype=np.uint64)
        for offs, w, comb in (([1, 2, 3], None, "sum"), ([0, 3, 2], None, "sum"),
                              ([0, 2], None, "sum"), ([0, 1, 3], [1, 2], "mean"),
                              ([0, 1, 3], [1, np.nan, 1], "mean"), ([0, 3], None, "max"),
                              ([[0, 3]], None, "sum"), ([-1, 3], None, "sum")):
            with self.assertRaises(ember.InvalidArgumentError, msg=f"{offs} {w} {comb}"):
                c.pull_pooled("bad", keys, offs, comb, weights=w, dim=DIM)
            with self.assertRaises(ember.InvalidArgumentError, msg=f"{offs} {w} {comb}"):
                c.push_pooled("bad", keys, offs, np.zeros((max(len(offs) - 1, 1), DIM)), comb,
                              weights=w)
        self.assertEqual(c.describe_table("bad").size, 0)


class PooledTwoShards(ShardsTest):
    NSHARDS = 2

    def test_pull_exact_sums_equal_worker_pooling(self):
        c = self.client
        c.create_table("p2", DIM, 4096)
        rng = np.random.default_rng(3)
        keys, offs, w = random_bags(rng, 120, 10, 400)
        uniq = np.unique(keys)
        c.write("p2", uniq, (rng.integers(-16, 17, size=(uniq.size, DIM)) / 16.0))
        rows = c.pull("p2", keys, DIM)
        for comb in COMBS:
            got = c.pull_pooled("p2", keys, offs, comb, weights=w)
            want = worker_pool(rows, offs, w, comb)
            if comb == "sum":
                np.testing.assert_array_equal(got, want)
            else:  # within 1 ulp
                np.testing.assert_array_max_ulp(got, want, maxulp=1)

    def test_push_equals_expanded_push(self):
        push_equals_expanded(self.client, "a2", "b2", "adam", 0.01, seed=4, bags=60)


class PooledTorch(ShardsTest):
    NSHARDS = 2

    @classmethod
    def setUpClass(cls):
        try:
            import torch  # noqa: F401
        except ImportError as e:
            raise unittest.SkipTest(f"PyTorch is not installed ({e})")
        super().setUpClass()

    def test_embedding_bag_pooled_matches_unpooled(self):
        import torch

        import ember.torch as et

        c = self.client
        spec = dict(capacity_per_shard=4096, optimizer="sgd", lr=0.5, initializer="zeros")
        ids = torch.tensor([3, 4, 3, 9, 11, 4, 4])
        offsets = torch.tensor([0, 2, 2, 5])  # bags {3,4}, {}, {3,9,11}, {4,4}
        uniq = np.unique(ids.numpy()).astype(np.uint64)
        vals = (np.arange(uniq.size * DIM).reshape(uniq.size, DIM) % 7 / 8.0).astype(np.float32)
        for mode in ("sum", "mean"):
            tp, tu = f"tp_{mode}", f"tu_{mode}"
            pooled = et.EmbeddingBag(c, tp, DIM, mode=mode, pooled=True, create=spec)
            plain = et.EmbeddingBag(c, tu, DIM, mode=mode, create=spec)
            c.write(tp, uniq, vals)
            c.write(tu, uniq, vals)
            a, b = pooled(ids, offsets), plain(ids, offsets)
            self.assertEqual(a.shape, (4, DIM))
            torch.testing.assert_close(a, b, rtol=0, atol=0 if mode == "sum" else 1e-7)
            weight = torch.arange(4 * DIM, dtype=torch.float32).reshape(4, DIM) / 16
            (a * weight).sum().backward()
            (b * weight).sum().backward()
            self.assertEqual(pooled.pushes, 1)
            np.testing.assert_allclose(c.pull(tp, uniq, DIM, insert=False),
                                       c.pull(tu, uniq, DIM, insert=False), rtol=0,
                                       atol=0 if mode == "sum" else 1e-6, err_msg=mode)

    def test_embedding_bag_sqrtn_weighted(self):
        import torch

        import ember.torch as et

        c = self.client
        bag = et.EmbeddingBag(c, "sq", DIM, mode="sqrtn", pooled=True, include_last_offset=True,
                              create=dict(capacity_per_shard=4096, optimizer="sgd", lr=1.0,
                                          initializer="zeros"))
        c.write("sq", np.array([1, 2], dtype=np.uint64), np.ones((2, DIM), dtype=np.float32))
        w = torch.tensor([3.0, 4.0])
        out = bag(torch.tensor([1, 2]), torch.tensor([0, 2]), per_sample_weights=w)
        # (3·1 + 4·1) / sqrt(9 + 16) = 7/5
        torch.testing.assert_close(out, torch.full((1, DIM), 1.4))
        out.sum().backward()  # g = 1: key 1 gets 3/5, key 2 gets 4/5; SGD lr 1
        rows = c.pull("sq", np.array([1, 2], dtype=np.uint64), DIM, insert=False)
        np.testing.assert_allclose(rows[:, 0], [1 - 0.6, 1 - 0.8], rtol=1e-6)
        with self.assertRaises(ember.InvalidArgumentError):
            et.EmbeddingBag(c, "sq", DIM, mode="sqrtn")  # sqrtn needs pooled=True


if __name__ == "__main__":
    main()
