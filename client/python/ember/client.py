"""ember.Client: libember's ember_client with numpy arrays in and out.

Arrays go to libember by address: keys that are already a C-contiguous uint64
(or int64, reinterpreted bit for bit) array and rows/gradients that are already
C-contiguous float32 are never copied in Python; any other dtype or layout is
converted once. Results are written straight into the array returned (or the
`out=` array given).
"""

import ctypes
import threading
from typing import NamedTuple

import numpy as np

from . import _lib
from .errors import Code, Error, FailedPreconditionError, InvalidArgumentError, UnimplementedError

PULL_INSERT = 0  # training: missing keys are created (find_or_insert)
PULL_SERVE = 1   # serving: missing keys are not created (find)
PULL_FOLLOWER = 2  # with PULL_SERVE: read from a follower ("leader|follower" shards)

_DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2}
# The values of ember_optim_kind, ember_init_kind and ember_score_policy
# (include/ember/types.h).
_OPTIMIZERS = {"sgd": 0, "adagrad": 1, "adam": 2, "ftrl": 3}
_INITIALIZERS = {"zeros": 0, "constant": 1, "uniform": 2, "normal": 3, "truncated_normal": 4}
_SCORES = {"lru": 0, "lfu": 1, "epoch_lru": 2, "epoch_lfu": 3, "custom": 4}
_PUSH_MODES = {"gradients": 0, "assign": 1, "accum": 2, "insert_or_assign": 3}
# Acknowledgement (README "Replication and failover"): None = the table's.
_ACKS = {None: 0, "async": 1, "replicated": 2}


def _ack_of(ack, replicas):
    if ack not in _ACKS:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                   f"ack {ack!r}: None, 'async' or 'replicated'")
    r = int(replicas)
    if not 0 <= r <= 32:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"ack_replicas {r}: 0..32")
    return _ACKS[ack], r
# ember_combiner (ember.h): how a pooled call combines a bag's rows.
COMBINERS = {"sum": 1, "mean": 2, "sqrtn": 3}


class TableInfo(NamedTuple):
    """A table summed over the shards (ember_table_info)."""

    name: str
    dim: int
    size: int
    capacity: int
    load_factor: float
    evictions: int
    admission_drops: int
    version_max: int


def _info(ci):
    return TableInfo(ci.name.decode(), ci.dim, ci.size, ci.capacity, ci.load_factor,
                     ci.evictions, ci.admission_drops, ci.version_max)


def _raise(rv, err):
    shard = err.shard if err.shard >= 0 else None
    msg = err.message.decode("utf-8", "replace") or Code(rv).name
    raise Error.of(rv, msg, shard)


def _bytes(s, what):
    if s is None:
        return None
    if isinstance(s, bytes):
        return s
    if not isinstance(s, str):
        raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"{what} must be a str, not {type(s).__name__}")
    return s.encode()


def as_keys(keys):
    """keys as a C-contiguous uint64 array, without a copy when it already is one
    (or an int64 one: signed keys are their two's complement, so torch's int64
    ids cover the whole uint64 key space)."""
    a = np.asarray(keys)
    if a.dtype == np.uint64:
        pass
    elif a.dtype == np.int64:
        a = a.view(np.uint64)
    elif a.dtype.kind in "iu":
        a = a.astype(np.int64).view(np.uint64) if a.dtype.kind == "i" else a.astype(np.uint64)
    elif a.size == 0:
        a = a.astype(np.uint64)
    else:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                   f"keys must be integers, not {a.dtype}")
    return np.ascontiguousarray(a)


def _as_rows(values, n, dim, what):
    a = np.ascontiguousarray(values, dtype=np.float32)
    if a.size != n * dim:
        raise InvalidArgumentError(
            Code.INVALID_ARGUMENT,
            f"{what}: {a.size} values for {n} keys of dim {dim} (want {n * dim})")
    return a


def _rows_for(k, values, what):
    """values for keys k: shaped k.shape + (dim,) (or any shape with more axes
    than the keys, the last being dim), or flat n*dim. Returns (array, dim)."""
    v = np.asarray(values)
    if v.ndim > k.ndim:
        d = int(v.shape[-1])
    else:
        d = v.size // k.size if k.size else 1  # nothing is sent for no keys
    return _as_rows(v, k.size, d, what), d


