"""ember.tensorflow: TensorFlow embedding layers whose rows live on ember's shards.

    import ember.tensorflow as etf

    emb = etf.Embedding("user", dim=16)                 # shards: EMBER_SHARDS / TF_CONFIG
    tags = etf.Embedding("tags", dim=16, combiner="mean")
    dense = tf.keras.layers.Dense(1)

    @tf.function
    def step(user, tag_ids, y):                          # tag_ids: a RaggedTensor
        with tf.GradientTape() as tape:
            x = tf.concat([emb(user), tags(tag_ids)], axis=1)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(y, dense(x)[:, 0]))
        vars = dense.trainable_variables + emb.trainable_variables + tags.trainable_variables
        opt.apply_gradients(zip(tape.gradient(loss, vars), vars))   # also pushes the rows'

The ops are C (client/tensorflow/ember_tf_ops.c, libember_tf_ops.so, loaded with
tf.load_op_library): EmberPull / EmberPush and the pooled EmberPullPooled /
EmberPushPooled call libember with the tensors' buffers, and one ember client is
shared by every op of the process (opened on first use from the `shards` given,
else EMBER_SHARDS, TF_CONFIG's cluster.ps, EMBER_SHARD_PATTERN). Failures are
TensorFlow errors of the gRPC code libember returned (tf.errors.InvalidArgumentError,
UnavailableError, ...), their message starting with the code's name.

Gradients: a training lookup pulls with find_or_insert and its gradient pushes to
the table, whose server-side optimizer (SGD, Adagrad, Adam, FTRL: create_table)
steps the rows, as TFRA's and SOK's dynamic embeddings do: there is no TF variable
for the table. TensorFlow's tape only calls a gradient function that leads to a
watched variable, so each layer owns one scalar `push_trigger` variable (always 0,
its gradient 0): include the layer's trainable_variables in tape.gradient (Keras'
fit and model.trainable_variables do). A lookup outside a tape, with
training=False, or through serve=True pulls with find: nothing is created.

libember_tf_ops.so is found through $EMBER_TF_OPS, else this checkout's newest
build tree (build*/client/tensorflow/libember_tf_ops.so), else beside libember.
"""

import os

import tensorflow as tf

from . import _lib

_COMBINERS = ("sum", "mean", "sqrtn")
_ops = None


def _library_path():
    env = os.environ.get("EMBER_TF_OPS")
    if env:
        return env
    built = _lib.built("build*/client/tensorflow/libember_tf_ops.so")
    if built:
        return built[0]
    lib = os.environ.get("EMBER_LIBRARY")
    if lib:
        return os.path.join(os.path.dirname(lib), "tensorflow", "libember_tf_ops.so")
    return "libember_tf_ops.so"


def ops():
    """The loaded op library (tf.load_op_library), loaded once."""
    global _ops
    if _ops is None:
        _ops = tf.load_op_library(_library_path())
    return _ops


def _keys(ids):
    """ids as an int64 or uint64 tensor (other integer types are widened)."""
    ids = tf.convert_to_tensor(ids)
    if ids.dtype in (tf.int64, tf.uint64):
        return ids
    if not ids.dtype.is_integer:
        raise tf.errors.InvalidArgumentError(None, None,
                                             f"INVALID_ARGUMENT: ids must be integers, not {ids.dtype.name}")
    return tf.cast(ids, tf.int64)


def pull(ids, table, dim, *, serve=False, shards="", timeout_ms=0):
    """The rows of `ids` (any shape) as float32 ids.shape + [dim]; serve=True finds
    without inserting (missing ids read as their initial rows). No gradient."""
    keys = _keys(ids)
    rows = ops().ember_pull(keys, table=table, dim=int(dim), serve=bool(serve),
                            shards=shards or "", timeout_ms=int(timeout_ms))
    rows.set_shape(keys.shape.concatenate([int(dim)]))
    return rows


def push(ids, grads, table, dim, *, shards="", timeout_ms=0):
    """Pushes grads (ids.shape + [dim], float32) to the table's optimizer (equal ids'
    gradients summed; at most once per shard on retries, as ember_push). Returns
    None eagerly, the EmberPush operation in a graph (for control dependencies)."""
    return ops().ember_push(_keys(ids), tf.cast(grads, tf.float32), table=table, dim=int(dim),
                            shards=shards or "", timeout_ms=int(timeout_ms))


