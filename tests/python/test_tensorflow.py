"""ember.tensorflow against two real shards: the C ops (EmberPull, EmberPush and
the pooled forms, libember_tf_ops.so) through the Keras Embedding layer and
embedding_lookup_sparse. After a step with server-side SGD lr, each row moved by
exactly -lr x the gradient TensorFlow computes for it; Adam matches a float64
reference; tf.function and eager agree; inference never inserts; bad input
(wrong dim, a reserved key, a shard down) raises the TensorFlow error of its gRPC
code, the code's name in the message, and changes nothing. Skipped (exit 77)
where TensorFlow or the op library is missing."""

import os

import numpy as np

from ember_test_util import ShardsTest, main, need_tensorflow

need_tensorflow()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

import ember  # noqa: E402
import ember.local  # noqa: E402
import ember.tensorflow as etf  # noqa: E402

DIM = 6
LR = 0.1


def tf_grad(rows, f):
    """TensorFlow's gradient of f(rows) w.r.t. a local copy of the rows."""
    w = tf.Variable(rows)
    with tf.GradientTape() as tape:
        loss = f(w)
    return tape.gradient(loss, w)


def dense_grad(g):
    return tf.convert_to_tensor(g).numpy()


class TensorFlowOps(ShardsTest):
    def make(self, name, optimizer="sgd", **kw):
        self.client.create_table(name, DIM, capacity_per_shard=4096, optimizer=optimizer, lr=LR,
                                 initializer=("uniform", -0.5, 0.5), seed=3, **kw)
        return etf.Embedding(name, DIM, shards=self.shards.shards)

    def step(self, emb, ids, loss_of):
        with tf.GradientTape() as tape:
            loss = loss_of(emb(ids))
        return tape.gradient(loss, emb.trainable_variables)

    def test_sgd_rows_move_by_lr_times_the_tf_gradient(self):
        emb = self.make("sgd")
        ids = tf.constant([[5, 9, 5], [2**40, 9, 7], [5, 5, 5], [-5, 7, 2]], tf.int64)
        uniq, inverse = np.unique(ids.numpy().view(np.uint64), return_inverse=True)
        scale = tf.reshape(tf.range(1.0, 4 * 3 * DIM + 1), [4, 3, DIM]) / 50.0

        def loss_of(rows):
            return tf.reduce_sum(scale * rows) + tf.reduce_sum(rows ** 3)

        self.client.pull("sgd", uniq)  # create them first: the same rows either way
        before = self.client.pull("sgd", uniq, insert=False)
        g = self.step(emb, ids, loss_of)
        self.assertEqual([float(x) for x in g], [0.0])  # push_trigger: gradient 0
        idx = tf.constant(inverse.reshape(4, 3).astype(np.int64))
        ref = dense_grad(tf_grad(before, lambda w: loss_of(tf.gather(w, idx))))
        after = self.client.pull("sgd", uniq, insert=False)
        np.testing.assert_allclose(after, before - np.float32(LR) * ref, rtol=1e-5, atol=1e-6)
        self.assertGreater(np.abs(after - before).max(), 1e-2)
        self.assertEqual(self.client.describe_table("sgd").size, len(uniq))

    def test_adam_matches_a_float64_reference(self):
        emb = self.make("adam", optimizer="adam")
        ids = tf.constant([3, 4, 3, 11, 4, 3], tf.int64)
        uniq, inverse = np.unique(ids.numpy(), return_inverse=True)
        w = self.client.pull("adam", uniq).astype(np.float64)
        m = np.zeros_like(w)
        v = np.zeros_like(w)
        target = tf.constant(np.linspace(-1, 1, 6 * DIM).reshape(6, DIM), tf.float32)

        def loss_of(rows):
            return tf.reduce_sum((rows - target) ** 2)

        for t in range(1, 5):
            cur = self.client.pull("adam", uniq, insert=False)
            np.testing.assert_allclose(cur, w, rtol=1e-5, atol=1e-6)
            g = dense_grad(tf_grad(cur, lambda x: loss_of(tf.gather(x, inverse))))
            self.step(emb, ids, loss_of)
            g = g.astype(np.float64)
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            w -= LR * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
        np.testing.assert_allclose(self.client.pull("adam", uniq, insert=False), w,
                                   rtol=1e-5, atol=1e-5)

    def test_tf_function_and_eager_agree(self):
        e1, e2 = self.make("ea"), self.make("fn")
        dense = tf.keras.layers.Dense(1, kernel_initializer="ones")
        batches = [tf.constant(b, tf.int64) for b in ([[1, 2], [3, 1]], [[2, 2], [4, 5]],
                                                      [[1, 5], [6, 3]])]

        def run(emb, ids):
            with tf.GradientTape() as tape:
                rows = emb(ids)
                loss = tf.reduce_sum(tf.tanh(dense(tf.reshape(rows, [2, 2 * DIM]))))
            tape.gradient(loss, emb.trainable_variables)
            return rows

        compiled = tf.function(run)
        keys = np.arange(1, 7, dtype=np.uint64)
        init = self.client.pull("ea", keys)
        np.testing.assert_array_equal(self.client.pull("fn", keys), init)  # same seed
        for b in batches:
            a = run(e1, b)
            c = compiled(e2, b)
            # The graph may fuse the dense part's gradient differently: float32
            # rounding apart, the same rows and the same pushes.
            np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(self.client.pull("ea", keys, insert=False),
                                   self.client.pull("fn", keys, insert=False),
                                   rtol=1e-5, atol=1e-7)
        self.assertGreater(np.abs(self.client.pull("ea", keys, insert=False) - init).max(), 1e-3)

    def test_sparse_and_ragged_lookups_pool_and_push(self):
        for combiner in ("sum", "mean", "sqrtn"):
            name = f"bag_{combiner}"
            self.make(name)
            emb = etf.Embedding(name, DIM, combiner=combiner, shards=self.shards.shards)
            ids = tf.ragged.constant([[3, 4, 3], [], [8, 1], [1]], dtype=tf.int64)
            wts = tf.ragged.constant([[0.5, 2.0, 1.0], [], [-1.0, 3.0], [0.25]])
            uniq, inverse = np.unique(ids.values.numpy(), return_inverse=True)
            before = self.client.pull(name, uniq)
            scale = tf.reshape(tf.range(1.0, 4 * DIM + 1), [4, DIM])
            with tf.GradientTape() as tape:
                out = emb(ids, weights=wts)
                loss = tf.reduce_sum(out * scale)
            tape.gradient(loss, emb.trainable_variables)
            local_ids = tf.RaggedTensor.from_row_splits(inverse.astype(np.int64), ids.row_splits)
            sp = local_ids.to_sparse()
            sp_w = wts.to_sparse()

            def ref_of(w):
                return tf.nn.embedding_lookup_sparse(w, sp, sp_w, combiner=combiner)

            ref_out = ref_of(tf.constant(before)).numpy()
            self.assertEqual(ref_out.shape, (4, DIM))
            np.testing.assert_allclose(out.numpy(), ref_out, rtol=1e-5, atol=1e-6)
            g = dense_grad(tf_grad(before, lambda w: tf.reduce_sum(ref_of(w) * scale)))
            after = self.client.pull(name, uniq, insert=False)
            np.testing.assert_allclose(after, before - np.float32(LR) * g, rtol=1e-5, atol=1e-6)
            # The same through a SparseTensor, inference: no insert, no push.
            sp_ids = ids.to_sparse()
            inf = emb(sp_ids, weights=sp_w, training=False)
            np.testing.assert_allclose(inf.numpy(), ref_of(tf.constant(after)).numpy(),
                                       rtol=1e-5, atol=1e-6)

    def test_prefetch_in_the_input_pipeline(self):
        emb = self.make("pf")
        bag = etf.Embedding("pf", DIM, combiner="sum", shards=self.shards.shards)
        ids = np.array([[[1, 2], [3, 1]], [[2, 4], [5, 1]]], np.int64)
        tags = tf.ragged.constant([[7, 8, 7], [9]], dtype=tf.int64)

        def fetch(i):
            return i, emb.prefetch(i), bag.prefetch(tags)

        ds = tf.data.Dataset.from_tensor_slices(ids).map(fetch).prefetch(1)
        it = iter(ds)
        b, rows, vecs = next(it)  # batch 2's rows are on their way meanwhile
        np.testing.assert_array_equal(rows.numpy(), self.client.pull("pf", b.numpy(),
                                                                     insert=False))
        uniq, inverse = np.unique(np.concatenate([b.numpy().ravel(), tags.values.numpy()]),
                                  return_inverse=True)
        before = self.client.pull("pf", uniq, insert=False)
        self.assertGreaterEqual(self.client.describe_table("pf").size, len(uniq))  # inserted
        scale = tf.reshape(tf.range(1.0, 2 * 2 * DIM + 1), [2, 2, DIM])
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(emb(b, rows=rows) * scale) + \
                tf.reduce_sum(bag(tags, rows=vecs) ** 2)
        tape.gradient(loss, emb.trainable_variables + bag.trainable_variables)
        i_ids = tf.constant(inverse[:4].reshape(2, 2))
        i_tags = tf.RaggedTensor.from_row_splits(inverse[4:], tags.row_splits)

        def ref(w):
            return tf.reduce_sum(tf.gather(w, i_ids) * scale) + tf.reduce_sum(
                tf.reduce_sum(tf.gather(w, i_tags), axis=1) ** 2)

        g = dense_grad(tf_grad(before, ref))
        np.testing.assert_allclose(self.client.pull("pf", uniq, insert=False),
                                   before - np.float32(LR) * g, rtol=1e-5, atol=1e-6)
        self.assertEqual(next(it)[1].shape, (2, 2, DIM))

    def test_uint64_and_int64_keys_are_the_same_keys(self):
        self.make("u64")
        keys = np.array([1, 2**63 + 5, 2**64 - 5], np.uint64)  # the last: int64 -5
        a = etf.pull(tf.constant(keys, tf.uint64), "u64", DIM, shards=self.shards.shards)
        b = etf.pull(tf.constant(keys.view(np.int64)), "u64", DIM, shards=self.shards.shards)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        np.testing.assert_array_equal(a.numpy(), self.client.pull("u64", keys, insert=False))
        self.assertEqual(self.client.describe_table("u64").size, 3)

    def test_inference_never_inserts(self):
        emb = self.make("inf")
        emb(tf.constant([1, 2, 3], tf.int64))
        size = self.client.describe_table("inf").size
        out = emb(tf.constant([1, 2, 3, 100, 101], tf.int64), training=False)
        self.assertEqual(out.shape, (5, DIM))
        serving = etf.Embedding("inf", DIM, serve=True, shards=self.shards.shards)
        serving(tf.constant([[102, 103]], tf.int64))
        before = self.client.pull("inf", np.array([1, 2, 3], np.uint64), insert=False)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(serving(tf.constant([1, 2], tf.int64)))
        self.assertIsNone(tape.gradient(loss, serving.trainable_variables)[0])
        self.assertEqual(self.client.describe_table("inf").size, size)
        np.testing.assert_array_equal(
            self.client.pull("inf", np.array([1, 2, 3], np.uint64), insert=False), before)

    def test_a_keras_model_trains_its_rows_through_fit(self):
        self.make("fit")

        class Model(tf.keras.Model):
            def __init__(self, shards):
                super().__init__()
                self.emb = etf.Embedding("fit", DIM, shards=shards)
                self.out = tf.keras.layers.Dense(1)

            def call(self, ids, training=None):
                return self.out(tf.reduce_sum(self.emb(ids, training=training), axis=1))

        model = Model(self.shards.shards)
        model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
        ids = np.arange(40, dtype=np.int64).reshape(20, 2) * 3
        y = (ids[:, :1] % 2).astype(np.float32)
        keys = ids.reshape(-1).view(np.uint64)
        model.fit(ids, y, batch_size=5, epochs=1, verbose=0)
        first = self.client.pull("fit", keys, insert=False)
        model.fit(ids, y, batch_size=5, epochs=3, verbose=0)
        self.assertGreater(np.abs(self.client.pull("fit", keys, insert=False) - first).max(), 1e-4)
        self.assertEqual(self.client.describe_table("fit").size, len(keys))
        size = self.client.describe_table("fit").size
        model.predict(ids + 1000, verbose=0)  # inference: nothing created
        self.assertEqual(self.client.describe_table("fit").size, size)

    def assertTfError(self, cls, code, fn):
        with self.assertRaises(cls) as cm:
            fn()
        self.assertIn(f"{code}: ", cm.exception.message)
        return cm.exception.message

    def test_bad_input_raises_the_grpc_code_and_changes_nothing(self):
        emb = self.make("bad")
        keys = np.array([1, 2, 3], np.uint64)
        emb(tf.constant(keys.view(np.int64)))
        before = self.client.pull("bad", keys, insert=False)
        size = self.client.describe_table("bad").size
        wrong = etf.Embedding("bad", DIM + 1, shards=self.shards.shards)
        msg = self.assertTfError(tf.errors.InvalidArgumentError, "INVALID_ARGUMENT",
                                 lambda: wrong(tf.constant(keys.view(np.int64))))
        self.assertIn("dim", msg)
        self.assertTfError(tf.errors.InvalidArgumentError, "INVALID_ARGUMENT",
                           lambda: etf.push(keys.view(np.int64), tf.ones([3, DIM + 1]), "bad",
                                            DIM + 1, shards=self.shards.shards))
        self.assertTfError(tf.errors.InvalidArgumentError, "INVALID_ARGUMENT",
                           lambda: etf.push(keys.view(np.int64), tf.ones([3, DIM - 1]), "bad",
                                            DIM, shards=self.shards.shards))
        reserved = tf.constant([1, -1, 2], tf.int64)  # -1 is 0xFFFFFFFFFFFFFFFF
        msg = self.assertTfError(tf.errors.InvalidArgumentError, "INVALID_ARGUMENT",
                                 lambda: self.step(emb, reserved, tf.reduce_sum))
        self.assertIn("reserved", msg)
        self.assertTfError(tf.errors.NotFoundError, "NOT_FOUND",
                           lambda: etf.pull(keys.view(np.int64), "no_such_table", DIM,
                                            shards=self.shards.shards))
        self.assertEqual(self.client.describe_table("bad").size, size)
        np.testing.assert_array_equal(self.client.pull("bad", keys, insert=False), before)

    def test_a_shard_down_raises_unavailable(self):
        with ember.local.LocalShards(2) as sh:
            with ember.Client(sh.shards) as c:
                c.create_table("down", DIM, capacity_per_shard=1024)
                keys = np.array([k for k in range(200) if ember.shard_of(k, 2) == 1][:5],
                                np.int64)
                sh.procs[1].kill()
                sh.procs[1].wait()
                with ember.Client([sh.addresses[0]]) as live:
                    size = live.describe_table("down").size
                    emb = etf.Embedding("down", DIM, shards=sh.shards, timeout_ms=3000)
                    for fn in (lambda: emb(tf.constant(keys)),
                               lambda: etf.push(keys, tf.ones([5, DIM]), "down", DIM,
                                                shards=sh.shards, timeout_ms=3000)):
                        with self.assertRaises((tf.errors.UnavailableError,
                                                tf.errors.DeadlineExceededError)) as cm:
                            fn()
                        e = cm.exception
                        name = "UNAVAILABLE" if isinstance(e, tf.errors.UnavailableError) \
                            else "DEADLINE_EXCEEDED"
                        self.assertIn(f"{name}: shard 1", e.message)
                    self.assertEqual(live.describe_table("down").size, size)

if __name__ == "__main__":
    main()
