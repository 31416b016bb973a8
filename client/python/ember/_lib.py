"""libember through ctypes: finding the shared library, its structs, its calls.

Internal to the ``ember`` package. The structs mirror client/include/ember/ember.h
and include/ember/types.h field for field (ctypes lays them out as the C
compiler does; an enum field is a C int); a struct that starts with
``struct_size`` is allocated with room to spare for a newer library's init
(``new_growable``) and then gets its ctypes size (``sized``), so the library
reads exactly the fields declared here; every pointer to
keys, rows and gradients is passed as ``c_void_p`` so that numpy arrays go in by
address, without a copy. ctypes releases the GIL for the length of every call, so
other Python threads (and an async pull's network progress) run meanwhile.
"""

import ctypes
import ctypes.util
import os
import pathlib

# ---- finding libember --------------------------------------------------------


def _is_sanitized(path):
    # An ASan-instrumented libember aborts a Python that did not preload the ASan
    # runtime, so build trees made with -DEMBER_SANITIZE are passed over.
    try:
        with open(path, "rb") as f:
            return b"libasan.so" in f.read()
    except OSError:
        return True


def _source_root():
    """The checkout this package lives in, or None when it was installed elsewhere."""
    root = pathlib.Path(__file__).resolve().parents[3]
    if (root / "client" / "include" / "ember" / "ember.h").is_file():
        return root
    return None


def built(pattern):
    """Files of this checkout's build trees matching `pattern` (a glob relative to
    the checkout, e.g. "build*/client/libember.so"), newest first, sanitizer
    builds passed over; [] when the package is not in a checkout."""
    root = _source_root()
    if root is None:
        return []
    found = [p for p in root.glob(pattern) if p.is_file()]
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [str(p) for p in found if not _is_sanitized(p)]


def candidates():
    """Where libember is looked for, in order (see find_library)."""
    env = os.environ.get("EMBER_LIBRARY")
    if env:
        return [env]
    out = built("build*/client/libember.so")
    found = ctypes.util.find_library("ember")
    if found:
        out.append(found)
    out += ["libember.so.1", "libember.so"]
    return out


def find_library():
    """Loads libember: $EMBER_LIBRARY (a path, and nothing else when it is set);
    else the newest build tree of the checkout this package sits in
    (build*/client/libember.so, sanitizer builds skipped); else the system's
    (ldconfig's cache, LD_LIBRARY_PATH, the install prefix's lib directory).
    Returns (CDLL, path). Raises OSError naming every place tried."""
    tried = []
    for c in candidates():
        try:
            return ctypes.CDLL(c), c
        except OSError as e:
            tried.append(f"{c}: {e}")
    raise OSError(
        "ember: cannot load libember; build it (cmake --build build) or set "
        "EMBER_LIBRARY=/path/to/libember.so. Tried:\n  " + "\n  ".join(tried)
    )


# ---- structs (ember.h) ----------------------------------------------------------


class ember_error(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_int),
        ("shard", ctypes.c_int),
        ("message", ctypes.c_char * 512),
    ]


class ember_client_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("shards", ctypes.c_char_p),
        ("shard_pattern", ctypes.c_char_p),
        ("shard_count", ctypes.c_uint),
        ("timeout_ms", ctypes.c_uint),
        ("max_retries", ctypes.c_uint),
        ("wire_dtype", ctypes.c_int),
        ("client_id", ctypes.c_uint64),
        ("channels_per_shard", ctypes.c_uint),
        # security: unset falls back to EMBER_TLS_CA, EMBER_TLS_CERT, EMBER_TLS_KEY,
        # EMBER_TLS_SERVER_NAME, EMBER_TOKEN, EMBER_TOKEN_FILE (ember.h)
        ("tls_ca", ctypes.c_char_p),
        ("tls_cert", ctypes.c_char_p),
        ("tls_key", ctypes.c_char_p),
        ("tls_server_name", ctypes.c_char_p),
        ("token", ctypes.c_char_p),
        ("token_file", ctypes.c_char_p),
        # ABI 1.1: the retry budget (ms; EMBER_RETRY_BUDGET_DEFAULT -1: the
        # environment's EMBER_RETRY_BUDGET, else 120 s; 0: none) and the shard notice
        ("retry_budget_ms", ctypes.c_int),
        ("shard_notice", ctypes.c_void_p),  # a SHARD_NOTICE_FN, or None: stderr
        ("shard_notice_arg", ctypes.c_void_p),
    ]


