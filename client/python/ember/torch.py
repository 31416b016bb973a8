"""ember.torch: PyTorch embedding modules whose rows live on ember's shards.

    emb = ember.torch.Embedding(client, "user", dim=16)
    bag = ember.torch.EmbeddingBag(client, "tags", dim=16, mode="mean")
    model = torch.nn.Sequential(...)                  # the dense part
    opt = torch.optim.Adam(model.parameters())        # dense parameters only

    for ids, tags, offsets, y in batches:
        x = torch.cat([emb(ids), bag(tags, offsets)], dim=1)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()          # also pushes the rows' gradients to ember
        opt.step()

forward() pulls the batch's rows (training: find_or_insert, new ids get the
table's initializer; eval(): find, missing ids read as their initial rows
and nothing is created); backward() pushes the gradient of every looked-up row to the table,
whose server-side optimizer (SGD, Adagrad, Adam, FTRL, set at create_table)
updates it. libember sums the gradients of an id that occurs several times, so
the server sees exactly the gradient torch computed for that row. The modules
have no torch parameters: the sparse part is the server's, the dense part trains
with any torch optimizer, and checkpoints of the sparse part are client.save().

prefetch(next_ids) starts the next batch's pull (ember_pull_async) so its rows
travel while this batch computes; forward(next_ids) then waits for them instead
of pulling. Those rows are read before this step's push lands: the one-step
staleness every asynchronous parameter server has.

A shard that is down or restarting is waited for, by forward, backward and
the prefetch's wait alike, up to the client's retry budget
(ember.Client(retry_budget_s=...), README "Failures"), so training rides through
a shard's restart.

Ids are integer tensors of any shape on any device (int64 ids are ember's
uint64 keys bit for bit); rows come back on the ids' device, float32.

Scores, epochs, found flags (tables created with scores="custom", "epoch_lru"
or "epoch_lfu"): forward(ids, scores=s) sends one uint64 score per id (s shaped
like ids) with the training pull and again with backward's push, so a CUSTOM
table evicts by the caller's scores (of equal ids the last one's wins). Setting
module.epoch = e (a day, a pass) stamps every push with it: each shard's table
epoch moves up to e (never down). Embedding(..., track_found=True) asks every
pull which ids existed before it: module.found is then a bool tensor shaped like
the last forward's ids. A forward with scores or track_found pulls itself (a
prefetch for it is dropped: async pulls carry neither).
"""

import numpy as np
import torch
import torch.nn.functional as F

from .client import as_keys
from .errors import Code, InvalidArgumentError


class _PushGrad(torch.autograd.Function):
    """Identity on the pulled rows whose backward pushes their gradient."""

    @staticmethod
    def forward(ctx, rows, module, keys, scores):
        ctx.module = module
        ctx.keys = keys
        ctx.scores = scores
        return rows.view_as(rows)

    @staticmethod
    def backward(ctx, grad):
        ctx.module._push(ctx.keys, grad, ctx.scores)
        ctx.module = ctx.keys = ctx.scores = None
        return None, None, None, None


def _ids_to_keys(ids, copy=False):
    """(ids on the CPU as int64, their uint64 view) for an integer tensor/array."""
    if not torch.is_tensor(ids):
        a = np.asarray(ids)
        ids = torch.as_tensor(a.view(np.int64) if a.dtype == np.uint64 else a)
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"ids must be integers, not {ids.dtype}")
    ids = ids.detach().to("cpu", torch.int64).contiguous()
    if copy:
        ids = ids.clone()
    return ids, as_keys(ids.numpy())


def _scores_to_array(scores, keys):
    """scores (a tensor or array, one per id) as a uint64 array shaped like keys."""
    if scores is None:
        return None
    if torch.is_tensor(scores):
        if scores.dtype.is_floating_point or scores.dtype == torch.bool:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"scores must be integers, not {scores.dtype}")
        scores = scores.detach().to("cpu", torch.int64).contiguous().numpy()
    s = np.asarray(scores)
    if s.size != keys.size:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                   f"scores: {s.size} values for {keys.size} ids")
    if s.dtype.kind == "i" and s.size and int(s.min()) < 0:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT, "scores must not be negative")
    if s.dtype.kind not in "iu" and s.size:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"scores must be integers, not {s.dtype}")
    return np.ascontiguousarray(s.astype(np.uint64)).reshape(keys.shape)


