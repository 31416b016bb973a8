#!/usr/bin/env python3
"""tf_ps_worker.py — a TensorFlow PS-Worker click model whose parameter servers are
ember shards.

A legacy TensorFlow job runs `ps` tasks that hold the variables and `worker` tasks
that compute, each told its place by TF_CONFIG. Here the `ps` list of that same
TF_CONFIG points at ember shards and the workers are unchanged in number and
layout: each worker finds the shards from TF_CONFIG (libember reads cluster.ps,
ps task i being shard i), and every variable lives there: one ember table per
categorical field and one for a bag of tags (ember.tensorflow.Embedding), and the
dense MLP's weights as the rows of a table "dense" (pulled whole each step, their
gradient pushed back), all stepped by the servers' Adam. The model is computed in
TensorFlow (a tf.function per step); the workers train asynchronously, as a
PS-Worker job's do.

The data is generated, so the answer is known: 4 categorical fields (Zipf ids),
a bag of 1-4 tags, 4 dense features, and a planted logistic model with a bias
per id, pairwise dot products of a 4-vector per id, the tags' mean bias and a
linear term in the dense features. Each worker draws its own stream.

Run as it is, it plays the whole job on this machine: starts two ember-server
processes (ember.local; unless --shards is given), creates the tables, writes
each worker's TF_CONFIG ({"cluster": {"ps": [shards], "worker": [...]},
"task": {"type": "worker", "index": i}}), starts --workers worker processes,
waits for them, and then scores held-out examples with serving lookups (nothing
inserted): the model's log loss next to the base rate's (a constant click rate)
and the planted model's. Started with a TF_CONFIG whose task is a worker, it is
that worker (the tables must exist).

Exit status: 0 done (with --expect-below M: the held-out loss is at least M
under the base rate's); 1 a call failed or the expectation was not met; 2 bad
usage.
"""

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

try:
    import ember
except ImportError:  # run from the checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import ember
import ember.local

import tensorflow as tf

import ember.tensorflow as etf

from click_data import DENSE, FIELDS, ClickData  # noqa: E402  (beside this file)

HIDDEN = 32
CHUNK = 32   # the dense table's dim: the MLP's weights, flat, in rows of CHUNK


def draw_batch(data, rng, n):
    """(field ids (n, FIELDS), tags (a RaggedTensor, n rows), dense (n, DENSE),
    labels (n,), planted probabilities (n,))."""
    ids, tags, offsets, dense, y, p = data.batch(rng, n)
    splits = np.append(offsets, len(tags)).astype(np.int64)
    return ids, tf.RaggedTensor.from_row_splits(tags, splits), dense, y, p


