/*
 * ember.h — libember, the client of ember's shard servers.
 *
 * A training worker opens one ember_client over all shards and calls ember_pull
 * before its forward pass and ember_push after its backward pass. It never sees
 * shards: the library deduplicates keys, partitions them over shards with a fixed
 * key→shard function (ember_shard_of), sends one request per shard in parallel,
 * and scatters the rows back into the caller's order. Pushes merge equal keys'
 * gradients before they are sent.
 *
 * Errors: every fallible call returns 0 on success or a gRPC status code
 * (EMBER_E_* below, equal to gRPC's), and fills the optional `ember_error *`
 * with the code, the shard that failed (-1 when none) and a message.
 *
 * Thread-safety: an ember_client may be used from many threads at once; each
 * call is independent. An ember_pending belongs to the thread that waits on it.
 *
 * Keys: uint64; the four largest values (0xFFFFFFFFFFFFFFFC and up) are reserved
 * and refused with EMBER_E_INVALID_ARGUMENT.
 */
#ifndef EMBER_EMBER_H
#define EMBER_EMBER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_CLIENT_VERSION "0.1.0"

/* Status codes: gRPC's. */
enum {
    EMBER_E_OK = 0,
    EMBER_E_CANCELLED = 1,
    EMBER_E_UNKNOWN = 2,
    EMBER_E_INVALID_ARGUMENT = 3,
    EMBER_E_DEADLINE_EXCEEDED = 4,
    EMBER_E_NOT_FOUND = 5,
    EMBER_E_ALREADY_EXISTS = 6,
    EMBER_E_PERMISSION_DENIED = 7,
    EMBER_E_RESOURCE_EXHAUSTED = 8,
    EMBER_E_FAILED_PRECONDITION = 9,
    EMBER_E_ABORTED = 10,
    EMBER_E_OUT_OF_RANGE = 11,
    EMBER_E_UNIMPLEMENTED = 12,
    EMBER_E_INTERNAL = 13,
    EMBER_E_UNAVAILABLE = 14,
    EMBER_E_DATA_LOSS = 15,
    EMBER_E_UNAUTHENTICATED = 16,
};

typedef struct ember_error {
    int code;            /* EMBER_E_* */
    int shard;           /* index of the shard that failed, -1 if none */
    char message[512];
} ember_error;

/* The gRPC name of a code ("UNAVAILABLE"). Static string. */
const char *ember_code_name(int code);

/* Wire types for values and gradients. Float32 in memory always; the library
 * converts to and from the wire type. */
typedef enum ember_dtype {
    EMBER_DTYPE_FLOAT32 = 0,
    EMBER_DTYPE_FLOAT16 = 1,
    EMBER_DTYPE_BFLOAT16 = 2,
} ember_dtype;

typedef struct ember_client ember_client;

typedef struct ember_client_options {
    /* Shards, in shard order: "host:port,host:port,...". NULL: the environment
     * variable EMBER_SHARDS; if that is unset too, a StatefulSet pattern below. */
    const char *shards;
    /* StatefulSet pattern: "ember-{i}.ember.ns.svc:7070" with {i} = 0..count-1
     * (or the environment's EMBER_SHARD_PATTERN / EMBER_SHARD_COUNT). */
    const char *shard_pattern;
    unsigned shard_count;
    /* Deadline of each RPC, ms (0: 10,000). Every call has one. */
    unsigned timeout_ms;
    /* Retries of pulls (and of pushes, at most once on the server) after
     * UNAVAILABLE, with exponential backoff from 50 ms (0: 5 retries; a retry
     * never outlives the call's deadline). */
    unsigned max_retries;
    /* Wire type of values and gradients (default float32). */
    ember_dtype wire_dtype;
    /* Client id for at-most-once pushes (0: random at open). */
    uint64_t client_id;
    /* Connections per shard (0: 1). */
    unsigned channels_per_shard;
} ember_client_options;

/* Fills `o` with the defaults above. */
void ember_client_options_init(ember_client_options *o);

/* Opens a client. Connections are made lazily; an unreachable shard shows up as
 * EMBER_E_UNAVAILABLE on the first call that needs it. Returns NULL (and fills
 * `err`) on bad options: no shards, a malformed address. */
ember_client *ember_client_open(const ember_client_options *opts, ember_error *err);

/* Closes the client; waits for nothing: pending async calls must be waited on
 * first. NULL is a no-op. */
void ember_client_close(ember_client *c);

unsigned ember_client_shard_count(const ember_client *c);
/* The client id its pushes carry (options.client_id, or the random one). */
uint64_t ember_client_id(const ember_client *c);
/* The address of shard i, or NULL. */
const char *ember_client_shard_address(const ember_client *c, unsigned i);

/* The documented key→shard function: jump consistent hash (Lamping & Veach) of
 * mix(key), mix being splitmix64's finaliser applied to key ^ 0x5bd1e9955bd1e995
 * (independent of the shard servers' bucket hash). Going from N to N+1 shards
 * moves only 1/(N+1) of the keys. */
unsigned ember_shard_of(uint64_t key, unsigned shard_count);

/* ---- training and serving ------------------------------------------------- */

/* Pull flags. */
#define EMBER_PULL_INSERT 0u   /* training: missing keys are created (find_or_insert) */
#define EMBER_PULL_SERVE  1u   /* serving: missing keys are not created (find) */