# void (*shard_notice)(void *arg, unsigned shard, const char *address, int available,
#                      const char *message)
SHARD_NOTICE_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint, ctypes.c_char_p,
                                   ctypes.c_int, ctypes.c_char_p)
RETRY_BUDGET_DEFAULT = -1


class _optimizer(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int)] + [  # kind: ember_optim_kind
        (n, ctypes.c_float)
        for n in (
            "lr", "eps", "initial_accumulator", "beta1", "beta2", "weight_decay",
            "l1", "l2", "lr_power", "beta",
        )
    ]


class _initializer(ctypes.Structure):
    # kind: ember_init_kind
    _fields_ = [("kind", ctypes.c_int), ("a", ctypes.c_float), ("b", ctypes.c_float)]


class ember_table_spec(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("dim", ctypes.c_uint32),
        ("capacity_per_shard", ctypes.c_uint64),
        ("score_policy", ctypes.c_int),  # ember_score_policy
        ("seed", ctypes.c_uint64),
        ("optimizer", _optimizer),
        ("initializer", _initializer),
        ("admission_min_count", ctypes.c_uint32),
        ("admission_sketch_width", ctypes.c_uint32),
        ("zero_nonfinite", ctypes.c_int),
        ("backend", ctypes.c_char_p),
        ("hbm_bytes", ctypes.c_uint64),  # ABI 1.1
        ("max_capacity_per_shard", ctypes.c_uint64),
        ("max_load_factor", ctypes.c_float),
        ("ttl_seconds", ctypes.c_uint64),
        ("ack", ctypes.c_int),           # EMBER_ACK_* (replication)
        ("ack_replicas", ctypes.c_uint32),
    ]


class ember_pull_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint),
        ("scores", ctypes.c_void_p),  # const uint64_t *, n
        ("found", ctypes.c_void_p),   # uint8_t *, n (out)
    ]


class ember_push_options(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("mode", ctypes.c_int),       # ember_push_mode
        ("scores", ctypes.c_void_p),  # const uint64_t *, n
        ("epoch", ctypes.c_uint32),
        ("ack", ctypes.c_int),        # EMBER_ACK_* (replication)
        ("ack_replicas", ctypes.c_uint32),
    ]


# Room left after a growable struct for a libember newer than this package: its
# init function fills the struct as that library declares it, possibly larger.
_GROWTH_ROOM = 1024


def new_growable(cls):
    """A zeroed instance of the growable struct `cls` (ember_client_options,
    ember_table_spec) with _GROWTH_ROOM spare bytes after it, so that a newer
    libember's init function never writes past the memory it is given (the
    instance keeps its buffer alive)."""
    buf = (ctypes.c_char * (ctypes.sizeof(cls) + _GROWTH_ROOM))()
    return cls.from_buffer(buf)


def sized(struct):
    """Sets struct.struct_size to the size of the layout declared here (after the
    library's init function filled it), so the library reads exactly the fields
    this package knows and takes its defaults for the rest; returns struct."""
    struct.struct_size = ctypes.sizeof(struct)
    return struct


class ember_table_info(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char * 65),
        ("dim", ctypes.c_uint32),
        ("size", ctypes.c_uint64),
        ("capacity", ctypes.c_uint64),
        ("load_factor", ctypes.c_double),
        ("evictions", ctypes.c_uint64),
        ("admission_drops", ctypes.c_uint64),
        ("version_max", ctypes.c_uint64),
    ]


# ---- calls ------------------------------------------------------------------------