def _scores_for(k, scores):
    """scores for keys k as a C-contiguous uint64 array of k.size (any shape
    holding one per key), or None."""
    if scores is None:
        return None
    s = np.asarray(scores)
    if s.dtype.kind not in "iu" and s.size:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                   f"scores must be integers, not {s.dtype}")
    if s.dtype.kind == "i" and s.size and int(s.min()) < 0:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT, "scores must not be negative")
    s = np.ascontiguousarray(s.astype(np.uint64, copy=False)).reshape(-1)
    if s.size != k.size:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                   f"scores: {s.size} values for {k.size} keys")
    return s


def _check_out(out, n, dim):
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 or \
            not out.flags.c_contiguous or not out.flags.writeable:
        raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                   "out must be a writeable C-contiguous float32 array")
    if out.size != n * dim:
        raise InvalidArgumentError(
            Code.INVALID_ARGUMENT, f"out holds {out.size} floats, want {n} keys x dim {dim}")
    return out


class Pending:
    """An async pull or push in flight (ember_pull_async / ember_push_async).

    wait() collects it: a pull's rows (the array that was passed as out, or the
    one allocated for it), None for a push; or raises the call's Error. Waiting
    twice returns the same result (or raises the same error). A handle dropped
    without wait() is waited on when it is collected or when its client
    closes; the arrays it reads and writes are kept alive until then."""

    def __init__(self, client, handle, keep, result):
        self._client = client
        self._handle = handle
        self._keep = keep
        self._result = result
        self._error = None
        self._lock = threading.Lock()

    @property
    def done(self):
        """True once waited on."""
        return self._handle is None

    def wait(self):
        with self._lock:
            if self._handle is not None:
                err = _lib.ember_error()
                rv = self._client._lib.ember_wait(self._handle, ctypes.byref(err))
                self._handle = None
                self._keep = None
                self._client._forget(self)
                if rv:
                    try:
                        _raise(rv, err)
                    except Error as e:
                        self._error = e
                        self._result = None
            if self._error is not None:
                raise self._error
            return self._result

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            try:
                self.wait()
            except Exception:
                pass


