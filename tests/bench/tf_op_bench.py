#!/usr/bin/env python3
"""tf_op_bench.py — what the TensorFlow ops (EmberPull, EmberPush) cost over
calling libember from C on the same shapes.

Starts two ember-server shards on loopback (ember.local), creates a table (SGD,
lr 0: pushes leave rows as they are), and for each N in --keys alternates
--rounds times: A = build/tests/bench/pull_loop (ember_pull + ember_push in a C
loop), B = the same keys through the ops from Python, eagerly (etf.pull,
etf.push) and inside one tf.function per call. Reports µs per call for each and
the ratio to C, medians over the rounds.

    tests/bench/tf_op_bench.py --pull-loop build/tests/bench/pull_loop
"""

import argparse
import os
import statistics
import subprocess
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import ember
import ember.local
import ember.tensorflow as etf


def c_loop(exe, shards, n, dim, iters):
    out = subprocess.run([exe, shards, "bench", str(n), str(dim), str(iters)], check=True,
                         capture_output=True, text=True).stdout
    f = dict(kv.split("=") for kv in out.split())
    return float(f["pull_us"]), float(f["push_us"])


def tf_loop(pull, push, keys, grads, iters):
    pull(keys)
    push(keys, grads)
    tp = tq = 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        pull(keys)
        t1 = time.perf_counter()
        push(keys, grads)
        t2 = time.perf_counter()
        tp += t1 - t0
        tq += t2 - t1
    return tp / iters * 1e6, tq / iters * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pull-loop", required=True)
    ap.add_argument("--keys", default="256,4096,65536")
    ap.add_argument("--dim", type=int, default=16)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    with ember.local.LocalShards(2) as sh, ember.Client(sh.shards) as c:
        c.create_table("bench", a.dim, capacity_per_shard=1 << 18, optimizer="sgd", lr=0.0)
        print(f"dim {a.dim}, 2 shards on loopback, {a.iters} calls per round, "
              f"median of {a.rounds} rounds (A,B alternated); µs per call")
        for n in [int(x) for x in a.keys.split(",")]:
            iters = max(5, a.iters * 256 // max(n, 256))
            keys = tf.constant(np.arange(n, dtype=np.int64) * 7919)
            grads = tf.zeros([n, a.dim])

            def eager_pull(k):
                return etf.pull(k, "bench", a.dim, shards=sh.shards)

            def eager_push(k, g):
                etf.push(k, g, "bench", a.dim, shards=sh.shards)

            fn_pull, fn_push = tf.function(eager_pull), tf.function(eager_push)
            res = {"C": [], "eager": [], "tf.function": []}
            for _ in range(a.rounds):
                res["C"].append(c_loop(a.pull_loop, sh.shards, n, a.dim, iters))
                res["eager"].append(tf_loop(eager_pull, eager_push, keys, grads, iters))
                res["tf.function"].append(tf_loop(fn_pull, fn_push, keys, grads, iters))
            med = {k: tuple(statistics.median(x[i] for x in v) for i in (0, 1))
                   for k, v in res.items()}
            cp, cq = med["C"]
            line = f"N={n:6d}: C pull {cp:8.1f} push {cq:8.1f}"
            for k in ("eager", "tf.function"):
                p, q = med[k]
                line += f" | {k} pull {p:8.1f} ({p / cp:.2f}x) push {q:8.1f} ({q / cq:.2f}x)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