_p = ctypes.c_void_p
_i = ctypes.c_int
_u = ctypes.c_uint
_u32 = ctypes.c_uint32
_u64 = ctypes.c_uint64
_sz = ctypes.c_size_t
_s = ctypes.c_char_p
_err = ctypes.POINTER(ember_error)

# name: (restype, argtypes). Keys, rows and gradients are c_void_p (addresses).
_PROTOTYPES = {
    "ember_code_name": (_s, [_i]),
    "ember_client_options_init": (None, [ctypes.POINTER(ember_client_options)]),
    "ember_client_open": (_p, [ctypes.POINTER(ember_client_options), _err]),
    "ember_client_close": (None, [_p]),
    "ember_client_cancel": (None, [_p]),
    "ember_client_shard_count": (_u, [_p]),
    "ember_client_id": (_u64, [_p]),
    "ember_client_shard_address": (_s, [_p, _u]),
    "ember_client_shard_source": (_s, [_p]),
    "ember_shard_of": (_u, [_u64, _u]),
    "ember_check_shards": (_i, [_p, _err]),
    "ember_pull": (_i, [_p, _s, _p, _sz, _p, _u32, _u, _err]),
    "ember_push": (_i, [_p, _s, _p, _sz, _p, _u32, _err]),
    "ember_push_mode_values": (_i, [_p, _s, _p, _sz, _p, _u32, _i, _err]),
    "ember_push_pull": (_i, [_p, _s, _p, _sz, _p, _p, _sz, _p, _u32, _u, _err]),
    "ember_pull_async": (_p, [_p, _s, _p, _sz, _p, _u32, _u, _err]),
    "ember_push_async": (_p, [_p, _s, _p, _sz, _p, _u32, _err]),
    "ember_wait": (_i, [_p, _err]),
    "ember_pull_pooled": (_i, [_p, _s, _p, _sz, _p, _sz, _p, _i, _p, _u32, _u, _err]),
    "ember_push_pooled": (_i, [_p, _s, _p, _sz, _p, _sz, _p, _i, _p, _u32, _err]),
    "ember_table_spec_init": (None, [ctypes.POINTER(ember_table_spec)]),
    "ember_create_table": (_i, [_p, _s, ctypes.POINTER(ember_table_spec), _i, _err]),
    "ember_drop_table": (_i, [_p, _s, _i, _err]),
    "ember_set_ttl": (_i, [_p, _s, _u64, _err]),
    "ember_describe_table": (_i, [_p, _s, ctypes.POINTER(ember_table_info), _err]),
    "ember_list_tables": (
        _i, [_p, ctypes.POINTER(ember_table_info), _sz, ctypes.POINTER(_sz), _err]),
    "ember_save": (_i, [_p, _s, _s, _err]),
    "ember_pull_options_init": (None, [ctypes.POINTER(ember_pull_options)]),
    "ember_push_options_init": (None, [ctypes.POINTER(ember_push_options)]),
    "ember_pull_opts": (
        _i, [_p, _s, _p, _sz, _p, _u32, ctypes.POINTER(ember_pull_options), _err]),
    "ember_push_opts": (
        _i, [_p, _s, _p, _sz, _p, _u32, ctypes.POINTER(ember_push_options), _err]),
    "ember_erase": (_i, [_p, _s, _p, _sz, ctypes.POINTER(_u64), _err]),
    "ember_set_epoch": (_i, [_p, _s, _u32, _err]),
    "ember_load": (_i, [_p, _s, _s, _err]),
}


class Lib:
    """The loaded library with typed functions as attributes. A function that
    this libember lacks (an older build) is None, and its Python call raises
    UnimplementedError instead of failing at import."""

    def __init__(self):
        self.cdll, self.path = find_library()
        for name, (res, args) in _PROTOTYPES.items():
            fn = getattr(self.cdll, name, None)
            if fn is not None:
                fn.restype = res
                fn.argtypes = args
            setattr(self, name, fn)


_lib = None


def lib():
    """The process's libember, loaded on first use."""
    global _lib
    if _lib is None:
        _lib = Lib()
    return _lib