class Embedding(torch.nn.Module):
    """Looks up rows of ember table `table` (dim `dim`): forward(ids) returns a
    float32 tensor of shape ids.shape + (dim,). create: None when the table
    exists, or create_table's keyword arguments (capacity_per_shard, optimizer,
    lr, initializer, ...) to create it if it does not. Counters: pulls, pushes,
    prefetch_hits (forward calls served by a prefetch). epoch: stamped on every
    push (0: the tables' own). track_found: record module.found on each pull."""

    def __init__(self, client, table, dim, *, create=None, epoch=0, track_found=False):
        super().__init__()
        self.client = client
        self.table = table
        self.dim = int(dim)
        self.epoch = int(epoch)
        self.track_found = bool(track_found)
        self.found = None
        if create is not None:
            client.create_table(table, self.dim, if_not_exists=True, **create)
        self._prefetched = None
        self.pulls = self.pushes = self.prefetch_hits = 0

    def extra_repr(self):
        return f"table={self.table!r}, dim={self.dim}"

    # ---- pulls -------------------------------------------------------------------

    def prefetch(self, ids):
        """Starts pulling the rows of `ids` (a coming batch) and returns at once;
        the next forward() with the same ids uses them. A prefetch not used by
        the next forward is dropped."""
        self._drop_prefetch()
        _, keys = _ids_to_keys(ids, copy=True)
        pending = self.client.pull_async(self.table, keys, self.dim, insert=self.training)
        self._prefetched = (keys, pending, self.training)

    def _drop_prefetch(self):
        p, self._prefetched = self._prefetched, None
        if p is not None:
            try:
                p[1].wait()
            except Exception:
                pass

    def _pull(self, keys, scores=None):
        insert = self.training
        if (scores is not None and insert) or self.track_found:
            self._drop_prefetch()
            self.pulls += 1
            r = self.client.pull(self.table, keys, self.dim, insert=insert,
                                 scores=scores if insert else None,
                                 return_found=self.track_found)
            if self.track_found:
                r, found = r
                self.found = torch.from_numpy(found)
            return r
        p, self._prefetched = self._prefetched, None
        if p is not None:
            pkeys, pending, pinsert = p
            rows = pending.wait()
            if pinsert == insert and pkeys.size == keys.size and \
                    np.array_equal(pkeys.ravel(), keys.ravel()):
                self.prefetch_hits += 1
                return rows.reshape(keys.shape + (self.dim,))
        self.pulls += 1
        return self.client.pull(self.table, keys, self.dim, insert=insert)

    def _lookup(self, ids, scores=None):
        """The rows of ids on the CPU, wired for a push on backward."""
        _, keys = _ids_to_keys(ids)
        s = _scores_to_array(scores, keys)
        rows = torch.from_numpy(self._pull(keys, s))
        if self.training and torch.is_grad_enabled():
            rows.requires_grad_(True)
            rows = _PushGrad.apply(rows, self, keys, s)
        return rows

    def forward(self, ids, scores=None):
        device = ids.device if torch.is_tensor(ids) else torch.device("cpu")
        return self._lookup(ids, scores).to(device)

    # ---- pushes ------------------------------------------------------------------

    def _push(self, keys, grad, scores=None):
        g = grad.detach().to("cpu", torch.float32).contiguous().numpy()
        self.client.push(self.table, keys, g.reshape(keys.shape + (self.dim,)), scores=scores,
                         epoch=self.epoch)
        self.pushes += 1

    def train(self, mode=True):
        # A prefetch made in the other mode would pull with the wrong flag.
        if mode != self.training:
            self._drop_prefetch()
        return super().train(mode)


class _PooledBag(torch.autograd.Function):
    """The bags' vectors pulled pooled; backward pushes one gradient per bag."""

    @staticmethod
    def forward(ctx, vecs, module, keys, offsets, weights):
        ctx.module, ctx.bag = module, (keys, offsets, weights)
        return vecs.view_as(vecs)

    @staticmethod
    def backward(ctx, grad):
        ctx.module._push_pooled(ctx.bag, grad)
        ctx.module = ctx.bag = None
        return None, None, None, None, None