class Client:
    """One ember_client over all shards; thread-safe (libember's calls are).

    shards: "host:port,host:port" or a list of addresses, in shard order. When
    None the library looks, in order, at shard_pattern/shard_count, then the
    environment: EMBER_SHARDS, TF_CONFIG's cluster.ps list, EMBER_SHARD_PATTERN
    with EMBER_SHARD_COUNT (see ember.h; .shard_source says which one won).
    timeout_ms: each attempt's deadline (0: 10 s; with retry_budget_s=0, each
    call's, retries included). wire_dtype:
    "float32", "float16" or "bfloat16" on the wire; arrays are float32 in memory
    either way. client_id: 0 for a random one. Security (README, "Securing a
    deployment"): tls_ca, tls_cert, tls_key (PEM file paths; TLS when tls_ca or
    tls_cert is set, mutual TLS with cert and key), tls_server_name, and the
    bearer token (token, or token_file); each unset one falls back to its
    variable (EMBER_TLS_CA, EMBER_TLS_CERT, EMBER_TLS_KEY, EMBER_TLS_SERVER_NAME,
    EMBER_TOKEN, EMBER_TOKEN_FILE). Raises ember.Error (InvalidArgumentError for
    bad options, unreadable TLS or token files, or no shards at all).

    retry_budget_s: how long a pull or push (sync, async, a module's prefetch)
    keeps retrying a shard that is down or restarting, with backoff up to 2 s;
    timeout_ms is then each attempt's deadline (README "Failures"). None: the
    environment's EMBER_RETRY_BUDGET, else 120 s; 0: no budget (max_retries
    quick retries within one deadline). on_shard_notice(shard, address,
    available, message) is called once when a shard goes unavailable (available
    False) and once when it is back, from the thread of the call that saw it;
    None prints the message on stderr (EMBER_RETRY_QUIET=1 silences it).

    Use as a context manager or call close(); close() first waits for any
    async call still pending (cancel() first makes that prompt; leaving the
    with block on an exception does so). Closing from another thread while a
    call waits cancels it: it raises CancelledError."""

    def __init__(self, shards=None, *, shard_pattern=None, shard_count=0, timeout_ms=0,
                 max_retries=0, wire_dtype="float32", client_id=0, channels_per_shard=0,
                 tls_ca=None, tls_cert=None, tls_key=None, tls_server_name=None,
                 token=None, token_file=None, retry_budget_s=None, on_shard_notice=None):
        self._lib = _lib.lib()
        self._c = None
        self._dims = {}
        self._pending = set()
        self._mu = threading.Lock()
        if isinstance(shards, (list, tuple)):
            shards = ",".join(shards)
        if wire_dtype not in _DTYPES:
            raise InvalidArgumentError(
                Code.INVALID_ARGUMENT,
                f"wire_dtype {wire_dtype!r}: one of {', '.join(_DTYPES)}")
        o = _lib.new_growable(_lib.ember_client_options)
        self._lib.ember_client_options_init(ctypes.byref(o))
        _lib.sized(o)
        # Kept referenced while ember_client_open reads them.
        self._opt_strings = (_bytes(shards, "shards"), _bytes(shard_pattern, "shard_pattern"))
        o.shards, o.shard_pattern = self._opt_strings
        sec = tuple(_bytes(v, n) for v, n in (
            (tls_ca, "tls_ca"), (tls_cert, "tls_cert"), (tls_key, "tls_key"),
            (tls_server_name, "tls_server_name"), (token, "token"), (token_file, "token_file")))
        (o.tls_ca, o.tls_cert, o.tls_key, o.tls_server_name, o.token,
         o.token_file) = sec  # the channels copy them: not kept here
        o.shard_count = shard_count
        o.timeout_ms = timeout_ms
        o.max_retries = max_retries
        o.wire_dtype = _DTYPES[wire_dtype]
        o.client_id = client_id
        o.channels_per_shard = channels_per_shard
        if retry_budget_s is None:
            o.retry_budget_ms = _lib.RETRY_BUDGET_DEFAULT
        else:
            try:
                ms = float(retry_budget_s) * 1000.0
            except (TypeError, ValueError):
                ms = float("nan")
            if not 0 <= ms <= 2**31 - 1:
                raise InvalidArgumentError(
                    Code.INVALID_ARGUMENT,
                    f"retry_budget_s {retry_budget_s!r}: seconds >= 0 (0: no budget), or None")
            o.retry_budget_ms = int(round(ms))
        self._notice_fn = None  # the C callback: kept alive as long as the client
        if on_shard_notice is not None:
            if not callable(on_shard_notice):
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           "on_shard_notice must be callable")

            def _notice(_arg, shard, address, available, message):
                try:
                    on_shard_notice(int(shard), address.decode(errors="replace"),
                                    bool(available), message.decode(errors="replace"))
                except Exception:  # never into C; the call's own result says more
                    pass
            self._notice_fn = _lib.SHARD_NOTICE_FN(_notice)
            o.shard_notice = ctypes.cast(self._notice_fn, ctypes.c_void_p)
        err = _lib.ember_error()
        c = self._lib.ember_client_open(ctypes.byref(o), ctypes.byref(err))
        if not c:
            _raise(err.code or Code.INTERNAL, err)
        self._c = c

    # ---- lifetime --------------------------------------------------------------

    def close(self):
        """Waits for pending async calls (their errors are dropped), then closes.
        Closing twice is fine."""
        with self._mu:
            pending = list(self._pending)
        for p in pending:
            try:
                p.wait()
            except Error:
                pass
        if self._c:
            self._lib.ember_client_close(self._c)
            self._c = None

    def cancel(self):
        """Cancels this client's calls: each one waiting now (in any thread: a
        pull, a push, a Pending.wait, retrying a down shard or in flight) and each
        one made later raises CancelledError within about 0.1 s; then only
        close() is of use. Thread-safe."""
        c = self._c
        if c and self._lib.ember_client_cancel is not None:
            self._lib.ember_client_cancel(c)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is not None:  # no waiting out a retry budget on the way out
            self.cancel()
        self.close()

    def __del__(self):
        if getattr(self, "_c", None):
            self.close()

    def _h(self):
        if not self._c:
            raise FailedPreconditionError(Code.FAILED_PRECONDITION, "the client is closed")
        return self._c

    def _forget(self, p):
        with self._mu:
            self._pending.discard(p)

    def _fn(self, name):
        fn = getattr(self._lib, name)
        if fn is None:
            raise UnimplementedError(Code.UNIMPLEMENTED,
                                     f"{self._lib.path} has no {name}: rebuild libember")
        return fn

    # ---- shards ----------------------------------------------------------------

    @property
    def shard_count(self):
        return self._lib.ember_client_shard_count(self._h())

    @property
    def shard_addresses(self):
        """The shards' addresses, in shard order."""
        h = self._h()
        return [self._lib.ember_client_shard_address(h, i).decode()
                for i in range(self._lib.ember_client_shard_count(h))]

    @property
    def shard_source(self):
        """Where the shard list came from: "options.shards", "options.shard_pattern",
        "EMBER_SHARDS", "TF_CONFIG" or "EMBER_SHARD_PATTERN"."""
        return self._fn("ember_client_shard_source")(self._h()).decode()

    @property
    def client_id(self):
        return self._lib.ember_client_id(self._h())

    def shard_of(self, key):
        """The shard that holds `key` (ember_shard_of)."""
        return shard_of(key, self.shard_count)

    # ---- pull / push -------------------------------------------------------------

    def _dim(self, table, dim, out):
        if dim is not None:
            return int(dim)
        if out is not None:
            return int(out.shape[-1]) if out.ndim else 1
        d = self._dims.get(table)
        if d is None:
            d = self.describe_table(table).dim
        return d

    def _pull_args(self, table, keys, dim, out):
        k = as_keys(keys)
        d = self._dim(table, dim, out)
        if out is None:
            out = np.empty(k.shape + (d,), dtype=np.float32)
        else:
            _check_out(out, k.size, d)
        return k, d, out

    def pull(self, table, keys, dim=None, *, out=None, insert=True, scores=None,
             return_found=False, from_follower=False):
        """The rows of `keys` (any shape): an array of shape keys.shape + (dim,),
        float32, in the keys' order, duplicates included. insert=True (training)
        creates missing keys from the table's initializer; insert=False (serving)
        creates nothing and returns their initial rows (not stored). dim: the table's (looked up
        once and cached when omitted). out: a C-contiguous float32 array to fill
        instead of a new one. Raises NotFoundError (no such table),
        InvalidArgumentError (wrong dim, reserved key), UnavailableError,
        DeadlineExceededError, ...

        scores: CUSTOM tables, training pulls only: one uint64 score per key
        (same shape as keys), set on every key the pull touches; of equal keys
        the last one's wins. return_found=True: returns (rows, found), found a
        bool array of keys.shape, True where the key existed before this pull
        (every occurrence of a key gets the same flag). from_follower=True (with
        insert=False): read each shard given as "leader|follower|..." from one of
        its followers (rows as old as its lag; README "Replication and
        failover")."""
        k, d, out = self._pull_args(table, keys, dim, out)
        flags = PULL_SERVE if not insert else PULL_INSERT
        if from_follower:
            flags |= PULL_FOLLOWER
        if scores is not None or return_found:
            return self._pull_opts(table, k, d, out, insert, scores, return_found, flags)
        err = _lib.ember_error()
        rv = self._lib.ember_pull(self._h(), _bytes(table, "table"), k.ctypes.data, k.size,
                                  out.ctypes.data, d, flags, ctypes.byref(err))
        if rv:
            _raise(rv, err)
        return out

    def _pull_opts(self, table, k, d, out, insert, scores, return_found, flags=None):
        o = _lib.new_growable(_lib.ember_pull_options)
        self._fn("ember_pull_options_init")(ctypes.byref(o))
        _lib.sized(o)
        o.flags = flags if flags is not None else PULL_SERVE if not insert else PULL_INSERT
        s = _scores_for(k, scores)
        found = np.zeros(k.shape, dtype=np.uint8) if return_found else None
        if s is not None:
            o.scores = s.ctypes.data
        if found is not None:
            o.found = found.ctypes.data
        err = _lib.ember_error()
        rv = self._fn("ember_pull_opts")(self._h(), _bytes(table, "table"), k.ctypes.data,
                                         k.size, out.ctypes.data, d, ctypes.byref(o),
                                         ctypes.byref(err))
        if rv:
            _raise(rv, err)
        return (out, found.astype(bool)) if return_found else out

    def _push_opts(self, table, k, rows, d, mode, scores, epoch, ack=None, ack_replicas=0):
        o = _lib.new_growable(_lib.ember_push_options)
        self._fn("ember_push_options_init")(ctypes.byref(o))
        _lib.sized(o)
        o.mode = _PUSH_MODES[mode]
        s = _scores_for(k, scores)
        if s is not None:
            o.scores = s.ctypes.data
        e = int(epoch)
        if not 0 <= e <= 0xFFFFFFFF:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"epoch {e}: 0..4294967295")
        o.epoch = e
        o.ack, o.ack_replicas = _ack_of(ack, ack_replicas)
        err = _lib.ember_error()
        rv = self._fn("ember_push_opts")(self._h(), _bytes(table, "table"), k.ctypes.data,
                                         k.size, rows.ctypes.data, d, ctypes.byref(o),
                                         ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def push(self, table, keys, grads, *, scores=None, epoch=0, ack=None, ack_replicas=0):
        """Applies gradients grads (keys.shape + (dim,), or n*dim floats) through
        the table's optimizer on the servers; equal keys' gradients are summed
        first. At most once on the servers, even when retried.

        scores: CUSTOM tables: one uint64 score per key (the last one's of equal
        keys wins). epoch: EPOCH_LRU/EPOCH_LFU tables: 0 = each shard's table
        epoch; above it, the table's epoch first moves up to it; at or below,
        nothing moves (only set_epoch lowers an epoch). ack: None (the table's),
        "async" (answered once applied on the leader) or "replicated" (answered
        once ack_replicas followers, 0 = the table's, hold it too; raises
        UnavailableError, nothing applied, when fewer are attached, and
        DeadlineExceededError when they do not have it in time: applied on the
        leader, not acknowledged). README "Replication and failover"."""
        k = as_keys(keys)
        if k.size == 0:
            return
        g, d = _rows_for(k, grads, "grads")
        if scores is not None or epoch or ack is not None or ack_replicas:
            return self._push_opts(table, k, g, d, "gradients", scores, epoch, ack, ack_replicas)
        err = _lib.ember_error()
        rv = self._lib.ember_push(self._h(), _bytes(table, "table"), k.ctypes.data, k.size,
                                  g.ctypes.data, d, ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def write(self, table, keys, values, *, mode="insert_or_assign", scores=None, epoch=0,
              ack=None, ack_replicas=0):
        """Writes embeddings as they are: mode "assign" (existing keys only),
        "accum" (existing keys, added) or "insert_or_assign" (creating keys).
        Of equal keys the last one's row is written (summed for accum).
        scores, epoch, ack, ack_replicas: as for push (no scores with accum)."""
        if mode not in _PUSH_MODES or mode == "gradients":
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"mode {mode!r}: assign, accum or insert_or_assign")
        k = as_keys(keys)
        if k.size == 0:
            return
        v, d = _rows_for(k, values, "values")
        if scores is not None or epoch or ack is not None or ack_replicas:
            return self._push_opts(table, k, v, d, mode, scores, epoch, ack, ack_replicas)
        err = _lib.ember_error()
        rv = self._lib.ember_push_mode_values(self._h(), _bytes(table, "table"), k.ctypes.data,
                                              k.size, v.ctypes.data, d, _PUSH_MODES[mode],
                                              ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def push_pull(self, table, push_keys, grads, pull_keys, dim=None, *, out=None, insert=True):
        """push(table, push_keys, grads) then pull(table, pull_keys) in one round
        trip per shard; the pull sees the push. Returns the pulled rows."""
        pk = as_keys(push_keys)
        k, d, out = self._pull_args(table, pull_keys, dim, out)
        g = _as_rows(grads, pk.size, d, "grads")
        err = _lib.ember_error()
        rv = self._lib.ember_push_pull(self._h(), _bytes(table, "table"), pk.ctypes.data, pk.size,
                                       g.ctypes.data, k.ctypes.data, k.size, out.ctypes.data, d,
                                       PULL_SERVE if not insert else PULL_INSERT,
                                       ctypes.byref(err))
        if rv:
            _raise(rv, err)
        return out

    def pull_async(self, table, keys, dim=None, *, out=None, insert=True):
        """Starts pull(table, keys) and returns at once with a Pending whose
        wait() returns the rows: prefetch the next batch while computing this
        one. The requests are on the wire when this returns, and the client's
        network thread receives the replies meanwhile."""
        k, d, out = self._pull_args(table, keys, dim, out)
        t = _bytes(table, "table")
        err = _lib.ember_error()
        with self._mu:
            h = self._lib.ember_pull_async(self._h(), t, k.ctypes.data, k.size, out.ctypes.data,
                                           d, PULL_SERVE if not insert else PULL_INSERT,
                                           ctypes.byref(err))
            if not h:
                _raise(err.code or Code.INTERNAL, err)
            p = Pending(self, h, (k, out), out)
            self._pending.add(p)
        return p

    def push_async(self, table, keys, grads):
        """Starts push(table, keys, grads); wait() on the Pending returns None."""
        k = as_keys(keys)
        g, d = _rows_for(k, grads, "grads")
        t = _bytes(table, "table")
        err = _lib.ember_error()
        with self._mu:
            h = self._lib.ember_push_async(self._h(), t, k.ctypes.data, k.size, g.ctypes.data, d,
                                           ctypes.byref(err))
            if not h:
                _raise(err.code or Code.INTERNAL, err)
            p = Pending(self, h, (k, g), None)
            self._pending.add(p)
        return p

    # ---- erase, epochs -------------------------------------------------------------

    def erase(self, table, keys):
        """Removes `keys` (any shape) from the table, each on its shard; returns
        how many existed (equal keys count once). A reserved key refuses the
        whole call before anything is sent (InvalidArgumentError); NotFoundError
        for an unknown table. At most once on the servers, even when retried
        (a retried shard's part then counts 0)."""
        k = as_keys(keys)
        n = _lib._u64(0)
        err = _lib.ember_error()
        rv = self._fn("ember_erase")(self._h(), _bytes(table, "table"),
                                     k.ctypes.data if k.size else None, k.size,
                                     ctypes.byref(n), ctypes.byref(err))
        if rv:
            _raise(rv, err)
        return int(n.value)

    def set_epoch(self, table, epoch):
        """Sets the table's epoch on every shard: the high 32 bits of
        EPOCH_LRU/EPOCH_LFU scores, so keys not touched since an older epoch
        are evicted first. Any value 0..2**32-1, lower ones included.
        Checkpoints keep it."""
        e = int(epoch)
        if not 0 <= e <= 0xFFFFFFFF:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"epoch {e}: 0..4294967295")
        err = _lib.ember_error()
        rv = self._fn("ember_set_epoch")(self._h(), _bytes(table, "table"), e, ctypes.byref(err))
        if rv:
            _raise(rv, err)

    # ---- pooled lookups ------------------------------------------------------------

    def _bags(self, keys, offsets, weights, combiner):
        k = as_keys(keys).reshape(-1)
        o = np.asarray(offsets)
        if o.ndim != 1 or o.size < 1 or o.dtype.kind not in "iu":
            raise InvalidArgumentError(
                Code.INVALID_ARGUMENT,
                "offsets: a 1-D integer array of bags + 1 entries (CSR: the last is len(keys))")
        if o.dtype.kind == "i" and o.size and o.min() < 0:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT, "offsets must not be negative")
        o = np.ascontiguousarray(o, dtype=np.uint64)
        w = None
        if weights is not None:
            w = np.ascontiguousarray(weights, dtype=np.float32).reshape(-1)
            if w.size != k.size:
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           f"weights: {w.size} values for {k.size} keys")
        if combiner not in COMBINERS:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"combiner {combiner!r}: one of {', '.join(COMBINERS)}")
        return k, o, w

    def pull_pooled(self, table, keys, offsets, combiner="sum", *, weights=None, dim=None,
                    out=None, insert=True):
        """One combined vector per bag, pooled on the servers: bag b is
        keys[offsets[b]:offsets[b+1]] (offsets: bags + 1 integers, starting at 0,
        never decreasing, ending at len(keys)). combiner: "sum" (Σ w·x), "mean"
        ((Σ w·x)/Σ w) or "sqrtn" ((Σ w·x)/sqrt(Σ w²)), with weights (one float per
        key, finite; None: all 1) — TensorFlow's embedding_lookup_sparse; an
        empty bag (or a divisor of 0) gives zeros. Returns (bags, dim) float32.
        Each shard sends one vector per bag instead of one row per key. Raises
        InvalidArgumentError for offsets that do not add up, bad weights or an
        unknown combiner, and what pull raises."""
        k, o, w = self._bags(keys, offsets, weights, combiner)
        bags = o.size - 1
        d = self._dim(table, dim, out)
        if out is None:
            out = np.empty((bags, d), dtype=np.float32)
        else:
            _check_out(out, bags, d)
        err = _lib.ember_error()
        rv = self._fn("ember_pull_pooled")(
            self._h(), _bytes(table, "table"), k.ctypes.data, k.size, o.ctypes.data, bags,
            w.ctypes.data if w is not None else None, COMBINERS[combiner], out.ctypes.data, d,
            PULL_SERVE if not insert else PULL_INSERT, ctypes.byref(err))
        if rv:
            _raise(rv, err)
        return out

    def push_pooled(self, table, keys, offsets, grads, combiner="sum", *, weights=None):
        """Pushes the gradient of each bag's combined vector (grads: (bags, dim)):
        the servers give each key of bag b the gradient grads[b]·c, c = w (sum)
        or w / the bag's divisor (mean, sqrtn), and apply those per-key
        gradients through the table's optimizer as push() would (equal keys
        summed, one step). Bags and combiner as in pull_pooled."""
        k, o, w = self._bags(keys, offsets, weights, combiner)
        bags = o.size - 1
        g = np.ascontiguousarray(grads, dtype=np.float32)
        if bags == 0:
            return
        d = g.size // bags if g.ndim < 2 else int(g.shape[-1])
        if g.size != bags * d or d == 0:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"grads: {g.size} values for {bags} bags")
        err = _lib.ember_error()
        rv = self._fn("ember_push_pooled")(
            self._h(), _bytes(table, "table"), k.ctypes.data, k.size, o.ctypes.data, bags,
            w.ctypes.data if w is not None else None, COMBINERS[combiner], g.ctypes.data, d,
            ctypes.byref(err))
        if rv:
            _raise(rv, err)

    # ---- tables ------------------------------------------------------------------

    def create_table(self, name, dim, capacity_per_shard, *, optimizer="sgd", lr=None,
                     eps=None, initial_accumulator=None, beta1=None, beta2=None,
                     weight_decay=None, l1=None, l2=None, lr_power=None, beta=None,
                     initializer=None, scores="lru", seed=0, admission_min_count=0,
                     admission_sketch_width=0, zero_nonfinite=False, backend=None,
                     hbm_bytes=0, max_capacity_per_shard=0, max_load_factor=0.0,
                     ttl_seconds=0, ack=None, ack_replicas=0, if_not_exists=False):
        """Creates the table on every shard. optimizer: sgd, adagrad, adam or
        ftrl, with its hyperparameters (None: libember's defaults, SGD lr 0.01).
        initializer: a kind ("zeros", "constant", "uniform", "normal",
        "truncated_normal") or a tuple (kind, a[, b]); default uniform(-0.01,
        0.01). scores: lru, lfu, epoch_lru, epoch_lfu, custom. backend: "cpu",
        "gpu" or None (the server's default). hbm_bytes: a gpu table's rows kept
        in device memory, in bytes, the rest in pinned host memory (0: the
        server's --hbm-bytes; a cpu table keeps every row in host memory).
        max_capacity_per_shard: online growth, each shard's table doubles while
        serving up to this many keys when its load factor would pass
        max_load_factor (0: 0.75); 0 keeps a fixed size. ttl_seconds: rows not
        written for this long are removed by the servers (0: off; see set_ttl).
        ack: pushes' acknowledgement when a push leaves it to the table: None or
        "async" (answered once applied on the leader) or "replicated" (once
        ack_replicas followers, 0 = 1, hold it too; README "Replication and
        failover"). if_not_exists: an existing table of the same dim is fine. Raises
        AlreadyExistsError, InvalidArgumentError, FailedPreconditionError
        (backend "gpu" on a server without one: nothing is created)."""
        if not isinstance(hbm_bytes, int) or hbm_bytes < 0 or hbm_bytes >= 1 << 64:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"hbm_bytes {hbm_bytes!r}: a byte count, 0 or more")
        for field, v in (("max_capacity_per_shard", max_capacity_per_shard),
                         ("ttl_seconds", ttl_seconds)):
            if v < 0:
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           f"{field} {v} is negative")
        s = _lib.new_growable(_lib.ember_table_spec)
        self._lib.ember_table_spec_init(ctypes.byref(s))
        _lib.sized(s)
        s.dim = dim
        s.capacity_per_shard = capacity_per_shard
        try:
            s.optimizer.kind = _OPTIMIZERS[optimizer]
            s.score_policy = _SCORES[scores]
        except KeyError as e:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT, f"unknown name {e}") from None
        for field, v in (("lr", lr), ("eps", eps), ("initial_accumulator", initial_accumulator),
                         ("beta1", beta1), ("beta2", beta2), ("weight_decay", weight_decay),
                         ("l1", l1), ("l2", l2), ("lr_power", lr_power), ("beta", beta)):
            if v is not None:
                setattr(s.optimizer, field, v)
        if initializer is not None:
            kind, *ab = (initializer,) if isinstance(initializer, str) else tuple(initializer)
            if kind not in _INITIALIZERS or len(ab) > 2:
                raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                           f"initializer {initializer!r}: (kind, a[, b]) with "
                                           f"kind one of {', '.join(_INITIALIZERS)}")
            s.initializer.kind = _INITIALIZERS[kind]
            if ab:
                s.initializer.a = ab[0]
            if len(ab) > 1:
                s.initializer.b = ab[1]
        s.seed = seed
        s.admission_min_count = admission_min_count
        s.admission_sketch_width = admission_sketch_width
        s.zero_nonfinite = 1 if zero_nonfinite else 0
        b = _bytes(backend, "backend")
        s.backend = b
        s.hbm_bytes = hbm_bytes
        s.max_capacity_per_shard = max_capacity_per_shard
        s.max_load_factor = max_load_factor
        s.ttl_seconds = ttl_seconds
        s.ack, s.ack_replicas = _ack_of(ack, ack_replicas)
        err = _lib.ember_error()
        rv = self._lib.ember_create_table(self._h(), _bytes(name, "name"), ctypes.byref(s),
                                          1 if if_not_exists else 0, ctypes.byref(err))
        if rv:
            _raise(rv, err)
        self._dims[name] = dim

    def set_ttl(self, name, ttl_seconds):
        """Sets the table's time to live on every shard, in seconds (0: off).
        Rows not written (pushed, assigned, created) for that long are removed
        by each server in the background; reads do not keep a row alive.
        Raises NotFoundError, InvalidArgumentError (negative, or above about a
        century)."""
        if ttl_seconds < 0:
            raise InvalidArgumentError(Code.INVALID_ARGUMENT,
                                       f"ttl_seconds {ttl_seconds} is negative")
        if self._lib.ember_set_ttl is None:
            raise UnimplementedError(Code.UNIMPLEMENTED, "this libember has no ember_set_ttl")
        err = _lib.ember_error()
        rv = self._lib.ember_set_ttl(self._h(), _bytes(name, "name"), int(ttl_seconds),
                                     ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def check_shards(self):
        """Asks every shard for its --shard-index/--shard-count and compares them
        with its place in this client's shard list (ember_check_shards). Raises
        FailedPreconditionError naming which address claims which index when
        the list is out of order or of another length; shards started without
        --shard-count are not checked. A pull or push that a shard refuses for a
        key of another shard raises the same error by itself."""
        err = _lib.ember_error()
        rv = self._lib.ember_check_shards(self._h(), ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def drop_table(self, name, *, if_exists=False):
        """Drops the table on every shard. Raises NotFoundError unless if_exists."""
        self._dims.pop(name, None)
        err = _lib.ember_error()
        rv = self._lib.ember_drop_table(self._h(), _bytes(name, "name"), 1 if if_exists else 0,
                                        ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def describe_table(self, name):
        """The table summed over shards: a TableInfo (dim, size, capacity,
        load_factor, evictions, admission_drops, version_max). NotFoundError if
        a shard lacks it."""
        info = _lib.ember_table_info()
        err = _lib.ember_error()
        rv = self._lib.ember_describe_table(self._h(), _bytes(name, "name"), ctypes.byref(info),
                                            ctypes.byref(err))
        if rv:
            _raise(rv, err)
        self._dims[name] = info.dim
        return _info(info)

    def list_tables(self):
        """Every table any shard holds, in name order, as TableInfo (summed over
        the shards that hold it)."""
        fn = self._fn("ember_list_tables")
        cap = 16
        while True:
            arr = (_lib.ember_table_info * cap)()
            n = ctypes.c_size_t(0)
            err = _lib.ember_error()
            rv = fn(self._h(), arr, cap, ctypes.byref(n), ctypes.byref(err))
            if rv:
                _raise(rv, err)
            if n.value <= cap:
                out = [_info(arr[i]) for i in range(n.value)]
                for t in out:
                    self._dims[t.name] = t.dim
                return out
            cap = n.value

    def save(self, table=None, dir=None):
        """Saves a table (None: all) on every shard, to the servers' checkpoint
        directories (dir None) or `dir` on each server."""
        err = _lib.ember_error()
        rv = self._lib.ember_save(self._h(), _bytes(table, "table"), _bytes(dir, "dir"),
                                  ctypes.byref(err))
        if rv:
            _raise(rv, err)

    def load(self, table=None, dir=None):
        """Loads a table (None: every one found) on every shard, creating it."""
        err = _lib.ember_error()
        rv = self._lib.ember_load(self._h(), _bytes(table, "table"), _bytes(dir, "dir"),
                                  ctypes.byref(err))
        if rv:
            _raise(rv, err)


def shard_of(key, shard_count):
    """ember_shard_of: the fixed key -> shard function every client agrees on."""
    return _lib.lib().ember_shard_of(int(key) & 0xFFFFFFFFFFFFFFFF, shard_count)
