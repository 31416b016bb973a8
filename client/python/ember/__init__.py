"""ember: Python workers on ember's embedding parameter servers.

A thin layer over libember (client/include/ember/ember.h, loaded with ctypes;
nothing to compile): numpy arrays in and out, libember's statuses as exceptions
that carry the gRPC code, async pulls, and table admin.

    import numpy as np, ember

    c = ember.Client()                  # shards from EMBER_SHARDS or TF_CONFIG
    c.create_table("clicks", dim=16, capacity_per_shard=1 << 20,
                   optimizer="adagrad", lr=0.05, if_not_exists=True)
    keys = np.array([3, 7, 3], dtype=np.uint64)
    rows = c.pull("clicks", keys)       # (3, 16) float32
    c.push("clicks", keys, grads)       # grads (3, 16): the server's Adagrad applies them
    nxt = c.pull_async("clicks", next_keys)   # prefetch; nxt.wait() -> rows

ember.torch holds the PyTorch modules (Embedding, EmbeddingBag), ember.tensorflow
the Keras Embedding layer and embedding_lookup_sparse over ember's TensorFlow ops
(imported on demand: neither framework is needed by the rest); ember.local
starts shard servers on loopback for tests and demos.

libember is found through $EMBER_LIBRARY, else this checkout's newest build tree
(build*/client/libember.so), else the system's (ldconfig, LD_LIBRARY_PATH).
"""

from .client import PULL_INSERT, PULL_SERVE, Client, Pending, TableInfo, as_keys, shard_of
from .errors import (
    AbortedError,
    AlreadyExistsError,
    CancelledError,
    Code,
    DataLossError,
    DeadlineExceededError,
    Error,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
    UnknownError,
)

__version__ = "0.1.0"


def library_path():
    """The path of the libember this process loaded (loading it if need be)."""
    from . import _lib

    return _lib.lib().path


__all__ = [
    "Client", "Pending", "TableInfo", "Code", "Error", "PULL_INSERT", "PULL_SERVE",
    "as_keys", "shard_of", "library_path",
    "AbortedError", "AlreadyExistsError", "CancelledError", "DataLossError",
    "DeadlineExceededError", "FailedPreconditionError", "InternalError",
    "InvalidArgumentError", "NotFoundError", "OutOfRangeError", "PermissionDeniedError",
    "ResourceExhaustedError", "UnauthenticatedError", "UnavailableError",
    "UnimplementedError", "UnknownError",
]
