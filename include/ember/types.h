/*
 * ember/types.h — the vocabulary every layer of ember shares: status codes, the
 * error record, the reserved keys, the table-name rule, and the kinds of
 * optimizer, score policy and initializer a table is made with, and its defaults.
 *
 * One header so that each name and number exists once: the storage layer
 * (storage/status.h, hash.h, optim.h, score.h, init.h), the CUDA backend, the
 * server and libember (<ember/ember.h>, which includes this) all take them from
 * here. It is installed next to ember.h and depends on nothing but the C library.
 * Only names and plain values live here; the math on them (hashing, optimizer
 * rules, initial rows, scores) stays in storage/.
 *
 * Thread-safety: the helpers below touch only the ember_error they are given.
 */
#ifndef EMBER_TYPES_H
#define EMBER_TYPES_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status codes ------------------------------------------------------------ */

/* Every fallible ember function returns an int status: 0 (EMBER_OK) on success,
 * otherwise one of these. They are numerically gRPC's status codes (checked with
 * _Static_assert against GRPC_STATUS_* in client/rpc.c), so a server hands them
 * on unchanged and a client returns what a server sent. */
typedef enum ember_status {
    EMBER_OK = 0,
    EMBER_CANCELLED = 1,
    EMBER_UNKNOWN = 2,
    EMBER_INVALID_ARGUMENT = 3,
    EMBER_DEADLINE_EXCEEDED = 4,
    EMBER_NOT_FOUND = 5,
    EMBER_ALREADY_EXISTS = 6,
    EMBER_PERMISSION_DENIED = 7,
    EMBER_RESOURCE_EXHAUSTED = 8,
    EMBER_FAILED_PRECONDITION = 9,
    EMBER_ABORTED = 10,
    EMBER_OUT_OF_RANGE = 11,
    EMBER_UNIMPLEMENTED = 12,
    EMBER_INTERNAL = 13,
    EMBER_UNAVAILABLE = 14,
    EMBER_DATA_LOSS = 15,
    EMBER_UNAUTHENTICATED = 16,
} ember_status;

/* The upper-case gRPC name of a status code ("INVALID_ARGUMENT"); "UNKNOWN" for
 * codes outside the table. The string is static. (libember exports the same as
 * ember_code_name, for callers that bind by symbol.) */
static inline const char *ember_status_name(int code)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
        "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    };
    if (code < 0 || code >= (int)(sizeof names / sizeof names[0]))
        return "UNKNOWN";
    return names[code];
}

/* ---- the error record ------------------------------------------------------- */

#define EMBER_ERROR_MSG_MAX 512

/* Details of a failure, filled by functions that take an optional
 * `ember_error *` (callers that do not care pass NULL). It belongs to its caller.
 * Initialise with `= {0}` or ember_error_clear. */
typedef struct ember_error {
    int code;                          /* an ember_status */
    int shard;                         /* libember: index of the shard that failed,
                                        * -1 if none; -1 elsewhere */
    char message[EMBER_ERROR_MSG_MAX]; /* human-readable, NUL-terminated */
} ember_error;

/* Records `code`, shard -1 and a printf-style message in `err` (if not NULL) and
 * returns `code`, so a failure path reads `return ember_error_set(err, ...);`. */
