#!/usr/bin/env python3
"""dlrm_demo.py — a small DLRM-style click model trained through ember from PyTorch.

The data is generated, so the answer is known. Each example has 4 categorical
fields (one id each, Zipf-distributed over --vocab ranks, as in click logs), a
bag of 1-4 tags (Zipf too), and 4 dense features. A planted model gives each
example its click probability: a bias per id, pairwise dot products of a
4-vector per id (a factorization machine over the fields), the tags' mean bias
and a linear term in the dense features, through the logistic function; the
label is drawn from it.

The learned model is DLRM's shape (Naumov et al. 2019): one ember table per
field (ember.torch.Embedding) and one for the tags (ember.torch.EmbeddingBag,
mean), their rows living on the shards and trained by the servers' Adagrad; a
bottom MLP over the dense features; the pairwise dot products of all these
vectors; a top MLP to the logit. Only the MLPs are torch parameters (Adam). Each
step prefetches the next batch's rows (module.prefetch) before computing this
one, pulls and pushes through libember, and prints the training log loss now
and then. At the end it prints, on held-out examples, the learned model's log
loss next to the base rate's (a constant click rate: what a model that learned
nothing scores) and the planted model's (the floor).

Shards: --shards host:port,..., else EMBER_SHARDS or TF_CONFIG, else two local
ember-server processes started for the run (ember.local; the server binary from
--server, EMBER_SERVER_BIN or this checkout's build tree).

Exit status: 0 done (with --expect-below M: the held-out loss is at least M
under the base rate's); 1 an ember call failed or the expectation was not met;
2 bad usage.
"""

import argparse
import os
import sys
import time

import numpy as np

try:
    import ember
except ImportError:  # run from the checkout without installing
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import ember
import ember.local

import torch
import ember.torch as et

from click_data import DENSE, FIELDS, ClickData  # noqa: E402  (beside this file)


class DLRM(torch.nn.Module):
    def __init__(self, client, prefix, dim, create):
        super().__init__()
        self.fields = torch.nn.ModuleList(
            et.Embedding(client, f"{prefix}_f{f}", dim, create=create) for f in range(FIELDS))
        self.tags = et.EmbeddingBag(client, f"{prefix}_tags", dim, mode="mean", create=create)
        self.bottom = torch.nn.Sequential(
            torch.nn.Linear(DENSE, 32), torch.nn.ReLU(), torch.nn.Linear(32, dim), torch.nn.ReLU())
        nvec = FIELDS + 2
        self.pairs = torch.triu_indices(nvec, nvec, offset=1)
        self.top = torch.nn.Sequential(
            torch.nn.Linear(dim + self.pairs.shape[1], 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))

    def prefetch(self, batch):
        ids, tags, offsets = batch[:3]
        for f, m in enumerate(self.fields):
            m.prefetch(torch.from_numpy(ids[:, f]))
        self.tags.prefetch(torch.from_numpy(tags), torch.from_numpy(offsets))

    def forward(self, ids, tags, offsets, dense):
        d = self.bottom(torch.from_numpy(dense))
        vecs = [d] + [m(torch.from_numpy(ids[:, f])) for f, m in enumerate(self.fields)]
        vecs.append(self.tags(torch.from_numpy(tags), torch.from_numpy(offsets)))
        z = torch.stack(vecs, dim=1)                        # (B, F+2, dim)
        dots = torch.bmm(z, z.transpose(1, 2))[:, self.pairs[0], self.pairs[1]]
        return self.top(torch.cat([d, dots], dim=1)).squeeze(1)