def _bags(ids, weights):
    """(keys [n], CSR offsets [bags + 1] int64, weights [n] or [0]) of a SparseTensor
    (rows in order: tf.sparse.reorder first if not) or a RaggedTensor of 2 dims."""
    if isinstance(ids, tf.SparseTensor):
        rows = ids.indices[:, 0]
        bags = ids.dense_shape[0]
        counts = tf.math.bincount(rows, minlength=bags, maxlength=bags, dtype=tf.int64)
        offsets = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(counts)], 0)
        values = ids.values
        w = weights.values if isinstance(weights, tf.SparseTensor) else weights
    elif isinstance(ids, tf.RaggedTensor):
        if ids.ragged_rank != 1:
            raise ValueError("embedding_lookup_sparse: a RaggedTensor of ragged_rank 1")
        offsets = tf.cast(ids.row_splits, tf.int64)
        values = ids.values
        w = weights.values if isinstance(weights, tf.RaggedTensor) else weights
    else:
        raise TypeError(f"ids must be a tf.SparseTensor or tf.RaggedTensor, not {type(ids).__name__}")
    w = tf.zeros([0], tf.float32) if w is None else tf.cast(tf.reshape(w, [-1]), tf.float32)
    return _keys(values), offsets, w


def _trigger_tensor(trigger):
    return tf.zeros([], tf.float32) if trigger is None else tf.convert_to_tensor(trigger)


def lookup(ids, table, dim, *, training=True, trigger=None, rows=None, shards="", timeout_ms=0):
    """ids' rows (ids.shape + [dim]); when training, a find_or_insert pull whose
    gradient pushes to the table. The gradient is taken only when a watched
    variable leads to it: `trigger` (a layer's push_trigger), else none.
    rows: the rows of ids pulled already (a prefetch, see Embedding.prefetch):
    no pull, the gradient is pushed all the same."""
    if not training:
        if rows is not None:
            return rows
        return pull(ids, table, dim, serve=True, shards=shards, timeout_ms=timeout_ms)
    keys = _keys(ids)
    dim = int(dim)
    given = rows

    @tf.custom_gradient
    def _lookup(t):
        if given is not None:
            rows = tf.identity(given)
        else:
            rows = pull(keys, table, dim, shards=shards, timeout_ms=timeout_ms)

        def grad(g):
            g = tf.convert_to_tensor(g)
            op = push(keys, g, table, dim, shards=shards, timeout_ms=timeout_ms)
            deps = [op] if op is not None else []
            with tf.control_dependencies(deps):
                return tf.zeros_like(t)

        return rows, grad

    return _lookup(_trigger_tensor(trigger))


def embedding_lookup_sparse(ids, table, dim, *, combiner="mean", weights=None, training=True,
                            trigger=None, vecs=None, shards="", timeout_ms=0):
    """One vector per row of `ids` (a tf.SparseTensor [bags, n] in row order, or a
    tf.RaggedTensor [bags, None]): the row's ids' rows combined by "sum", "mean"
    or "sqrtn" with optional per-id weights (a SparseTensor/RaggedTensor like ids,
    or its values), as tf.nn.embedding_lookup_sparse. Pooled on the servers
    (ember_pull_pooled); the gradient pushes one vector per bag
    (ember_push_pooled), which the servers spread over the bag's ids. An empty
    bag is zeros. Returns [bags, dim] float32. vecs: the bags' vectors pulled
    already (a prefetch): no pull, the gradient is pushed all the same."""
    if combiner not in _COMBINERS:
        raise ValueError(f"combiner {combiner!r}: one of {', '.join(_COMBINERS)}")
    keys, offsets, w = _bags(ids, weights)
    dim = int(dim)

    given = vecs

    def _pull(serve):
        if given is not None:
            return tf.identity(given)
        v = ops().ember_pull_pooled(keys, offsets, w, table=table, dim=dim, serve=serve,
                                    combiner=combiner, shards=shards or "",
                                    timeout_ms=int(timeout_ms))
        v.set_shape([None, dim])
        return v

    if not training:
        return _pull(True)

    @tf.custom_gradient
    def _lookup(t):
        vecs = _pull(False)

        def grad(g):
            g = tf.convert_to_tensor(g)
            op = ops().ember_push_pooled(keys, offsets, w, g, table=table, dim=dim,
                                         combiner=combiner, shards=shards or "",
                                         timeout_ms=int(timeout_ms))
            with tf.control_dependencies([op] if op is not None else []):
                return tf.zeros_like(t)

        return vecs, grad

    return _lookup(_trigger_tensor(trigger))