class EmbeddingBag(Embedding):
    """Sums or averages bags of rows, as torch.nn.EmbeddingBag does: forward(input,
    offsets=None, per_sample_weights=None) with input 2-D (B, L: B bags of L
    ids) and no offsets, or input 1-D with offsets (B,) where each bag starts
    (include_last_offset: offsets has B+1 entries, the last the end). mode:
    "sum" or "mean" (an empty bag is zeros). per_sample_weights scale the rows
    ("sum" only). Returns (B, dim) float32 on the input's device; backward
    pushes each looked-up row's gradient, as Embedding.

    pooled=True pools on the servers (Client.pull_pooled): each shard returns
    one vector per bag instead of one row per id, and backward pushes one
    gradient per bag (Client.push_pooled), which the servers spread over the
    bag's ids. mode may then also be "sqrtn", and per_sample_weights work with
    every mode, as TensorFlow's embedding_lookup_sparse weighs them: mean =
    Σ w·x / Σ w, sqrtn = Σ w·x / sqrt(Σ w²) (README "Pooled lookups"); the
    weights get no gradient, and prefetch() is not available."""

    def __init__(self, client, table, dim, mode="mean", *, include_last_offset=False,
                 pooled=False, create=None, epoch=0, track_found=False):
        modes = ("sum", "mean", "sqrtn") if pooled else ("sum", "mean")
        if mode not in modes:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"mode {mode!r}: {' or '.join(modes)}"
                                       + ("" if pooled else " (sqrtn needs pooled=True)"))
        super().__init__(client, table, dim, create=create, epoch=epoch,
                         track_found=track_found)
        self.mode = mode
        self.include_last_offset = include_last_offset
        self.pooled = bool(pooled)

    def extra_repr(self):
        return super().extra_repr() + f", mode={self.mode!r}" + (", pooled" if self.pooled else "")

    def prefetch(self, input, offsets=None):
        """As Embedding.prefetch, for forward(input, offsets)."""
        if self.pooled:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       "prefetch is not available with pooled=True")
        flat = input.reshape(-1) if torch.is_tensor(input) else np.asarray(input).reshape(-1)
        super().prefetch(flat)

    def _csr(self, input, offsets):
        """(keys, CSR offsets of B + 1 entries) of forward's input."""
        if input.dim() == 2:
            b, length = input.shape
            csr = np.arange(b + 1, dtype=np.uint64) * np.uint64(length)
        else:
            o = offsets.detach().to("cpu", torch.int64).numpy()
            if not self.include_last_offset:
                o = np.append(o, input.numel())
            csr = o
        _, keys = _ids_to_keys(input.reshape(-1))
        return keys, csr

    def _forward_pooled(self, input, offsets, per_sample_weights):
        keys, csr = self._csr(input, offsets)
        w = None
        if per_sample_weights is not None:
            w = per_sample_weights.detach().to("cpu", torch.float32).reshape(-1).contiguous()
            w = w.numpy()
        self.pulls += 1
        vecs = torch.from_numpy(self.client.pull_pooled(
            self.table, keys, csr, self.mode, weights=w, dim=self.dim, insert=self.training))
        if self.training and torch.is_grad_enabled():
            vecs.requires_grad_(True)
            vecs = _PooledBag.apply(vecs, self, keys, csr, w)
        return vecs.to(input.device)

    def _push_pooled(self, bag, grad):
        keys, csr, w = bag
        g = grad.detach().to("cpu", torch.float32).contiguous().numpy()
        self.client.push_pooled(self.table, keys, csr, g, self.mode, weights=w)
        self.pushes += 1

    def forward(self, input, offsets=None, per_sample_weights=None, scores=None):
        if not torch.is_tensor(input):
            a = np.asarray(input)
            input = torch.as_tensor(a.view(np.int64) if a.dtype == np.uint64 else a)
        device = input.device
        if input.dim() == 2:
            if offsets is not None:
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           "offsets must be None for a 2-D input")
            idx = torch.arange(input.numel(), device=device).view(input.shape)
        elif input.dim() == 1:
            if offsets is None:
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           "a 1-D input needs offsets (where each bag starts)")
            idx = torch.arange(input.numel(), device=device)
            offsets = offsets.to(device)
        else:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"input must be 1-D or 2-D, not {input.dim()}-D")
        if self.pooled:
            if scores is not None:
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           "scores are not available with pooled=True")
            return self._forward_pooled(input, offsets, per_sample_weights)
        if scores is not None:
            scores = scores.reshape(-1) if torch.is_tensor(scores) else \
                np.asarray(scores).reshape(-1)
        rows = self._lookup(input.reshape(-1), scores).to(device)
        if per_sample_weights is not None:
            per_sample_weights = per_sample_weights.reshape(idx.shape).to(device, rows.dtype)
        return F.embedding_bag(idx, rows, offsets, mode=self.mode,
                               per_sample_weights=per_sample_weights,
                               include_last_offset=self.include_last_offset)