def logloss(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", help="host:port,... (default: EMBER_SHARDS, TF_CONFIG, "
                    "else two local servers)")
    ap.add_argument("--server", help="ember-server for the local shards")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--dim", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=20000)
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--lr", type=float, default=0.15, help="the tables' Adagrad lr")
    ap.add_argument("--dense-lr", type=float, default=0.01, help="the MLPs' Adam lr")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--table-prefix", default="dlrm")
    ap.add_argument("--eval-examples", type=int, default=20000)
    ap.add_argument("--log-every", type=int, default=250)
    ap.add_argument("--retry-budget", type=float, metavar="S", default=None,
                    help="how long a call keeps retrying a shard that is down or restarting, "
                         "seconds (default: EMBER_RETRY_BUDGET, else 120; 0: none)")
    ap.add_argument("--expect-below", type=float, metavar="M",
                    help="exit 1 unless the held-out loss is at least M under the base rate's")
    a = ap.parse_args(argv)
    if a.steps < 1 or a.batch < 1 or a.dim < 1 or a.vocab < 2:
        ap.error("steps, batch, dim must be >= 1 and vocab >= 2")
    return a


def train(a, client):
    torch.manual_seed(a.seed)
    data = ClickData(a.vocab, a.zipf, a.seed)
    create = dict(capacity_per_shard=4 * a.vocab, optimizer="adagrad", lr=a.lr,
                  initializer=("normal", 0.0, 0.05), seed=a.seed)
    for f in [f"_f{i}" for i in range(FIELDS)] + ["_tags"]:
        client.drop_table(a.table_prefix + f, if_exists=True)  # a fresh model each run
    model = DLRM(client, a.table_prefix, a.dim, create)
    opt = torch.optim.Adam(model.parameters(), lr=a.dense_lr)
    lossf = torch.nn.BCEWithLogitsLoss()
    rng = np.random.default_rng(a.seed + 1)

    print(f"ember: {client.shard_count} shards ({', '.join(client.shard_addresses)}, from "
          f"{client.shard_source}); {FIELDS} field tables + 1 tag table, dim {a.dim}")
    print(f"{'step':>8} {'logloss':>10} {'examples/s':>12}")
    seen_y = []
    nxt = data.batch(rng, a.batch)
    t0 = time.monotonic()
    tl, acc, n_acc = t0, 0.0, 0
    for step in range(1, a.steps + 1):
        cur, nxt = nxt, data.batch(rng, a.batch)
        model.prefetch(nxt[:3])                  # its rows travel while this batch computes
        ids, tags, offsets, dense, y, _ = cur
        logit = model(ids, tags, offsets, dense)
        loss = lossf(logit, torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()                          # pushes the rows' gradients to ember
        opt.step()
        seen_y.append(y.mean())
        acc += float(loss)
        n_acc += 1
        if step % a.log_every == 0 or step == a.steps:
            now = time.monotonic()
            print(f"{step:>8} {acc / n_acc:>10.4f} {n_acc * a.batch / (now - tl):>12.0f}",
                  flush=True)
            tl, acc, n_acc = now, 0.0, 0
    for m in list(model.fields) + [model.tags]:
        m._drop_prefetch()                       # the last, unused prefetch
    elapsed = time.monotonic() - t0

    # Held-out: serving pulls (eval: unseen ids are not created).
    model.eval()
    ev = data.batch(np.random.default_rng(a.seed + 2), a.eval_examples)
    ids, tags, offsets, dense, y, p_true = ev
    with torch.no_grad():
        p_model = torch.sigmoid(model(ids, tags, offsets, dense)).numpy()
    rate = float(np.mean(seen_y))
    base = logloss(y, np.full_like(p_true, rate))
    learned = logloss(y, p_model)
    floor = logloss(y, p_true)
    print(f"\ntrained {a.steps} steps x {a.batch} in {elapsed:.1f} s; held-out log loss on "
          f"{a.eval_examples} examples:")
    print(f"  model      {learned:.4f}")
    print(f"  base rate  {base:.4f}   (a constant click rate of {rate:.3f})")
    print(f"  planted    {floor:.4f}   (the generating model: the floor)")
    return learned, base, floor


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(1)  # the shards share this machine's cores
    shards = a.shards or os.environ.get("EMBER_SHARDS") or None
    local = None
    try:
        if shards is None and not os.environ.get("TF_CONFIG"):
            local = ember.local.LocalShards(2, server=a.server).start()
            shards = local.addresses
        # The default retry budget rides through a shard's restart (README "Failures").
        with ember.Client(shards, retry_budget_s=a.retry_budget) as client:
            learned, base, _ = train(a, client)
    except ember.Error as e:
        print(f"dlrm_demo: {e}", file=sys.stderr)
        return 1
    finally:
        if local is not None:
            local.stop()
    if a.expect_below is not None and not learned <= base - a.expect_below:
        print(f"dlrm_demo: FAILED: held-out loss {learned:.4f} is not {a.expect_below} under the "
              f"base rate's {base:.4f}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