def _pooled_pull(ids, weights, table, dim, combiner, serve, shards, timeout_ms):
    """A pooled pull with no gradient (serve: without inserting)."""
    keys, offsets, w = _bags(ids, weights)
    v = ops().ember_pull_pooled(keys, offsets, w, table=table, dim=int(dim), serve=bool(serve),
                                combiner=combiner, shards=shards or "",
                                timeout_ms=int(timeout_ms))
    v.set_shape([None, int(dim)])
    return v


class Embedding(tf.keras.layers.Layer):
    """Rows of ember table `table` (dim `dim`) as a Keras layer. call(ids): a dense
    integer tensor gives ids.shape + [dim]; a tf.SparseTensor or tf.RaggedTensor
    gives one vector per row, combined by `combiner` (embedding_lookup_sparse;
    weights= per id). training=False (model.predict, evaluate) and serve=True
    pull without inserting and take no gradient. shards: "host:port,..." or
    None for EMBER_SHARDS / TF_CONFIG. create: None when the table exists, or
    ember.Client.create_table's keyword arguments (capacity_per_shard,
    optimizer, lr, initializer, ...) to create it if it does not.

    Its only variable is push_trigger (a scalar, always 0): the tape needs a
    watched variable to call the gradient that pushes."""

    def __init__(self, table, dim, *, combiner="mean", shards=None, timeout_ms=0, serve=False,
                 create=None, **kwargs):
        super().__init__(**kwargs)
        if combiner not in _COMBINERS:
            raise ValueError(f"combiner {combiner!r}: one of {', '.join(_COMBINERS)}")
        self.table = table
        self.dim = int(dim)
        self.combiner = combiner
        self.shards = shards or ""
        self.timeout_ms = int(timeout_ms)
        self.serve = bool(serve)
        if create is not None:
            from .client import Client
            with Client(self.shards or None) as c:
                c.create_table(table, self.dim, if_not_exists=True, **create)
        self.push_trigger = self.add_weight(name="push_trigger", shape=(), initializer="zeros",
                                            trainable=True)
        ops()

    def call(self, ids, weights=None, training=None, rows=None):
        """rows: what prefetch(ids, weights) returned for these ids: used instead
        of pulling; the gradient is pushed as usual."""
        train = training is not False and not self.serve
        trig = self.push_trigger.value if hasattr(self.push_trigger, "value") else self.push_trigger
        if isinstance(ids, (tf.SparseTensor, tf.RaggedTensor)):
            return embedding_lookup_sparse(ids, self.table, self.dim, combiner=self.combiner,
                                           weights=weights, training=train, trigger=trig,
                                           vecs=rows, shards=self.shards,
                                           timeout_ms=self.timeout_ms)
        return lookup(ids, self.table, self.dim, training=train, trigger=trig, rows=rows,
                      shards=self.shards, timeout_ms=self.timeout_ms)

    def prefetch(self, ids, weights=None, training=True):
        """The pull of call(ids, weights) alone, without a gradient: run it in the
        input pipeline (tf.data's map, then .prefetch(1)) so that batch k+1's
        rows travel while step k computes, and pass its result to
        call(ids, weights, rows=...). Those rows are read before step k's push
        lands: the one-step staleness of every asynchronous parameter server
        (ember.torch's prefetch has the same)."""
        serve = training is False or self.serve
        if isinstance(ids, (tf.SparseTensor, tf.RaggedTensor)):
            return _pooled_pull(ids, weights, self.table, self.dim, self.combiner, serve,
                                self.shards, self.timeout_ms)
        return pull(ids, self.table, self.dim, serve=serve, shards=self.shards,
                    timeout_ms=self.timeout_ms)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.dim,)

    def get_config(self):
        c = super().get_config()
        c.update(table=self.table, dim=self.dim, combiner=self.combiner, shards=self.shards,
                 timeout_ms=self.timeout_ms, serve=self.serve)
        return c
