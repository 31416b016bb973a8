"""click_data.py — the generated click data of the demos (dlrm_demo.py,
tf_ps_worker.py), so that the answer is known.

Each example has FIELDS categorical fields (one id each, Zipf-distributed over
`vocab` ranks, as in click logs), a bag of 1..TAGS_MAX tags (Zipf too), and DENSE
dense features. A planted model gives each example its click probability: a bias
per id, pairwise dot products of a K_PLANTED-vector per id (a factorization
machine over the fields), the tags' mean bias and a linear term in the dense
features, through the logistic function; the label is drawn from it.
"""

import numpy as np

FIELDS = 4
TAGS_MAX = 4
DENSE = 4
K_PLANTED = 4


class ClickData:
    """The generator and its planted model (all numpy, seeded)."""

    def __init__(self, vocab, zipf, seed):
        rng = np.random.default_rng(seed)
        self.vocab = vocab
        w = 1.0 / np.arange(1, vocab + 1) ** zipf
        self.cdf = np.cumsum(w) / w.sum()
        # Rank -> id: scattered, so that the hot ids are not 0, 1, 2, ...
        self.ids = [rng.permutation(vocab).astype(np.int64) * 7919 + f for f in range(FIELDS + 1)]
        self.bias = rng.normal(0.0, 0.6, (FIELDS, vocab))
        self.vec = rng.normal(0.0, 0.45, (FIELDS, vocab, K_PLANTED))
        self.tag_bias = rng.normal(0.0, 0.8, vocab)
        self.dense_w = rng.normal(0.0, 0.5, DENSE)
        self.offset = -1.6

    def _ranks(self, rng, n):
        return np.minimum(np.searchsorted(self.cdf, rng.random(n)), self.vocab - 1)

    def batch(self, rng, n):
        """(field ids (n, FIELDS), tags (m,), tag offsets (n,), dense (n, DENSE),
        labels (n,), planted probabilities (n,))."""
        ranks = np.stack([self._ranks(rng, n) for _ in range(FIELDS)], axis=1)
        ids = np.stack([self.ids[f][ranks[:, f]] for f in range(FIELDS)], axis=1)
        lens = rng.integers(1, TAGS_MAX + 1, n)
        offsets = np.concatenate([[0], np.cumsum(lens)[:-1]])
        tag_ranks = self._ranks(rng, int(lens.sum()))
        tags = self.ids[FIELDS][tag_ranks]
        dense = rng.normal(0.0, 1.0, (n, DENSE))

        logit = self.offset + dense @ self.dense_w
        v = np.stack([self.vec[f, ranks[:, f]] for f in range(FIELDS)], axis=1)  # (n, F, k)
        for f in range(FIELDS):
            logit += self.bias[f, ranks[:, f]]
            for g in range(f + 1, FIELDS):
                logit += (v[:, f] * v[:, g]).sum(1)
        logit += np.add.reduceat(self.tag_bias[tag_ranks], offsets) / lens
        p = 1.0 / (1.0 + np.exp(-logit))
        y = (rng.random(n) < p).astype(np.float32)
        return ids, tags, offsets, dense.astype(np.float32), y, p