/* Pulls the rows of keys[0..n) into out[n*dim] in the caller's order; `dim` must
 * be the table's. Duplicate keys are fetched once. */
int ember_pull(ember_client *c, const char *table, const uint64_t *keys, size_t n,
               float *out, uint32_t dim, unsigned flags, ember_error *err);

/* Pushes gradients grads[n*dim] for keys[0..n); equal keys' gradients are summed
 * first. Applied at most once per shard even when retried. */
int ember_push(ember_client *c, const char *table, const uint64_t *keys, size_t n,
               const float *grads, uint32_t dim, ember_error *err);

/* Push modes beyond gradients (embeddings written as they are). */
typedef enum ember_push_mode {
    EMBER_PUSH_GRADIENTS = 0,
    EMBER_PUSH_ASSIGN = 1,           /* existing keys only */
    EMBER_PUSH_ACCUM = 2,            /* existing keys only, added */
    EMBER_PUSH_INSERT_OR_ASSIGN = 3,
} ember_push_mode;

int ember_push_mode_values(ember_client *c, const char *table, const uint64_t *keys,
                           size_t n, const float *values, uint32_t dim, ember_push_mode mode,
                           ember_error *err);

/* One round trip per shard: push grads for push_keys, then pull pull_keys. */
int ember_push_pull(ember_client *c, const char *table, const uint64_t *push_keys,
                    size_t n_push, const float *grads, const uint64_t *pull_keys,
                    size_t n_pull, float *out, uint32_t dim, unsigned pull_flags,
                    ember_error *err);

/* ---- async: prefetch the next batch while computing this one -------------- */

typedef struct ember_pending ember_pending;

/* Starts a pull; keys and out must stay valid until ember_wait returns. Returns
 * NULL (and fills err) if it cannot start. */
ember_pending *ember_pull_async(ember_client *c, const char *table, const uint64_t *keys,
                                size_t n, float *out, uint32_t dim, unsigned flags,
                                ember_error *err);
/* Starts a push; keys and grads must stay valid until ember_wait returns. */
ember_pending *ember_push_async(ember_client *c, const char *table, const uint64_t *keys,
                                size_t n, const float *grads, uint32_t dim, ember_error *err);
/* Waits for the call, frees the handle, returns its status. */
int ember_wait(ember_pending *p, ember_error *err);

/* ---- tables (fanned out to every shard) ----------------------------------- */

typedef enum ember_optimizer {
    EMBER_OPT_SGD = 0, EMBER_OPT_ADAGRAD = 1, EMBER_OPT_ADAM = 2, EMBER_OPT_FTRL = 3,
} ember_optimizer;

typedef enum ember_initializer {
    EMBER_INITIALIZER_ZEROS = 0, EMBER_INITIALIZER_CONSTANT = 1, EMBER_INITIALIZER_UNIFORM = 2,
    EMBER_INITIALIZER_NORMAL = 3, EMBER_INITIALIZER_TRUNCATED_NORMAL = 4,
} ember_initializer;

typedef enum ember_scores {
    EMBER_SCORES_LRU = 0, EMBER_SCORES_LFU = 1, EMBER_SCORES_EPOCH_LRU = 2,
    EMBER_SCORES_EPOCH_LFU = 3, EMBER_SCORES_CUSTOM = 4,
} ember_scores;

typedef struct ember_table_spec {
    uint32_t dim;
    uint64_t capacity_per_shard;
    int score_policy;                /* EMBER_SCORES_* */
    uint64_t seed;
    struct {
        int kind;                    /* EMBER_OPT_* */
        float lr, eps, initial_accumulator, beta1, beta2, weight_decay;
        float l1, l2, lr_power, beta;
    } optimizer;
    struct {
        int kind;                    /* EMBER_INITIALIZER_* */
        float a, b;
    } initializer;
    uint32_t admission_min_count;
    uint32_t admission_sketch_width;
    int zero_nonfinite;
    const char *backend;             /* "cpu", "gpu", NULL: the server's default */
} ember_table_spec;

/* Defaults: LRU, SGD lr 0.01 (Adam betas 0.9/0.999, eps 1e-8, accumulator 0.1,
 * FTRL lr_power -0.5), uniform(-0.01, 0.01); dim and capacity 0 (caller sets). */
void ember_table_spec_init(ember_table_spec *s);

/* Creates the table on every shard. if_not_exists: an existing table is fine. */
int ember_create_table(ember_client *c, const char *name, const ember_table_spec *s,
                       int if_not_exists, ember_error *err);
int ember_drop_table(ember_client *c, const char *name, int if_exists, ember_error *err);

/* Summed over shards (capacity, size, counters), load factor = size/capacity. */
typedef struct ember_table_info {
    char name[65];
    uint32_t dim;
    uint64_t size, capacity;
    double load_factor;
    uint64_t evictions, admission_drops, version_max;
} ember_table_info;
int ember_describe_table(ember_client *c, const char *name, ember_table_info *out,
                         ember_error *err);

/* Saves every shard's tables (table NULL: all) to the servers' checkpoint dirs
 * (dir NULL) or `dir` on each server. */
int ember_save(ember_client *c, const char *table, const char *dir, ember_error *err);
int ember_load(ember_client *c, const char *table, const char *dir, ember_error *err);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_EMBER_H */
