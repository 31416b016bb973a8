"""Shard discovery from TF_CONFIG: a TensorFlow parameter-server job's cluster
spec whose ps tasks are ember servers, with no EMBER_SHARDS, is all a worker
needs; ps task i is shard i; and EMBER_SHARDS / explicit shards still win."""

import json
import os

import numpy as np

from ember_test_util import ShardsTest, main

import ember


class TfConfig(ShardsTest):
    def setUp(self):
        self.saved = {v: os.environ.get(v) for v in ("TF_CONFIG", "EMBER_SHARDS")}
        os.environ.pop("EMBER_SHARDS", None)

    def tearDown(self):
        for v, val in self.saved.items():
            if val is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = val

    def tf_config(self, ps, task_type="worker", index=0):
        return json.dumps({
            "cluster": {"chief": ["chief-0.job.svc:2222"],
                        "worker": ["worker-0.job.svc:2222", "worker-1.job.svc:2222"],
                        "ps": ps},
            "task": {"type": task_type, "index": index},
            "environment": "cloud",
        })

    def test_worker_finds_the_shards_in_tf_config(self):
        os.environ["TF_CONFIG"] = self.tf_config(self.addresses)
        with ember.Client() as c:
            self.assertEqual(c.shard_source, "TF_CONFIG")
            self.assertEqual(c.shard_addresses, self.addresses)
            c.create_table("tf", 2, 1024, initializer="zeros", lr=1.0)
            keys = np.arange(1, 201, dtype=np.uint64)
            c.push("tf", keys, -np.ones((200, 2), np.float32))
            np.testing.assert_array_equal(c.pull("tf", keys), np.ones((200, 2), np.float32))
        # ps task i is shard i: each server holds exactly the keys ember_shard_of
        # gives it, and a client with the explicit list reads the same rows.
        for i, addr in enumerate(self.addresses):
            with ember.Client([addr]) as one:
                want = sum(1 for k in keys if ember.shard_of(k, 2) == i)
                self.assertEqual(one.describe_table("tf").size, want)
                self.assertGreater(want, 0)
        np.testing.assert_array_equal(self.client.pull("tf", keys, insert=False),
                                      np.ones((200, 2), np.float32))
        self.client.drop_table("tf")

    def test_the_task_does_not_matter(self):
        # A ps task or the chief running a worker loop sees the same shards.
        for task in (("ps", 1), ("chief", 0), ("evaluator", 0)):
            os.environ["TF_CONFIG"] = self.tf_config(self.addresses, *task)
            with ember.Client() as c:
                self.assertEqual(c.shard_addresses, self.addresses)

    def test_precedence(self):
        os.environ["TF_CONFIG"] = self.tf_config(self.addresses)
        os.environ["EMBER_SHARDS"] = ",".join(reversed(self.addresses))
        with ember.Client() as c:
            self.assertEqual(c.shard_source, "EMBER_SHARDS")
            self.assertEqual(c.shard_addresses, list(reversed(self.addresses)))
        with ember.Client(self.addresses[:1]) as c:
            self.assertEqual(c.shard_source, "options.shards")
            self.assertEqual(c.shard_addresses, self.addresses[:1])
        del os.environ["EMBER_SHARDS"]
        os.environ["EMBER_SHARD_PATTERN"] = "ember-{i}.ember:7070"
        os.environ["EMBER_SHARD_COUNT"] = "3"
        try:
            with ember.Client() as c:  # TF_CONFIG beats the pattern
                self.assertEqual(c.shard_source, "TF_CONFIG")
            os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["w:1"]}})
            with ember.Client() as c:  # no ps tasks: the pattern
                self.assertEqual(c.shard_source, "EMBER_SHARD_PATTERN")
                self.assertEqual(c.shard_count, 3)
        finally:
            del os.environ["EMBER_SHARD_PATTERN"]
            del os.environ["EMBER_SHARD_COUNT"]

    def test_bad_tf_config(self):
        os.environ["TF_CONFIG"] = '{"cluster": {"ps": ["a:1"]'
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            ember.Client()
        self.assertIn("TF_CONFIG", cm.exception.message)
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"ps": {"0": "a:1"}}})
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            ember.Client()
        self.assertIn("cluster.ps", cm.exception.message)
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["w:1"]}})
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            ember.Client()
        self.assertIn("lists no ps tasks", cm.exception.message)


if __name__ == "__main__":
    main()