class CTRModel:
    """Field embeddings, a tag bag (mean) and the dense features, concatenated,
    through an MLP (HIDDEN units, ReLU) to a logit. Every weight is an ember row."""

    def __init__(self, prefix, dim, shards=""):
        self.dim = dim
        self.fields = [etf.Embedding(f"{prefix}_f{f}", dim, shards=shards) for f in range(FIELDS)]
        self.tags = etf.Embedding(f"{prefix}_tags", dim, combiner="mean", shards=shards)
        self.dense = etf.Embedding(f"{prefix}_dense", CHUNK, shards=shards)
        n_in = (FIELDS + 1) * dim + DENSE
        self.shapes = [(n_in, HIDDEN), (HIDDEN,), (HIDDEN, 1), (1,)]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.n_chunks = -(-sum(sizes) // CHUNK)
        self.sizes = sizes
        self.layers = self.fields + [self.tags, self.dense]

    @staticmethod
    def tables(prefix, dim):
        return [f"{prefix}_f{f}" for f in range(FIELDS)] + [f"{prefix}_tags"], \
            f"{prefix}_dense"

    def trainable_variables(self):
        return [v for m in self.layers for v in m.trainable_variables]

    def prefetch(self, ids, tags):
        """Every pull of a training step, alone (Embedding.prefetch): for tf.data."""
        return (tuple(m.prefetch(ids[:, f]) for f, m in enumerate(self.fields)),
                self.tags.prefetch(tags),
                self.dense.prefetch(tf.range(self.n_chunks, dtype=tf.int64)))

    def logits(self, ids, tags, dense, training, rows=None):
        """rows: prefetch(ids, tags)'s result, or None to pull here."""
        fr, tr, dr = rows if rows is not None else ((None,) * FIELDS, None, None)
        x = [m(ids[:, f], training=training, rows=fr[f]) for f, m in enumerate(self.fields)]
        x.append(self.tags(tags, training=training, rows=tr))
        x.append(dense)
        h = tf.concat(x, axis=1)
        flat = tf.reshape(self.dense(tf.range(self.n_chunks, dtype=tf.int64),
                                     training=training, rows=dr), [-1])
        w1, b1, w2, b2 = [tf.reshape(p, s) for p, s in
                          zip(tf.split(flat[:sum(self.sizes)], self.sizes), self.shapes)]
        h = tf.nn.relu(h @ w1 + b1)
        return (h @ w2 + b2)[:, 0]


def log_loss(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def run_worker(args, index):
    data = ClickData(args.vocab, args.zipf, args.seed)
    model = CTRModel(args.prefix, args.dim)   # shards: "" -> TF_CONFIG's cluster.ps
    rng = np.random.default_rng(args.seed + 1 + index)
    variables = model.trainable_variables()

    @tf.function(reduce_retracing=True)
    def step(ids, tags, dense, y, rows=None):
        with tf.GradientTape() as tape:
            logits = model.logits(ids, tags, dense, training=True, rows=rows)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, logits))
        tape.gradient(loss, variables)   # pushes every row's gradient to the shards
        return loss

    pool = [draw_batch(data, rng, args.batch) for _ in range(50)] if args.reuse_batches else None

    def draw(s):
        ids, tags, dense, y, _ = pool[s % len(pool)] if pool else draw_batch(data, rng, args.batch)
        return tf.constant(ids), tags, tf.constant(dense), tf.constant(y)

    if args.prefetch:
        # The pulls run in the input pipeline: batch k+1's rows travel while step
        # k computes (they are read before step k's push lands: staleness 1).
        sig = (tf.TensorSpec([None, FIELDS], tf.int64),
               tf.RaggedTensorSpec([None, None], tf.int64, ragged_rank=1),
               tf.TensorSpec([None, DENSE], tf.float32), tf.TensorSpec([None], tf.float32))
        ds = tf.data.Dataset.from_generator(lambda: (draw(s) for s in range(args.steps)),
                                            output_signature=sig)
        ds = ds.map(lambda i, t, d, y: (i, t, d, y, model.prefetch(i, t))).prefetch(2)
        batches = iter(ds)
    else:
        batches = (draw(s) for s in range(args.steps))
    step(*next(batches))  # trace once, outside the timing
    t0 = time.perf_counter()
    losses = []
    for s in range(1, args.steps):
        losses.append(float(step(*next(batches))))
        if s % args.log_every == 0:
            print(f"worker {index}: step {s} train loss {np.mean(losses[-args.log_every:]):.4f}",
                  flush=True)
    dt = time.perf_counter() - t0
    eps = (args.steps - 1) * args.batch / dt
    print(f"worker {index}: {args.steps - 1} steps of {args.batch} in {dt:.1f} s: "
          f"{eps:.0f} examples/s", flush=True)
    print(json.dumps({"worker": index, "examples_per_s": eps}), flush=True)


