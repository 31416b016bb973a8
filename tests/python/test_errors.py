"""libember's statuses reach Python as ember.Error subclasses carrying the gRPC
code, the failing shard and the message: unknown table NOT_FOUND, wrong dim
INVALID_ARGUMENT, and the rest of what a worker meets."""

import os
import shutil
import socket
import tempfile
import unittest

import numpy as np

from ember_test_util import ShardsTest, main

import ember
import ember.local
from ember import Code


class Errors(ShardsTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.client.create_table("t4", 4, 256)

    def assertCode(self, cm, code, cls):
        e = cm.exception
        self.assertIsInstance(e, ember.Error)
        self.assertIsInstance(e, cls)
        self.assertEqual(e.code, code)
        self.assertEqual(int(e.code), int(code))
        self.assertTrue(str(e).startswith(code.name + ": "), str(e))
        self.assertTrue(e.message)
        return e

    def test_unknown_table_is_not_found(self):
        with self.assertRaises(ember.NotFoundError) as cm:
            self.client.pull("no_such_table", [1, 2, 3], 4)
        e = self.assertCode(cm, Code.NOT_FOUND, LookupError)
        self.assertIn(e.shard, (0, 1))  # a shard answered it
        self.assertIn("no_such_table", e.message)
        with self.assertRaises(ember.NotFoundError):
            self.client.push("no_such_table", [1], np.zeros((1, 4), np.float32))
        with self.assertRaises(ember.NotFoundError):
            self.client.describe_table("no_such_table")
        with self.assertRaises(ember.NotFoundError):
            self.client.drop_table("no_such_table")
        self.client.drop_table("no_such_table", if_exists=True)
        # Without a dim the lookup itself (describe) reports it.
        with ember.Client(self.addresses) as c, self.assertRaises(ember.NotFoundError):
            c.pull("no_such_table", [1])

    def test_wrong_dim_is_invalid_argument(self):
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            self.client.pull("t4", [1, 2], 5)
        e = self.assertCode(cm, Code.INVALID_ARGUMENT, ValueError)
        self.assertIn("dim 4", e.message)  # the table's dim is named
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            self.client.push("t4", [1, 2], np.zeros((2, 3), np.float32))
        self.assertCode(cm, Code.INVALID_ARGUMENT, ValueError)
        # Gradients that do not fit the keys are refused before anything is sent.
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            self.client.push("t4", [1, 2], np.zeros(7, np.float32))
        self.assertIsNone(cm.exception.shard)

    def test_async_errors_come_from_wait(self):
        try:
            p = self.client.pull_async("no_such_table", [1, 2], 4)
        except ember.NotFoundError:
            return  # refused at the start: also fine
        with self.assertRaises(ember.NotFoundError):
            p.wait()
        with self.assertRaises(ember.NotFoundError):
            p.wait()  # the same error again

    def test_reserved_key_refused_before_sending(self):
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            self.client.pull("t4", np.array([1, 2**64 - 1], dtype=np.uint64), 4)
        self.assertIsNone(cm.exception.shard)
        with self.assertRaises(ember.InvalidArgumentError):
            self.client.pull("t4", np.array([-1], dtype=np.int64), 4)  # the same key

    def test_create_conflicts(self):
        with self.assertRaises(ember.AlreadyExistsError) as cm:
            self.client.create_table("t4", 4, 256)
        self.assertCode(cm, Code.ALREADY_EXISTS, ember.AlreadyExistsError)
        with self.assertRaises(ember.AlreadyExistsError):
            self.client.create_table("t4", 8, 256, if_not_exists=True)  # another dim
        with self.assertRaises(ember.InvalidArgumentError):
            self.client.create_table("bad", 0, 256)
        with self.assertRaises(ember.InvalidArgumentError):
            self.client.create_table("bad", 4, 256, optimizer="rmsprop")
        with self.assertRaises(ember.InvalidArgumentError):
            self.client.create_table("x" * 65, 4, 256)

    def test_no_shards_and_bad_options(self):
        with self.assertRaises(ember.InvalidArgumentError) as cm:
            ember.Client()
        self.assertIn("no shards", cm.exception.message)
        with self.assertRaises(ember.InvalidArgumentError):
            ember.Client("a:1,a:1")
        with self.assertRaises(ember.InvalidArgumentError):
            ember.Client(self.addresses, wire_dtype="float64")

    def test_down_shard_is_unavailable_in_time(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with ember.Client(f"127.0.0.1:{port}", timeout_ms=600, max_retries=2) as c:
            with self.assertRaises(ember.Error) as cm:
                c.pull("t4", [1], 4)
            self.assertIn(cm.exception.code, (Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED))
            self.assertEqual(cm.exception.shard, 0)

    def test_every_code_has_its_class(self):
        for code in Code:
            if code == Code.OK:
                continue
            e = ember.Error.of(int(code), "m", 2)
            self.assertIsInstance(e, ember.Error)
            self.assertEqual(e.code, code)
            self.assertEqual(type(e).code, code)
            self.assertEqual(e.shard, 2)
        self.assertIsInstance(ember.Error.of(Code.DEADLINE_EXCEEDED, "m"), TimeoutError)
        self.assertEqual(ember.Error.of(99, "m").code, Code.UNKNOWN)



class Roles(unittest.TestCase):
    """Tokens from Python: the worker token pulls and pushes but cannot drop
    (PermissionDeniedError, the table stays); none is UnauthenticatedError; the
    admin token drops; EMBER_TOKEN is the fallback."""

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ember-roles-")
        cls.wfile = os.path.join(cls.dir, "worker.token")
        afile = os.path.join(cls.dir, "admin.token")
        with open(cls.wfile, "w") as f:
            f.write("py-worker\n")
        with open(afile, "w") as f:
            f.write("py-admin\n")
        cls.rfile = os.path.join(cls.dir, "reader.token")
        with open(cls.rfile, "w") as f:
            f.write("py-reader\n")
        cls.shards = ember.local.LocalShards(
            2, extra_args=["--worker-token-file", cls.wfile, "--admin-token-file", afile,
                           "--reader-token-file", cls.rfile]).start()
        cls.addresses = list(cls.shards.addresses)

    @classmethod
    def tearDownClass(cls):
        cls.shards.stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_worker_admin_and_none(self):
        with ember.Client(self.addresses, token="py-admin") as admin, \
                ember.Client(self.addresses, token_file=self.wfile) as worker, \
                ember.Client(self.addresses, max_retries=1) as none:
            admin.create_table("r4", 4, 256)
            rows = worker.pull("r4", [1, 2, 3], 4)
            worker.push("r4", [1, 2, 3], np.ones_like(rows))
            with self.assertRaises(ember.PermissionDeniedError):
                worker.drop_table("r4")
            admin.describe_table("r4")  # still there
            with self.assertRaises(ember.UnauthenticatedError):
                none.pull("r4", [1], 4)
            os.environ["EMBER_TOKEN"] = "py-worker"
            try:
                with ember.Client(self.addresses) as from_env:
                    from_env.pull("r4", [1], 4)
            finally:
                del os.environ["EMBER_TOKEN"]
            admin.drop_table("r4")
            with self.assertRaises(ember.NotFoundError):
                admin.describe_table("r4")

    def test_reader_serves_only(self):
        with ember.Client(self.addresses, token="py-admin") as admin, \
                ember.Client(self.addresses, token_file=self.rfile) as reader:
            admin.create_table("r5", 4, 256)
            admin.pull("r5", [1, 2], 4)
            rows = reader.pull("r5", [1, 2], 4, insert=False)
            self.assertEqual(rows.shape, (2, 4))
            with self.assertRaises(ember.PermissionDeniedError) as cm:
                reader.pull("r5", [3], 4)  # insert=True: a training pull
            self.assertIn("needs the worker role", cm.exception.message)
            self.assertIn("reader role", cm.exception.message)
            with self.assertRaises(ember.PermissionDeniedError):
                reader.push("r5", [1], np.ones((1, 4), np.float32))
            with self.assertRaises(ember.PermissionDeniedError) as cm:
                reader.drop_table("r5")
            self.assertIn("needs the admin role", cm.exception.message)
            self.assertEqual(admin.describe_table("r5").size, 2)
            admin.drop_table("r5")


class Ownership(unittest.TestCase):
    """Shards started as 0 and 1 of 2 (ember.local), listed backwards: every
    pull fails with FailedPreconditionError saying the list is out of order, and
    check_shards says so up front."""

    @classmethod
    def setUpClass(cls):
        cls.shards = ember.local.LocalShards(2).start()
        cls.addresses = list(cls.shards.addresses)

    @classmethod
    def tearDownClass(cls):
        cls.shards.stop()

    def test_reversed_list_fails_loudly(self):
        with ember.Client(self.addresses) as good, \
                ember.Client(list(reversed(self.addresses)), max_retries=1) as bad:
            good.check_shards()
            good.create_table("o4", 4, 256)
            with self.assertRaises(ember.FailedPreconditionError) as cm:
                bad.check_shards()
            self.assertIn("out of order", cm.exception.message)
            self.assertIn(f"{self.addresses[1]} (position 0) is shard 1 of 2",
                          cm.exception.message)
            with self.assertRaises(ember.FailedPreconditionError) as cm:
                bad.pull("o4", list(range(100)), 4)
            self.assertIn("out of order", cm.exception.message)
            self.assertIn("belongs to shard", cm.exception.message)
            self.assertEqual(good.describe_table("o4").size, 0)

    def test_placement(self):
        with ember.Client(self.addresses) as c:
            c.create_table("p4", 4, 256, backend="cpu", hbm_bytes=1 << 20)
            self.assertEqual(c.describe_table("p4").dim, 4)
            with self.assertRaises(ember.FailedPreconditionError) as cm:
                c.create_table("g4", 4, 256, backend="gpu")
            self.assertIn("cpu tables only", cm.exception.message)
            with self.assertRaises(ember.NotFoundError):
                c.describe_table("g4")
            with self.assertRaises(ember.InvalidArgumentError):
                c.create_table("h4", 4, 256, hbm_bytes=-1)

if __name__ == "__main__":
    main()