static inline int ember_error_set(ember_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int ember_error_set(ember_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->shard = -1;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Resets `err` (if not NULL) to EMBER_OK, shard -1, an empty message. */
static inline void ember_error_clear(ember_error *err)
{
    if (err) {
        err->code = EMBER_OK;
        err->shard = -1;
        err->message[0] = '\0';
    }
}

/* ---- keys --------------------------------------------------------------------- */

/* Keys are uint64. The four largest values, EMBER_KEY_RESERVED_MIN
 * (0xFFFFFFFFFFFFFFFC) up to UINT64_MAX, are reserved: the table backends use
 * them as slot sentinels (storage/hash.h names them), so no operation accepts
 * one; a request carrying one is refused whole with EMBER_INVALID_ARGUMENT,
 * by libember before anything is sent and by the servers. */
#define EMBER_KEY_RESERVED_MIN UINT64_C(0xFFFFFFFFFFFFFFFC)

/* ---- table names ---------------------------------------------------------------- */

/* A table's name is 1 to EMBER_TABLE_NAME_MAX characters of [a-z0-9_.-]
 * (lower-case letters, digits, '_', '.', '-'); a server refuses any other with
 * EMBER_INVALID_ARGUMENT (its message says "is not [a-z0-9_.-]{1,64}"). The
 * rule keeps a name usable as a file name (a checkpoint is <name>.ckpt) and in
 * metric labels as it is. libember checks only that a name is there and not
 * too long before sending, and leaves the characters to the servers. */
#define EMBER_TABLE_NAME_MAX 64

/* Is name[len] (not NUL-terminated: exactly len bytes) a valid table name? */
static inline int ember_table_name_valid(const char *name, size_t len)
{
    if (len < 1 || len > EMBER_TABLE_NAME_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* ---- what a table is made with -------------------------------------------------- */

/* The server-side optimizer that gradients go through (the update rules and the
 * optimizer state each one keeps per row are in storage/optim.h). */
typedef enum ember_optim_kind {
    EMBER_OPTIM_SGD = 0,
    EMBER_OPTIM_ADAGRAD = 1,
    EMBER_OPTIM_ADAM = 2,
    EMBER_OPTIM_FTRL = 3,
} ember_optim_kind;

/* How a stored key's eviction score moves when it is accessed; a full bucket
 * evicts its lowest score (the rules are in storage/score.h). */
typedef enum ember_score_policy {
    EMBER_SCORE_LRU = 0,
    EMBER_SCORE_LFU = 1,
    EMBER_SCORE_EPOCH_LRU = 2,
    EMBER_SCORE_EPOCH_LFU = 3,
    EMBER_SCORE_CUSTOM = 4,
} ember_score_policy;

/* The distribution a new key's embedding is drawn from, a pure function of the
 * table's seed and the key (storage/init.h). */
typedef enum ember_init_kind {
    EMBER_INIT_ZEROS = 0,
    EMBER_INIT_CONSTANT = 1,
    EMBER_INIT_UNIFORM = 2,
    EMBER_INIT_NORMAL = 3,
    EMBER_INIT_TRUNCATED_NORMAL = 4,
} ember_init_kind;

/* What a new table is made with where its creator sets nothing: LRU scores; SGD
 * with lr 0.01 (and, for the optimizers that read them, eps 1e-8, initial
 * accumulator 0.1, beta1 0.9, beta2 0.999, FTRL's lr_power -0.5; the other
 * hyperparameters 0); rows drawn uniformly from [-0.01, 0.01]. One list for
 * libember's ember_table_spec_init and storage's ember_table_config_init, whose
 * structs name these fields alike: s points to either (zeroed first), optim and
 * init name its optimizer and initializer members. */
#define EMBER_TABLE_DEFAULTS(s, optim, init)                                              \
    do {                                                                                 \
        (s)->score_policy = EMBER_SCORE_LRU;                                             \
        (s)->optim.kind = EMBER_OPTIM_SGD;                                               \
        (s)->optim.lr = 0.01f;                                                           \
        (s)->optim.eps = 1e-8f;                                                          \
        (s)->optim.initial_accumulator = 0.1f;                                           \
        (s)->optim.beta1 = 0.9f;                                                         \
        (s)->optim.beta2 = 0.999f;                                                       \
        (s)->optim.lr_power = -0.5f;                                                     \
        (s)->init.kind = EMBER_INIT_UNIFORM;                                             \
        (s)->init.a = -0.01f;                                                            \
        (s)->init.b = 0.01f;                                                             \
    } while (0)

#ifdef __cplusplus
}
#endif

#endif /* EMBER_TYPES_H */