def evaluate(args, shards):
    data = ClickData(args.vocab, args.zipf, args.seed)
    model = CTRModel(args.prefix, args.dim, shards=shards)
    rng = np.random.default_rng(args.seed + 10_000)
    ys, ps, planted = [], [], []
    for _ in range(args.eval_batches):
        ids, tags, dense, y, p = draw_batch(data, rng, args.batch)
        logits = model.logits(tf.constant(ids), tags, tf.constant(dense), training=False)
        ys.append(y)
        ps.append(tf.sigmoid(logits).numpy())
        planted.append(p)
    y, p, planted = np.concatenate(ys), np.concatenate(ps), np.concatenate(planted)
    base = log_loss(y, np.full_like(y, y.mean()))
    return log_loss(y, p), base, log_loss(y, planted)


def run_job(args):
    own = None
    shards = args.shards
    if not shards:
        own = ember.local.LocalShards(2).start()
        shards = own.shards
    try:
        with ember.Client(shards) as c:
            sparse, dense = CTRModel.tables(args.prefix, args.dim)
            opt = dict(optimizer="adam", lr=args.lr, if_not_exists=True)
            for t in sparse:
                c.create_table(t, args.dim, capacity_per_shard=4 * args.vocab,
                               initializer=("uniform", -0.05, 0.05), **opt)
            c.create_table(dense, CHUNK, capacity_per_shard=1024,
                           initializer=("uniform", -0.15, 0.15), **opt)
        ps = shards.split(",")
        workers = [f"localhost:{2222 + i}" for i in range(args.workers)]
        procs = []
        t0 = time.perf_counter()
        for i in range(args.workers):
            env = dict(os.environ)
            for v in ("EMBER_SHARDS", "EMBER_SHARD_PATTERN"):
                env.pop(v, None)
            env["TF_CONFIG"] = json.dumps({"cluster": {"ps": ps, "worker": workers},
                                           "task": {"type": "worker", "index": i}})
            procs.append(subprocess.Popen([sys.executable, os.path.abspath(__file__)]
                                          + sys.argv[1:], env=env, stdout=subprocess.PIPE,
                                          text=True))
        total = 0.0
        ok = True
        for p in procs:
            out, _ = p.communicate()
            for line in out.splitlines():
                if line.startswith("{"):
                    total += json.loads(line)["examples_per_s"]
                else:
                    print(line, flush=True)
            ok = ok and p.returncode == 0
        wall = time.perf_counter() - t0
        if not ok:
            print("a worker failed", file=sys.stderr)
            return 1
        loss, base, floor = evaluate(args, shards)
        print(f"{args.workers} workers, {args.workers * (args.steps - 1) * args.batch} examples "
              f"in {wall:.1f} s (start-up included); {total:.0f} examples/s summed over the "
              f"workers' training loops")
        print(f"held-out log loss {loss:.4f}; base rate {base:.4f}; planted model {floor:.4f}")
        if args.expect_below is not None and loss > base - args.expect_below:
            print(f"FAILED: held-out loss {loss:.4f} is not {args.expect_below} under the "
                  f"base rate's {base:.4f}", file=sys.stderr)
            return 1
        return 0
    finally:
        if own is not None:
            own.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", help="host:port,... (default: two local ember-server processes)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=400, help="steps per worker")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=2000)
    ap.add_argument("--zipf", type=float, default=1.05)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--prefix", default="tfctr")
    ap.add_argument("--eval-batches", type=int, default=40)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--reuse-batches", action="store_true",
                    help="cycle through 50 pre-drawn batches: times the model, not numpy's "
                         "generator (the model overfits them: its held-out loss means nothing)")
    ap.add_argument("--prefetch", action="store_true",
                    help="pull in the tf.data pipeline, a batch ahead (Embedding.prefetch)")
    ap.add_argument("--expect-below", type=float, default=None)
    args = ap.parse_args()
    if args.workers < 1 or args.steps < 2 or args.batch < 1:
        ap.error("--workers >= 1, --steps >= 2, --batch >= 1")
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    try:
        if task.get("type") == "worker":
            run_worker(args, int(task.get("index", 0)))
            return 0
        return run_job(args)
    except (ember.Error, tf.errors.OpError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
