"""Epochs, CUSTOM scores, found flags and erase from Python (issue 17): the
ember.Client surfaces (pull scores/return_found, push/write scores/epoch,
erase, set_epoch) and ember.torch's (forward scores, module.epoch,
track_found), against two real shards. Eviction tests use a one-shard client
and capacity 128 (one bucket), so scores alone decide which key goes."""

import importlib.util
import unittest

import numpy as np

import ember_test_util as u
from ember_test_util import ember

BUCKET = 128


def present(c, table, keys):
    """Which keys the table holds (a serving pull: creates nothing)."""
    _, found = c.pull(table, keys, 4, insert=False, return_found=True)
    return found


class OneShard(u.ShardsTest):
    """The two shards, and one more server alone (no --shard-count: it owns every
    key) for the one-bucket eviction tests."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.single = ember.local.LocalShards(1).start()

    @classmethod
    def tearDownClass(cls):
        cls.single.stop()
        super().tearDownClass()

    def one_shard(self):
        return ember.Client(list(self.single.addresses))


class TableOps(OneShard):

    def test_epoch_advanced_evicts_old_epoch_first(self):
        with self.one_shard() as c:
            c.create_table("py_ep", 4, BUCKET, scores="epoch_lru", initializer="zeros")
            a = np.arange(1000, 1000 + BUCKET, dtype=np.uint64)
            b = np.arange(5000, 5064, dtype=np.uint64)
            c.set_epoch("py_ep", 5)
            c.pull("py_ep", a, 4)
            c.set_epoch("py_ep", 6)
            c.pull("py_ep", a[64:], 4)
            c.pull("py_ep", b, 4)
            self.assertEqual(int(present(c, "py_ep", a[:64]).sum()), 0)
            self.assertTrue(present(c, "py_ep", a[64:]).all())
            self.assertTrue(present(c, "py_ep", b).all())
            # a push's epoch moves the table up: 32 newcomers then evict epoch-6 keys only
            c.push("py_ep", a[64:96], np.zeros((32, 4), np.float32), epoch=7)
            cc = np.arange(9000, 9032, dtype=np.uint64)
            c.pull("py_ep", cc, 4)
            self.assertTrue(present(c, "py_ep", a[64:96]).all())
            self.assertTrue(present(c, "py_ep", cc).all())
            with self.assertRaises(ember.NotFoundError):
                c.set_epoch("py_nope", 1)
            with self.assertRaises(ember.InvalidArgumentError):
                c.set_epoch("py_ep", -1)
            c.drop_table("py_ep")

    def test_custom_scores_decide_eviction(self):
        with self.one_shard() as c:
            c.create_table("py_cu", 4, BUCKET, scores="custom", initializer="zeros")
            k = np.arange(BUCKET, dtype=np.uint64) * 3 + 100
            c.pull("py_cu", k, 4, scores=np.arange(BUCKET) + 1000)
            # push raises k[0..9]; equal keys: the last score wins (k[10]: 1, then 9500)
            c.write("py_cu", k[:10], np.zeros((10, 4), np.float32), mode="assign",
                    scores=np.full(10, 9000))
            c.pull("py_cu", [k[10], k[10]], 4, scores=[1, 9500])
            newcomers = np.arange(70000, 70010, dtype=np.uint64)
            c.pull("py_cu", newcomers, 4, scores=np.full(10, 5000))
            self.assertTrue(present(c, "py_cu", k[:11]).all())
            self.assertEqual(int(present(c, "py_cu", k[11:21]).sum()), 0)
            self.assertTrue(present(c, "py_cu", newcomers).all())
            with self.assertRaises(ember.InvalidArgumentError):
                c.pull("py_cu", k[:2], 4, scores=[1])            # one score for two keys
            with self.assertRaises(ember.InvalidArgumentError):
                c.pull("py_cu", k[:1], 4, scores=[-1])
            with self.assertRaises(ember.InvalidArgumentError):
                c.pull("py_cu", k[:1], 4, insert=False, scores=[1])
            c.drop_table("py_cu")

    def test_found_in_caller_order_over_two_shards(self):
        c = self.client
        c.create_table("py_fd", 4, 4096, initializer="zeros")
        c.pull("py_fd", np.arange(0, 80, 2, dtype=np.uint64), 4)
        keys = (np.arange(300) * 7 % 100).astype(np.uint64).reshape(30, 10)
        rows, found = c.pull("py_fd", keys, 4, return_found=True)
        self.assertEqual(rows.shape, (30, 10, 4))
        self.assertEqual(found.shape, (30, 10))
        np.testing.assert_array_equal(found, (keys < 80) & (keys % 2 == 0))
        _, again = c.pull("py_fd", keys, 4, return_found=True)
        self.assertTrue(again.all())
        c.drop_table("py_fd")

    def test_erase(self):
        c = self.client
        c.create_table("py_er", 4, 4096, initializer="zeros")
        keys = np.arange(10, 110, dtype=np.uint64)
        c.pull("py_er", keys, 4)
        self.assertEqual(c.erase("py_er", np.concatenate([keys[:50], keys[:3], np.array([424242], np.uint64)])), 50)
        self.assertEqual(int(present(c, "py_er", keys[:50]).sum()), 0)
        self.assertTrue(present(c, "py_er", keys[50:]).all())
        self.assertEqual(c.describe_table("py_er").size, 50)
        with self.assertRaises(ember.InvalidArgumentError):
            c.erase("py_er", [int(keys[60]), 0xFFFFFFFFFFFFFFFF])
        self.assertEqual(c.describe_table("py_er").size, 50)
        with self.assertRaises(ember.NotFoundError):
            c.erase("py_nope", [1])
        self.assertEqual(c.erase("py_er", []), 0)
        c.drop_table("py_er")


@unittest.skipUnless(importlib.util.find_spec("torch"), "PyTorch is not installed")
class TorchScores(OneShard):

    def test_forward_scores_epoch_and_found(self):
        import torch
        import ember.torch as et
        with self.one_shard() as c:
            c.create_table("py_tcu", 4, BUCKET, scores="custom", initializer="zeros", lr=1.0)
            emb = et.Embedding(c, "py_tcu", 4, track_found=True)
            ids = torch.arange(BUCKET, dtype=torch.int64)
            out = emb(ids, scores=torch.arange(BUCKET) + 1000)
            self.assertFalse(bool(emb.found.any()))
            out.sum().backward()   # the push carries the same scores
            emb(ids[:5], scores=torch.full((5,), 1))
            self.assertTrue(bool(emb.found.all()))
            # ids[0..4] now score 1 (the pull) then 1 (the push, none here): the lowest
            newcomers = torch.arange(10000, 10005)
            emb(newcomers, scores=torch.full((5,), 5000))
            self.assertFalse(bool(emb.found.any()))
            found = c.pull("py_tcu", ids.numpy(), 4, insert=False, return_found=True)[1]
            self.assertEqual(int(found[:5].sum()), 0)
            self.assertTrue(found[5:].all())
            c.drop_table("py_tcu")

            c.create_table("py_tep", 4, BUCKET, scores="epoch_lru", initializer="zeros")
            e2 = et.Embedding(c, "py_tep", 4, epoch=12)
            e2(torch.arange(BUCKET)).sum().backward()   # a full bucket; the push says 12
            # Had the push not moved the table to 12, its keys would be epoch 0 and
            # 64 newcomers of a rolled-back epoch 5 would all get in; as they are
            # epoch 12, each newcomer evicts the previous newcomer instead.
            c.set_epoch("py_tep", 5)
            newcomers = np.arange(1000, 1064, dtype=np.uint64)
            c.pull("py_tep", newcomers, 4)
            self.assertLess(int(present(c, "py_tep", newcomers).sum()), 8)
            self.assertGreater(int(present(c, "py_tep", np.arange(BUCKET)).sum()),
                               BUCKET - 8)
            c.drop_table("py_tep")


if __name__ == "__main__":
    u.main()
