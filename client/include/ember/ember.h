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
 * Errors: every fallible call returns 0 (EMBER_OK) on success or a gRPC status
 * code (ember_status: EMBER_* in <ember/types.h>, equal to gRPC's), and fills
 * the optional `ember_error *` with the code, the shard that failed (-1 when
 * none) and a message. A shard's failure reads "shard i (host:port): <the
 * server's message>"; when several shards fail, the lowest shard index is
 * reported. Arguments are checked before anything is sent: a call refused with
 * shard -1 changed nothing anywhere.
 *
 * Deadlines and retries: every call (pull, push, admin) has one deadline,
 * options.timeout_ms from its start, covering all its requests and retries. A
 * shard that answers UNAVAILABLE (down, restarting, unreachable) is retried
 * after 50 ms, 100 ms, 200 ms, ... up to options.max_retries times, but never
 * past the deadline; the call then fails with UNAVAILABLE or DEADLINE_EXCEEDED,
 * in time, never hanging. Connections come back by themselves once a shard
 * does (reconnection attempts at most 1 s apart).
 *
 * Partial failure: shards are independent. A push or admin call that fails on
 * one shard may have been applied on the others; calling it again re-applies
 * it there (the library's own retries do not: see ember_push).
 *
 * Thread-safety: an ember_client may be used from many threads at once; each
 * call is independent. An ember_pending belongs to the thread that waits on it.
 *
 * Keys: uint64; the four largest values (EMBER_KEY_RESERVED_MIN,
 * 0xFFFFFFFFFFFFFFFC, and up) are reserved and refused with
 * EMBER_INVALID_ARGUMENT.
 *
 * Vocabulary: the status codes, ember_error, the reserved keys and the kinds of
 * optimizer (EMBER_OPTIM_*), score policy (EMBER_SCORE_*) and initializer
 * (EMBER_INIT_*) are in <ember/types.h>, installed beside this header and shared
 * with the servers' own code, so the two never disagree on a name or a number.
 *
 * Growing structs (ABI): ember_client_options, ember_table_spec,
 * ember_pull_options and ember_push_options begin with `uint32_t struct_size`,
 * which their init functions (ember_client_options_init, ...) set to the
 * struct's size as this header declares it; fill them with the init
 * function, then change fields. The rule for later versions: fields are
 * only ever added at the end; the library reads the first struct_size bytes and
 * takes the defaults for the fields past them, so a program built against an
 * older, smaller struct keeps working; struct_size 0 (a zeroed struct no init
 * touched) reads as this first layout; a size smaller than the first layout or
 * larger than the library's own struct is refused with EMBER_INVALID_ARGUMENT.
 * A struct that grows gives its init function a new symbol version in
 * libember.map, so programs linked before keep an init that fills only the
 * size they know. struct_size itself arrived with ABI 1 (libember.so.1):
 * programs built against libember.so.0 must be rebuilt, and the old status,
 * optimizer, score and initializer names (EMBER_E_*, EMBER_OPT_*,
 * EMBER_SCORES_*, EMBER_INITIALIZER_*) are now those of <ember/types.h>
 * (EMBER_*, EMBER_OPTIM_*, EMBER_SCORE_*, EMBER_INIT_*).
 *
 * Linking: pkg-config ember (libember.so or libember.a; needs gRPC C core and
 * protobuf-c). No global state: clients are independent.
 */
#ifndef EMBER_EMBER_H
#define EMBER_EMBER_H

#include <stddef.h>
#include <stdint.h>

#include <ember/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_CLIENT_VERSION "0.1.0"

/* The gRPC name of a code ("UNAVAILABLE"); static string. The exported form of
 * ember_status_name (<ember/types.h>), for callers that bind by symbol. */
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
    /* sizeof(ember_client_options) as the caller was compiled: set by
     * ember_client_options_init (see "Growing structs" above). */
    uint32_t struct_size;
    /* Where the shards are, the first of these that is set (the caller's
     * options, then the environment; ember_client_shard_source says which):
     *   1. shards: "host:port,host:port,..." in shard order (spaces around
     *      entries ignored; host may be a name, IPv4 or [IPv6]; gRPC URIs such
     *      as "unix:/path" or "dns:///h:p" pass through);
     *   2. shard_pattern with shard_count (or EMBER_SHARD_COUNT): a StatefulSet's
     *      names, "ember-{i}.ember.ns.svc:7070", every {i} replaced by 0..count-1;
     *   3. the environment variable EMBER_SHARDS (as 1);
     *   4. TF_CONFIG, a TensorFlow job's cluster spec (JSON): its cluster.ps
     *      list, ps task i being shard i, so a parameter-server job's config
     *      points at ember as it is. Other jobs and "task" are ignored; a
     *      TF_CONFIG without ps tasks is skipped; a malformed one fails the open;
     *   5. EMBER_SHARD_PATTERN with shard_count or EMBER_SHARD_COUNT (as 2).
     * The order of the list is the shard index: every client of a cluster must
     * use the same order. The same address twice is refused.
     * A shard with followers may be given as its replicas, "leader|follower|..."
     * (at most 8; README "Replication and failover"): calls go to the first
     * until one is refused "not the leader" or gets no answer (UNAVAILABLE,
     * DEADLINE_EXCEEDED); the client then asks each replica's health service
     * "ember.v1.Leader" which one leads now, and resends that call once there
     * (a push with its sequence number: the new leader, which copied the old
     * one's applied pairs with its rows, answers a push it already holds as a
     * duplicate). Serving
     * pulls with EMBER_PULL_FOLLOWER go to the followers. */
    const char *shards;
    const char *shard_pattern;
    unsigned shard_count;
    /* Deadline of each call, ms, retries included (0: 10,000). With a retry
     * budget (retry_budget_ms below), the deadline of each attempt instead. */
    unsigned timeout_ms;
    /* Retries of a shard's request after UNAVAILABLE, with exponential backoff
     * from 50 ms (0: 5 retries; a retry never outlives the call's deadline).
     * Pulls, pushes (applied at most once on the server) and describe are
     * retried; create, drop, save and load are not. Used only when the retry
     * budget is 0. */
    unsigned max_retries;
    /* Wire type of values and gradients (default float32). float16/bfloat16
     * are converted with F16C/AVX2 where the CPU has them, bit for bit as the
     * scalar code does; EMBER_WIRE_SCALAR=1 in the environment forces the
     * scalar code. */
    ember_dtype wire_dtype;
    /* Client id for at-most-once pushes (0: random at open). Give each worker
     * its own; reusing one after a restart is safe (sequence numbers start
     * from the clock, above any the old process used). */
    uint64_t client_id;
    /* TCP connections per shard (0: 1, shared with other clients in the
     * process to the same address; > 1: this client's own, calls spread over
     * them), at most 64. */
    unsigned channels_per_shard;
    /* Security (README "Securing a deployment"). Each unset field falls back to
     * its environment variable: EMBER_TLS_CA, EMBER_TLS_CERT, EMBER_TLS_KEY,
     * EMBER_TLS_SERVER_NAME, EMBER_TOKEN, EMBER_TOKEN_FILE.
     * TLS when tls_ca or tls_cert is set: PEM file paths of the CA that signed
     * the shards' certificates, and of this client's certificate and key for
     * mutual TLS (both or neither). tls_server_name: the name the shards'
     * certificates carry when it is not the host of the address. */
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name;
    /* The bearer token sent with every call (`authorization: Bearer <token>`),
     * or a file holding it (trailing newline ignored); token wins. */
    const char *token, *token_file;
    /* ---- ABI 1.1 (ember_client_options_init@EMBER_1.1) ---- */
    /* Retry budget, ms: how long a call (every one but create, drop, save and
     * load; an async call retries in its ember_wait) keeps retrying a shard
     * that is unavailable: it refuses connections, answers UNAVAILABLE (down,
     * restarting, shutting down), or lets an attempt pass its deadline
     * (timeout_ms is then per attempt; e.g. a stopped process). Backoff
     * doubles from 50 ms up to 2 s, with jitter; the budget runs from the
     * call's start, and the call fails with the last attempt's status
     * ("shard i (host:port): ... (N attempts over S s; retry budget B s)")
     * only once it has passed. Any other status is returned at once. Pushes
     * are resent with their sequence number, so a shard that stayed up
     * applies each at most once; across a shard's restart see README
     * "Failures". 0: no budget, max_retries quick retries within one
     * deadline (the behaviour before ABI 1.1). EMBER_RETRY_BUDGET_DEFAULT
     * (what init sets): the environment's EMBER_RETRY_BUDGET (seconds,
     * decimals allowed, 0 for none), else 120 s, room for a pod to be
     * rescheduled and restore its checkpoint. Other negative values, and over
     * a week, are refused (INVALID_ARGUMENT at open). */
    int retry_budget_ms;
    /* Called once when a shard becomes unavailable to a retrying call
     * (available 0) and once when a call to it next succeeds or gets any
     * other answer (available 1), with a one-line message; from the thread of
     * the call that saw it, so keep it short. NULL: the line goes to stderr
     * ("ember: shard 1 (h:p) unavailable: ...; retrying for up to 120 s"),
     * unless EMBER_RETRY_QUIET=1 is in the environment. */
    void (*shard_notice)(void *arg, unsigned shard, const char *address, int available,
                         const char *message);
    void *shard_notice_arg;
} ember_client_options;

/* retry_budget_ms's default: EMBER_RETRY_BUDGET, else 120 s. */
#define EMBER_RETRY_BUDGET_DEFAULT (-1)
#define EMBER_RETRY_BUDGET_DEFAULT_MS 120000

/* Fills `o` with the defaults above and sets o->struct_size. */
void ember_client_options_init(ember_client_options *o);

/* Opens a client. Connections are made lazily; an unreachable shard shows up as
 * EMBER_UNAVAILABLE on the first call that needs it, once the retry budget
 * has passed. Starts one thread (the
 * client's network poller). Returns NULL and fills `err`: INVALID_ARGUMENT for
 * bad options (no shards, a malformed or repeated address, a pattern without
 * {i} or without a count, an unknown wire_dtype, over 64 channels per shard,
 * a struct_size this library does not know, a bad retry budget or
 * EMBER_RETRY_BUDGET, an unreadable TLS or token file, a certificate without its key);
 * RESOURCE_EXHAUSTED when out of memory or threads. */
ember_client *ember_client_open(const ember_client_options *opts, ember_error *err);

/* Closes the client. Calls waiting in other threads (a sync call, or
 * ember_wait) are cancelled as by ember_client_cancel and waited for: they
 * return promptly with EMBER_CANCELLED, even in the middle of a retry budget.
 * Async calls that no thread is waiting on must be waited on first (after
 * ember_client_cancel that is prompt). NULL is a no-op. */
void ember_client_close(ember_client *c);

/* Cancels c's calls: every call waiting now (a sync call, or ember_wait,
 * retrying or in flight) and every one made later returns EMBER_CANCELLED
 * ("client cancelled") within about 0.1 s; then only ember_wait and
 * ember_client_close are of use. Thread-safe; NULL is a no-op. */
void ember_client_cancel(ember_client *c);

unsigned ember_client_shard_count(const ember_client *c);
/* The client id its pushes carry (options.client_id, or the random one). */
uint64_t ember_client_id(const ember_client *c);
/* The address of shard i, or NULL. */
const char *ember_client_shard_address(const ember_client *c, unsigned i);
/* Where the shard list came from: "options.shards", "options.shard_pattern",
 * "EMBER_SHARDS", "TF_CONFIG" or "EMBER_SHARD_PATTERN" (static strings); NULL
 * for a NULL client. */
const char *ember_client_shard_source(const ember_client *c);

/* The documented key→shard function, fixed forever (clients, checkpoint import
 * and resharding tools must agree): jump consistent hash (Lamping & Veach 2014)
 * of mix(key), where
 *   mix(k):  z = k ^ 0x5bd1e9955bd1e995;
 *            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
 *            z = (z ^ (z >> 27)) * 0x94d049bb133111eb;  return z ^ (z >> 31);
 *   jump(z, n): b = -1, j = 0; while (j < n) { b = j; z = z * 2862933555777941757 + 1;
 *            j = (int64)((b + 1) * (2^31 / (double)((z >> 33) + 1))); } return b;
 * all in uint64 arithmetic mod 2^64. splitmix64's finaliser is independent of the
 * servers' bucket hash (Murmur3's fmix64), so one shard's keys still spread over
 * all its buckets. Going from N to N+1 shards moves only 1/(N+1) of the keys, all
 * to the new shard. shard_count 0 or 1: 0. */
unsigned ember_shard_of(uint64_t key, unsigned shard_count);

/* Shard ownership. A server started with --shard-index I --shard-count N > 1
 * refuses (FAILED_PRECONDITION) any pull or push holding a key that
 * ember_shard_of(key, N) does not map to I, whole: nothing is applied. When a
 * pull or push gets such a refusal, the library asks every shard for its index
 * (as this call does) and reports "the shard list ... is out of order ...:
 * host:port (position 0) is shard 1 of 2, ..." followed by the refusal.
 * This call checks the list up front: ServerInfo on every shard, compared with
 * its position and the list's length. Servers started without --shard-count
 * (1: they take any key) are not checked. Returns 0, FAILED_PRECONDITION with
 * the message above, or the status of a shard that failed to answer
 * (UNAVAILABLE, UNAUTHENTICATED, PERMISSION_DENIED: ServerInfo needs the admin
 * role where roles are on). */
int ember_check_shards(ember_client *c, ember_error *err);

/* ---- training and serving ------------------------------------------------- */

/* Pull flags. */
#define EMBER_PULL_INSERT 0u   /* training: missing keys are created (find_or_insert) */
#define EMBER_PULL_SERVE  1u   /* serving: missing keys are not created (find) */
/* With EMBER_PULL_SERVE: read from a follower of each shard given as
 * "leader|follower|..." (README "Replication and failover"), round robin over
 * its followers; rows may be as old as the follower's lag. A shard given as
 * one address is read from it. */
#define EMBER_PULL_FOLLOWER 2u

/* Pulls the rows of keys[0..n) into out[n*dim] in the caller's order; `dim` must
 * be the table's. Duplicate keys are fetched once and copied to every place
 * they occur. Each shard gets one request (several for a shard's part over
 * 16 MiB of values), all sent at once. flags: EMBER_PULL_INSERT or _SERVE.
 * n = 0 sends nothing. On failure `out` is untouched.
 * Returns 0, or INVALID_ARGUMENT (reserved key, NULL pointers, dim 0, unknown
 * flags, or a dim that is not the table's: the message gives the table's; a
 * training pull may have created its missing keys before the reply showed the
 * mismatch), NOT_FOUND (no such table), DEADLINE_EXCEEDED, UNAVAILABLE,
 * RESOURCE_EXHAUSTED (out of memory, or over a server's limits),
 * FAILED_PRECONDITION (a shard refused a key that is not its own: the shard list
 * is out of order or of another length, see ember_check_shards; nothing was
 * applied on that shard), PERMISSION_DENIED (where roles are on: a reader's
 * EMBER_PULL_INSERT, or its push), or any other status a shard sent. */
int ember_pull(ember_client *c, const char *table, const uint64_t *keys, size_t n,
               float *out, uint32_t dim, unsigned flags, ember_error *err);

/* Pushes gradients grads[n*dim] for keys[0..n) to the table's optimizer; equal
 * keys' gradients are summed first (in caller order). Every request carries
 * (client_id, a per-shard sequence number): when the library retries it after
 * UNAVAILABLE, a shard that had applied it already acknowledges it without
 * applying it again. Statuses as ember_pull (a wrong dim is the server's
 * INVALID_ARGUMENT), plus INVALID_ARGUMENT for a non-finite gradient when the
 * table refuses them. */
int ember_push(ember_client *c, const char *table, const uint64_t *keys, size_t n,
               const float *grads, uint32_t dim, ember_error *err);

/* Push modes beyond gradients (embeddings written as they are). For ASSIGN and
 * INSERT_OR_ASSIGN, of equal keys the last one's values are sent; ACCUM sums. */
typedef enum ember_push_mode {
    EMBER_PUSH_GRADIENTS = 0,
    EMBER_PUSH_ASSIGN = 1,           /* existing keys only */
    EMBER_PUSH_ACCUM = 2,            /* existing keys only, added */
    EMBER_PUSH_INSERT_OR_ASSIGN = 3,
} ember_push_mode;

int ember_push_mode_values(ember_client *c, const char *table, const uint64_t *keys,
                           size_t n, const float *values, uint32_t dim, ember_push_mode mode,
                           ember_error *err);

/* One round trip per shard: push grads for push_keys, then pull pull_keys; the
 * pull sees the push. Either side may be empty (n = 0). When either side is
 * over one request's size (see ember_pull) it is done as ember_push, then
 * ember_pull: two round trips, the same result. */
int ember_push_pull(ember_client *c, const char *table, const uint64_t *push_keys,
                    size_t n_push, const float *grads, const uint64_t *pull_keys,
                    size_t n_pull, float *out, uint32_t dim, unsigned pull_flags,
                    ember_error *err);

/* ---- options: scores, found flags, epochs ---------------------------------- */

/* What a pull can say beyond ember_pull's arguments (a growing struct: fill it
 * with ember_pull_options_init, then set fields). */
typedef struct ember_pull_options {
    uint32_t struct_size;
    /* EMBER_PULL_INSERT (default) or EMBER_PULL_SERVE. */
    unsigned flags;
    /* scores[n] (NULL: none): CUSTOM tables' score of each key, set on every key
     * the pull touches (a new key starts with it, an existing one takes it).
     * Training pulls only (INVALID_ARGUMENT with EMBER_PULL_SERVE); other score
     * policies ignore them. Of equal keys in one call, the LAST one's score is
     * sent (the table itself keeps the last given). */
    const uint64_t *scores;
    /* found[n] (NULL: not asked): set to 1 where the key existed on its shard
     * before this call, 0 where this pull created it (or, serving, where it is
     * missing and its row is the initializer's). Equal keys are fetched once,
     * so every occurrence gets the same flag, in the caller's order. */
    uint8_t *found;
} ember_pull_options;

/* What a push can say beyond ember_push's arguments (a growing struct). */
typedef struct ember_push_options {
    uint32_t struct_size;
    /* EMBER_PUSH_GRADIENTS (default), _ASSIGN, _ACCUM or _INSERT_OR_ASSIGN. */
    int mode;
    /* scores[n] (NULL: none): CUSTOM tables' score of each key pushed; the
     * LAST one's score of equal keys wins (gradients of equal keys are summed,
     * values of equal keys: the last wins). Not with ACCUM (INVALID_ARGUMENT). */
    const uint64_t *scores;
    /* EPOCH_LRU / EPOCH_LFU tables: the trainer's epoch (a day, a pass over
     * the data), as HierarchicalKV's global epoch. 0: each shard's table epoch
     * as it is. Above a shard's table epoch: that epoch first moves up to it
     * (for this push and every later call on that shard, as ember_set_epoch),
     * so workers that stamp their pushes move every shard forward without an
     * admin call. At or below it: nothing moves (a straggler's push cannot take
     * a table back) and the keys get the table's epoch. Only ember_set_epoch
     * lowers an epoch. Other policies ignore it. */
    uint32_t epoch;
    /* ---- later in ABI 1.1 ---- */
    /* Acknowledgement (README "Replication and failover"): EMBER_ACK_DEFAULT
     * (the table's), EMBER_ACK_ASYNC (answered once applied on the leader) or
     * EMBER_ACK_REPLICATED (answered once ack_replicas followers — 0: the
     * table's, whose 0 is 1 — hold it too; UNAVAILABLE, nothing applied, when
     * fewer are attached; DEADLINE_EXCEEDED when they do not have it before the
     * client's deadline: applied on the leader, not acknowledged). */
    int ack;
    uint32_t ack_replicas;
} ember_push_options;

/* ember_push_options.ack and ember_table_spec.ack (the wire's AckMode). */
enum { EMBER_ACK_DEFAULT = 0, EMBER_ACK_ASYNC = 1, EMBER_ACK_REPLICATED = 2 };

/* Fill `o` with the defaults above and set o->struct_size. */
void ember_pull_options_init(ember_pull_options *o);
void ember_push_options_init(ember_push_options *o);

/* ember_pull with options (NULL: the defaults, which is ember_pull with
 * EMBER_PULL_INSERT). Statuses as ember_pull, plus INVALID_ARGUMENT for scores
 * with EMBER_PULL_SERVE or a struct_size this library does not know. */
int ember_pull_opts(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                    float *out, uint32_t dim, const ember_pull_options *o, ember_error *err);
/* ember_push_mode_values with options (NULL: gradients, no scores, epoch 0).
 * Statuses as ember_push, plus INVALID_ARGUMENT for an unknown mode, scores
 * with ACCUM, or a struct_size this library does not know. */
int ember_push_opts(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                    const float *values, uint32_t dim, const ember_push_options *o,
                    ember_error *err);

/* ---- erase and epochs ---------------------------------------------------- */

/* Removes keys[0..n) from the table, each on its shard; *erased (may be NULL) =
 * how many of them existed (equal keys count once). All or nothing per call:
 * a reserved key is refused before anything is sent; a shard refuses its whole
 * part for an unknown table (NOT_FOUND) or more keys than its
 * --max-keys-per-request (RESOURCE_EXHAUSTED). Each request carries (client_id,
 * a per-shard sequence) as pushes do, so the library's retries after
 * UNAVAILABLE never erase twice — which matters because a key pushed again
 * between the two tries would be lost. A part whose first try was applied but
 * whose reply was lost counts 0 in *erased (the server remembers that it
 * erased, not how many). Shards are independent: a failure on one may leave
 * the others' parts erased (calling it again is harmless). An erase runs after
 * every push of this client that was answered before it; ember_push_pull and
 * the async calls take no options (use ember_pull_opts / ember_push_opts). */
int ember_erase(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                uint64_t *erased, ember_error *err);

/* Sets the table's epoch on every shard (EPOCH_LRU / EPOCH_LFU scores' high 32
 * bits: keys not touched since an older epoch are evicted first). Any value,
 * lower ones included. NOT_FOUND if a shard lacks the table. Retried on
 * UNAVAILABLE (setting it twice is the same). Checkpoints keep the epoch, so a
 * restart or a load goes on from the one saved. */
int ember_set_epoch(ember_client *c, const char *table, uint32_t epoch, ember_error *err);
/* ---- pooled lookups (multi-hot features) ---------------------------------- */

/* How a bag's rows are combined (ember.v1.Combiner). With per-key weights w (1
 * when weights is NULL), over the bag's keys in the caller's order, in float32:
 *   SUM:   Σ w·x
 *   MEAN:  (Σ w·x) / (Σ w)
 *   SQRTN: (Σ w·x) / sqrt(Σ w²)
 * as TensorFlow's embedding_lookup_sparse; a bag whose divisor is 0 (empty, or
 * weights summing to 0) gives zeros. */
typedef enum ember_combiner {
    EMBER_COMBINER_SUM = 1,
    EMBER_COMBINER_MEAN = 2,
    EMBER_COMBINER_SQRTN = 3,
} ember_combiner;

/* Pooled pull: bag b is keys[offsets[b] .. offsets[b+1]) (CSR: offsets has
 * bags + 1 entries, starting at 0, never decreasing, ending at n); out[bags*dim]
 * gets one combined vector per bag. weights: NULL or n finite floats. The
 * servers pool: each shard gets its part of every bag that has a key there and
 * sends back one vector per bag, not one row per key. With one shard the result
 * equals pooling ember_pull's rows in key order bit for bit (SUM; MEAN and SQRTN
 * divide that sum by the divisor above). With several shards each shard returns
 * its part's weighted SUM, the client adds the parts in shard order and divides
 * by the whole bag's divisor — exact where the sums are, otherwise within the
 * rounding of adding per-shard partial sums (and, with a float16/bfloat16
 * wire_dtype, of each part's vectors on the wire). Keys are not deduplicated (a key
 * twice in a bag counts twice). Each shard's part is one request: a part over a
 * server's --max-keys-per-request / --max-message-bytes is refused
 * (RESOURCE_EXHAUSTED). n = 0 sends nothing and writes zeros.
 * Returns 0, or INVALID_ARGUMENT (offsets that do not start at 0, decrease or
 * do not end at n; a non-finite weight; an unknown combiner or flags; NULL
 * pointers; dim 0 or not the table's; a reserved key; changes nothing),
 * NOT_FOUND, and the other statuses of ember_pull. On failure `out` is
 * untouched. */
int ember_pull_pooled(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                      const uint64_t *offsets, size_t bags, const float *weights,
                      ember_combiner combiner, float *out, uint32_t dim, unsigned flags,
                      ember_error *err);

/* Pooled push: grads[bags*dim] holds the gradient g of each bag's combined
 * vector; each key i of bag b receives g_b · c_i with c_i = w_i (SUM) or
 * w_i / divisor (MEAN, SQRTN; 0 when the divisor is 0), the derivative of the
 * combiner, and then the table's optimizer runs as for ember_push of those
 * per-key gradients: equal keys' gradients are summed and stepped once per
 * request. The divisor is the whole bag's: with several shards the client sends
 * it with each shard's part, so the table ends up the same for any shard count.
 * At most once per shard on retries, as ember_push. Statuses as
 * ember_pull_pooled, plus INVALID_ARGUMENT for a non-finite gradient when the
 * table refuses them. */
int ember_push_pooled(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                      const uint64_t *offsets, size_t bags, const float *weights,
                      ember_combiner combiner, const float *grads, uint32_t dim,
                      ember_error *err);

/* ---- async: prefetch the next batch while computing this one -------------- */

typedef struct ember_pending ember_pending;

/* Async calls: the requests are sent before these return and progress while the
 * caller computes; ember_wait collects the replies (and runs any retries), so
 * call it exactly once per handle, and before ember_client_close.
 *
 * Starts a pull; keys and out must stay valid until ember_wait returns. Returns
 * NULL (and fills err, as ember_pull) if it cannot start. */
ember_pending *ember_pull_async(ember_client *c, const char *table, const uint64_t *keys,
                                size_t n, float *out, uint32_t dim, unsigned flags,
                                ember_error *err);
/* Starts a push; keys and grads must stay valid until ember_wait returns. */
ember_pending *ember_push_async(ember_client *c, const char *table, const uint64_t *keys,
                                size_t n, const float *grads, uint32_t dim, ember_error *err);
/* Waits for the call, frees the handle, returns its status (as the synchronous
 * call would). NULL: INVALID_ARGUMENT. */
int ember_wait(ember_pending *p, ember_error *err);

/* ---- tables (fanned out to every shard) ----------------------------------- */

typedef struct ember_table_spec {
    /* sizeof(ember_table_spec) as the caller was compiled: set by
     * ember_table_spec_init (see "Growing structs" above). */
    uint32_t struct_size;
    uint32_t dim;
    uint64_t capacity_per_shard;
    ember_score_policy score_policy;
    uint64_t seed;
    struct {
        ember_optim_kind kind;
        float lr, eps, initial_accumulator, beta1, beta2, weight_decay;
        float l1, l2, lr_power, beta;
    } optimizer;
    struct {
        ember_init_kind kind;
        float a, b;
    } initializer;
    uint32_t admission_min_count;
    uint32_t admission_sketch_width;
    int zero_nonfinite;
    const char *backend;             /* "cpu", "gpu", NULL: the server's default */
    /* ---- ABI 1.1 (libember.map EMBER_1.1) ---- */
    /* gpu tables: bytes of rows kept in device memory (HBM), the rest in pinned
     * host memory; 0: the server's --hbm-bytes (whose 0 is every row on the
     * device). A cpu table keeps every row in host memory and ignores it (the
     * server records it with the table's checkpoint placement, so a restore on a
     * GPU server honours it). */
    uint64_t hbm_bytes;
    /* Online growth: 0 (or ≤ capacity_per_shard) = a fixed size. Else each
     * shard's table doubles while serving, before a call whose keys would pass
     * max_load_factor × its capacity, up to the largest capacity × 2^k ≤
     * max_capacity_per_shard. Rows move whole; calls on the table wait while it
     * doubles. A server with --max-table-host-bytes / --max-table-hbm-bytes
     * checks the largest size at creation. */
    uint64_t max_capacity_per_shard;
    float max_load_factor;           /* [0.1, 1]; 0 = 0.75 */
    /* Time to live in seconds (0: off): rows not written (pushed, assigned,
     * created) for this long are removed by each server in the background;
     * reads do not keep a row alive. See ember_set_ttl. */
    uint64_t ttl_seconds;
    /* Pushes' acknowledgement when a push leaves it to the table
     * (EMBER_ACK_DEFAULT = async, EMBER_ACK_ASYNC, EMBER_ACK_REPLICATED) and the
     * followers a replicated push waits for (0 = 1). README "Replication and
     * failover"; kept by each server process, not in checkpoints. */
    int ack;
    uint32_t ack_replicas;
} ember_table_spec;

/* Defaults: LRU, SGD lr 0.01 (Adam betas 0.9/0.999, eps 1e-8, accumulator 0.1,
 * FTRL lr_power -0.5), uniform(-0.01, 0.01); dim and capacity 0 (caller sets);
 * backend NULL and hbm_bytes 0 (the server's defaults); struct_size set. */
void ember_table_spec_init(ember_table_spec *s);

/* Table admin runs on every shard at once, with the client's deadline. A
 * fan-out that fails half-way is not undone: run it again with if_not_exists /
 * if_exists to converge.
 *
 * Creates the table on every shard (capacity_per_shard keys on each).
 * if_not_exists: an existing table is fine if its dim is the same (the rest of
 * its config is not compared). INVALID_ARGUMENT for dim or capacity 0, a bad
 * config or a struct_size this library does not know, a backend other than
 * "cpu"/"gpu"); ALREADY_EXISTS (also for an existing table of another dim);
 * FAILED_PRECONDITION for backend "gpu" on a server that serves cpu tables only
 * (nothing is created there). Placement: `backend` and `hbm_bytes` choose where
 * each shard keeps the table's rows (README "Placement"). */
int ember_create_table(ember_client *c, const char *name, const ember_table_spec *s,
                       int if_not_exists, ember_error *err);
/* Drops the table on every shard. if_exists: a missing table is fine; else
 * NOT_FOUND. */
int ember_drop_table(ember_client *c, const char *name, int if_exists, ember_error *err);

/* Sets the table's time to live on every shard (seconds; 0 turns it off), as
 * ember_table_spec.ttl_seconds. Rows already past a new, shorter TTL go at the
 * servers' next sweeps. NOT_FOUND (table), INVALID_ARGUMENT (above about a
 * century), FAILED_PRECONDITION (a backend that cannot expire rows). */
int ember_set_ttl(ember_client *c, const char *name, uint64_t ttl_seconds, ember_error *err);

/* Summed over shards (capacity, size, counters), load factor = size/capacity,
 * version_max the largest shard's. NOT_FOUND if a shard lacks the table;
 * FAILED_PRECONDITION if shards disagree on its dim. */
typedef struct ember_table_info {
    char name[65];
    uint32_t dim;
    uint64_t size, capacity;
    double load_factor;
    uint64_t evictions, admission_drops, version_max;
} ember_table_info;
int ember_describe_table(ember_client *c, const char *name, ember_table_info *out,
                         ember_error *err);

/* Lists every table that any shard holds, in name order, each summed over the
 * shards that hold it (as ember_describe_table). Fills out[0..min(cap, *count))
 * and sets *count to the number of tables: when *count > cap, call again with a
 * larger array (out may be NULL when cap is 0). A table that only some shards
 * hold (a create that failed half-way) is listed with those shards' sums;
 * ember_describe_table names the shard that lacks it. Retried on UNAVAILABLE as
 * describe is. INVALID_ARGUMENT for a NULL client or count, FAILED_PRECONDITION
 * if shards disagree on a table's dim. */
int ember_list_tables(ember_client *c, ember_table_info *out, size_t cap, size_t *count,
                      ember_error *err);

/* Saves every shard's tables (table NULL: all) to the servers' checkpoint dirs
 * (dir NULL) or `dir` on each server: <dir>/<table>.ckpt on every shard, so
 * shards must not share one directory. FAILED_PRECONDITION when dir is NULL and
 * a server has no --checkpoint-dir.
 * ember_load reads them back (table NULL: every table found), creating tables
 * that do not exist from the file's config; DATA_LOSS for a corrupt file. */
int ember_save(ember_client *c, const char *table, const char *dir, ember_error *err);
int ember_load(ember_client *c, const char *table, const char *dir, ember_error *err);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_EMBER_H */
