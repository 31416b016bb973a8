/* config.c — flags and EMBER_* environment variables (config.h). */
#include "server/config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/log.h"

typedef struct opt {
    const char *flag, *env, *arg, *help;
} opt;

static const opt opts[] = {
    {"listen", "EMBER_LISTEN", "HOST:PORT", "address to serve on (default 0.0.0.0:7070)"},
    {"threads", "EMBER_THREADS", "N", "worker threads, all serving one completion queue (default: online cores)"},
    {"backend", "EMBER_BACKEND", "auto|gpu|cpu", "table backend (default auto: gpu when a GPU is visible, else cpu)"},
    {"gpu", "EMBER_GPU", "N", "the CUDA device the gpu backend uses (default 0)"},
    {"hbm-bytes", "EMBER_HBM_BYTES", "N", "gpu backend: bytes of each table's rows in device memory, the rest in pinned host memory; a table's config may set its own (default 0: all rows)"},
    {"max-keys-per-request", "EMBER_MAX_KEYS_PER_REQUEST", "N", "most keys in one Pull/Push (default 1048576)"},
    {"max-message-bytes", "EMBER_MAX_MESSAGE_BYTES", "N", "largest message received or sent (default 256M)"},
    {"max-tables", "EMBER_MAX_TABLES", "N", "most tables on this shard (default 1024)"},
    {"max-concurrent-calls", "EMBER_MAX_CONCURRENT_CALLS", "N", "most calls in progress at once (Health excluded); a call over it is refused RESOURCE_EXHAUSTED before its request is read (default 4096)"},
    {"max-table-host-bytes", "EMBER_MAX_TABLE_HOST_BYTES", "N", "most host memory one table may take (a cpu table's slots, keys, rows and optimizer state; a hybrid gpu table's rows in pinned host memory); CreateTable, Load and the restore at start over it are refused RESOURCE_EXHAUSTED before allocating (default 0: no cap)"},
    {"max-table-hbm-bytes", "EMBER_MAX_TABLE_HBM_BYTES", "N", "most device (HBM) memory one gpu table may take; over it is refused the same way (default 0: no cap)"},
    {"shard-index", "EMBER_SHARD_INDEX", "I", "this shard's index, reported and written in checkpoints (default 0)"},
    {"shard-count", "EMBER_SHARD_COUNT", "N", "number of shards (default 1)"},
    {"key-ownership", "EMBER_KEY_OWNERSHIP", "check|off", "with --shard-count > 1, refuse (FAILED_PRECONDITION) a Pull/Push/PushPull or Import holding a key that ember_shard_of maps to another shard (default check; off: take any key, for a server labelled with an index but fed by hand)"},
    {"replica-of", "EMBER_REPLICA_OF", "HOST:PORT", "start as a follower of the leader at HOST:PORT: create its tables, copy their rows and tail its writes, serve pulls without insert, refuse writes FAILED_PRECONDITION \"not the leader\" (README \"Replication and failover\"; default: none, a leader)"},
    {"replica-tls-ca", "EMBER_REPLICA_TLS_CA", "FILE", "a follower reaches its leader over TLS, verifying the leader's certificate against this PEM CA; with --tls-cert/--tls-key it presents them (mutual TLS: the leader's --admin-identities must name it) (default: plaintext)"},
    {"checkpoint-dir", "EMBER_CHECKPOINT_DIR", "DIR", "this shard's checkpoints: <dir>/<table>.ckpt (the newest), <dir>/history/ (older ones); restored at start, written by Admin/Save, every --checkpoint-interval and at SIGTERM; locked against a second server (default: none)"},
    {"checkpoint-interval", "EMBER_CHECKPOINT_INTERVAL", "DURATION", "save every table to --checkpoint-dir this often, e.g. 10m, 90s, 1h, 500ms (a bare number is seconds; default 0: off)"},
    {"checkpoint-keep", "EMBER_CHECKPOINT_KEEP", "N", "checkpoints kept per table, the newest included: the older ones go to <dir>/history/ (default 2; 1 keeps only the newest)"},
    {"checkpoint-restore", "EMBER_CHECKPOINT_RESTORE", "on|off", "at start, restore every <dir>/<table>.ckpt; a damaged one, or one of another shard, stops the start (exit 1) (default on)"},
    {"checkpoint-on-exit", "EMBER_CHECKPOINT_ON_EXIT", "on|off", "at SIGTERM/SIGINT, after in-flight calls end, save every table to --checkpoint-dir before exiting (default on)"},
    {"checkpoint-exit-timeout-ms", "EMBER_CHECKPOINT_EXIT_TIMEOUT_MS", "MS", "give up the exit save after this long and exit 1, the previous checkpoint intact (default 0: no bound; keep Kubernetes' terminationGracePeriodSeconds above grace + save time)"},
    {"ttl-sweep-interval", "EMBER_TTL_SWEEP_INTERVAL", "DURATION", "how often tables with a TTL (ttl_seconds) are swept for rows past it, beside serving, one bucket at a time; a row lives at least its TTL after its last write and at most this much longer (default 1s; 10ms..1h)"},
    {"log-level", "EMBER_LOG_LEVEL", "LEVEL", "error|warn|info|debug (default info); debug adds one line per call"},
    {"log-format", "EMBER_LOG_FORMAT", "logfmt|json", "one line per event as key=value pairs or as a JSON object (default logfmt)"},
    {"metrics-listen", "EMBER_METRICS_LISTEN", "HOST:PORT", "serve Prometheus metrics over HTTP at http://HOST:PORT/metrics (default: off)"},
    {"progress-interval-ms", "EMBER_PROGRESS_INTERVAL_MS", "MS", "log the progress of a save, load or restore (rows, rate, ETA) at info level this often (default 5000; 0: after every chunk of rows)"},
    {"shutdown-grace-ms", "EMBER_SHUTDOWN_GRACE_MS", "MS", "on SIGTERM, wait this long for in-flight calls before cancelling them (default 10000)"},
    {"coalesce", "EMBER_COALESCE", "auto|on|off", "run concurrent Pull/Push calls on one table as one table call (default auto: on for tables on the gpu backend, where large batches pay; a cpu table serves concurrent calls in parallel on its own)"},
    {"coalesce-max-keys", "EMBER_COALESCE_MAX_KEYS", "N", "most keys in one coalesced batch (default 262144; a larger single call runs alone)"},
    {"coalesce-queue-keys", "EMBER_COALESCE_QUEUE_KEYS", "N", "most keys waiting in one table's queue of one kind of call while the table is busy; a call that would go over is refused RESOURCE_EXHAUSTED, never held (default 4 x --coalesce-max-keys, and at least --max-keys-per-request)"},
    {"coalesce-wait-us", "EMBER_COALESCE_WAIT_US", "US", "obsolete, accepted and ignored: a batch is whatever calls piled up while the table was busy, and never waits for more (0..1000000)"},
    {"tls-cert", "EMBER_TLS_CERT", "FILE", "PEM certificate chain: serve TLS only (needs --tls-key; default: plaintext)"},
    {"tls-key", "EMBER_TLS_KEY", "FILE", "PEM private key of --tls-cert"},
    {"tls-client-ca", "EMBER_TLS_CLIENT_CA", "FILE", "PEM CA bundle: mutual TLS, every client must present a certificate it signed (needs --tls-cert)"},
    {"worker-token-file", "EMBER_WORKER_TOKEN_FILE", "FILE", "file holding the workers' bearer token (Shard service); EMBER_WORKER_TOKEN holds the token itself instead. Setting any token or identity list turns authentication on"},
    {"admin-token-file", "EMBER_ADMIN_TOKEN_FILE", "FILE", "file holding the admins' bearer token (Admin and Shard services); EMBER_ADMIN_TOKEN holds the token itself instead"},
    {"worker-identities", "EMBER_WORKER_IDENTITIES", "LIST", "comma-separated mTLS client certificate names (CN or a DNS/URI/IP SAN) that act as workers (needs --tls-client-ca)"},
    {"admin-identities", "EMBER_ADMIN_IDENTITIES", "LIST", "comma-separated mTLS client certificate names that act as admins (needs --tls-client-ca)"},
    {"reader-token-file", "EMBER_READER_TOKEN_FILE", "FILE", "file holding the readers' bearer token (inference clients: Pull with insert_missing=false only); EMBER_READER_TOKEN holds the token itself instead"},
    {"reader-identities", "EMBER_READER_IDENTITIES", "LIST", "comma-separated mTLS client certificate names that act as readers (needs --tls-client-ca)"},
};
#define NOPTS (sizeof opts / sizeof opts[0])

void srv_config_usage(FILE *out)
{
    fprintf(out,
            "usage: ember-server [flags]\n"
            "Serves ember.v1.Shard, ember.v1.Admin and grpc.health.v1.Health over gRPC.\n"
            "Every flag can also be set by its environment variable; the flag wins.\n\n");
    for (size_t i = 0; i < NOPTS; i++) {
        char left[64];
        snprintf(left, sizeof left, "--%s %s", opts[i].flag, opts[i].arg);
        fprintf(out, "  %-32s %s\n  %-32s [env %s]\n", left, opts[i].help, "", opts[i].env);
    }
    /* tokens by value, for a Kubernetes Secret mapped into the environment: no
     * flag, since a command line is visible to every user of the machine */
    fprintf(out, "  %-32s %s\n  %-32s [env %s]\n", "(environment only)",
            "the workers' bearer token itself (instead of --worker-token-file)", "",
            "EMBER_WORKER_TOKEN");
    fprintf(out, "  %-32s %s\n  %-32s [env %s]\n", "(environment only)",
            "the admins' bearer token itself (instead of --admin-token-file)", "",
            "EMBER_ADMIN_TOKEN");
    fprintf(out, "  %-32s %s\n  %-32s [env %s]\n", "(environment only)",
            "the readers' bearer token itself (instead of --reader-token-file)", "",
            "EMBER_READER_TOKEN");
    fprintf(out, "  %-32s %s\n", "--help", "this text");
    fprintf(out, "\nSizes take K, M or G suffixes (powers of 1024). SIGTERM/SIGINT: stop "
                 "accepting, finish in-flight calls,\nsave every table when --checkpoint-dir "
                 "is set (a second signal abandons that save), exit 0\n(1 when the save "
                 "failed).\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    unsigned shift = 0;
    if (*end == 'K' || *end == 'k') shift = 10, end++;
    else if (*end == 'M' || *end == 'm') shift = 20, end++;
    else if (*end == 'G' || *end == 'g') shift = 30, end++;
    if (*end)
        return -1;
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

/* "10m", "90s", "1h", "500ms", "0"; a bare number is seconds. At most 30 days. */
static int parse_duration_ms(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return -1;
    uint64_t unit;
    if (!*end || !strcmp(end, "s"))
        unit = 1000;
    else if (!strcmp(end, "ms"))
        unit = 1;
    else if (!strcmp(end, "m"))
        unit = 60000;
    else if (!strcmp(end, "h"))
        unit = 3600000;
    else
        return -1;
    if (v > UINT64_C(30) * 86400000 / unit)
        return -1;
    *out = (uint64_t)v * unit;
    return 0;
}

static int parse_on_off(const char *s)
{
    if (!strcmp(s, "on") || !strcmp(s, "true") || !strcmp(s, "1"))
        return 1;
    if (!strcmp(s, "off") || !strcmp(s, "false") || !strcmp(s, "0"))
        return 0;
    return -1;
}

static int set(srv_config *c, size_t i, const char *v, const char *src, char *msg, size_t cap)
{
    uint64_t u = 0;
    const char *name = opts[i].flag;
    int numeric = strcmp(name, "listen") && strcmp(name, "backend") &&
                  strcmp(name, "checkpoint-dir") && strcmp(name, "log-level") &&
                  strcmp(name, "log-format") && strcmp(name, "metrics-listen") &&
                  strcmp(name, "coalesce") && strcmp(name, "checkpoint-interval") &&
                  strcmp(name, "ttl-sweep-interval") && strcmp(name, "replica-of") &&
                  strcmp(name, "replica-tls-ca") &&
                  strcmp(name, "key-ownership") &&
                  strcmp(name, "checkpoint-restore") && strcmp(name, "checkpoint-on-exit") &&
                  strncmp(name, "tls-", 4) && !strstr(name, "-token-file") &&
                  !strstr(name, "-identities");
    if (numeric && parse_u64(v, &u)) {
        snprintf(msg, cap, "%s: '%s' is not a non-negative number", src, v);
        return -1;
    }
    if (!strcmp(name, "listen")) {
        if (!*v || strlen(v) >= sizeof c->listen || !strrchr(v, ':')) {
            snprintf(msg, cap, "%s: '%s' is not HOST:PORT", src, v);
            return -1;
        }
        strcpy(c->listen, v);
    } else if (!strcmp(name, "threads")) {
        if (u < 1 || u > 256) {
            snprintf(msg, cap, "%s: %s is outside 1..256", src, v);
            return -1;
        }
        c->threads = (unsigned)u;
    } else if (!strcmp(name, "backend")) {
        if (strcmp(v, "auto") && strcmp(v, "gpu") && strcmp(v, "cpu")) {
            snprintf(msg, cap, "%s: '%.32s' is not auto, gpu or cpu", src, v);
            return -1;
        }
        strcpy(c->backend, v);
    } else if (!strcmp(name, "gpu")) {
        if (u > 1023) {
            snprintf(msg, cap, "%s: %s is outside 0..1023", src, v);
            return -1;
        }
        c->gpu = (unsigned)u;
    } else if (!strcmp(name, "hbm-bytes")) {
        c->hbm_bytes = u;
    } else if (!strcmp(name, "max-keys-per-request")) {
        if (u < 1) {
            snprintf(msg, cap, "%s must be ≥ 1", src);
            return -1;
        }
        c->max_keys_per_request = u;
    } else if (!strcmp(name, "max-message-bytes")) {
        if (u < 1024 || u > 0x7fffffffu) {
            snprintf(msg, cap, "%s: %s is outside 1K..2G-1 (gRPC's limit is an int)",
                     src, v);
            return -1;
        }
        c->max_message_bytes = u;
    } else if (!strcmp(name, "max-tables")) {
        if (u < 1 || u > 1000000) {
            snprintf(msg, cap, "%s: %s is outside 1..1000000", src, v);
            return -1;
        }
        c->max_tables = (unsigned)u;
    } else if (!strcmp(name, "max-concurrent-calls")) {
        if (u < 1 || u > 1000000) {
            snprintf(msg, cap, "%s: %s is outside 1..1000000", src, v);
            return -1;
        }
        c->max_concurrent_calls = (unsigned)u;
    } else if (!strcmp(name, "max-table-host-bytes")) {
        c->max_table_host_bytes = u;
    } else if (!strcmp(name, "max-table-hbm-bytes")) {
        c->max_table_hbm_bytes = u;
    } else if (!strcmp(name, "shard-index")) {
        if (u > UINT32_MAX - 1) {
            snprintf(msg, cap, "%s: %s is too large", src, v);
            return -1;
        }
        c->shard_index = (uint32_t)u;
    } else if (!strcmp(name, "shard-count")) {
        if (u < 1 || u > UINT32_MAX) {
            snprintf(msg, cap, "%s: %s must be ≥ 1", src, v);
            return -1;
        }
        c->shard_count = (uint32_t)u;
    } else if (!strcmp(name, "replica-tls-ca")) {
        if (strlen(v) >= sizeof c->replica_tls_ca) {
            snprintf(msg, cap, "%s: path too long", src);
            return -1;
        }
        strcpy(c->replica_tls_ca, v);
    } else if (!strcmp(name, "replica-of")) {
        if (*v && (strlen(v) >= sizeof c->replica_of || !strrchr(v, ':'))) {
            snprintf(msg, cap, "%s: '%.80s' is not HOST:PORT", src, v);
            return -1;
        }
        strcpy(c->replica_of, v);
    } else if (!strcmp(name, "checkpoint-dir")) {
        if (strlen(v) >= sizeof c->checkpoint_dir - 80) {
            snprintf(msg, cap, "%s: path too long", src);
            return -1;
        }
        strcpy(c->checkpoint_dir, v);
    } else if (!strcmp(name, "checkpoint-interval")) {
        if (parse_duration_ms(v, &c->checkpoint_interval_ms)) {
            snprintf(msg, cap, "%s: '%.32s' is not a duration (e.g. 10m, 90s, 1h, 500ms, 0)",
                     src, v);
            return -1;
        }
    } else if (!strcmp(name, "ttl-sweep-interval")) {
        uint64_t ms;
        if (parse_duration_ms(v, &ms) || ms < 10 || ms > 3600000) {
            snprintf(msg, cap, "%s: '%.32s' is not a duration within 10ms..1h", src, v);
            return -1;
        }
        c->ttl_sweep_ms = ms;
    } else if (!strcmp(name, "checkpoint-keep")) {
        if (u < 1 || u > 1000) {
            snprintf(msg, cap, "%s: %s is outside 1..1000", src, v);
            return -1;
        }
        c->checkpoint_keep = (unsigned)u;
    } else if (!strcmp(name, "checkpoint-restore") || !strcmp(name, "checkpoint-on-exit")) {
        int on = parse_on_off(v);
        if (on < 0) {
            snprintf(msg, cap, "%s: '%.32s' is not on or off", src, v);
            return -1;
        }
        if (!strcmp(name, "checkpoint-restore"))
            c->checkpoint_restore = on;
        else
            c->checkpoint_on_exit = on;
    } else if (!strcmp(name, "checkpoint-exit-timeout-ms")) {
        c->checkpoint_exit_timeout_ms = u > 86400000 ? 86400000u : (unsigned)u;
    } else if (!strcmp(name, "log-level")) {
        int l = srv_log_parse_level(v);
        if (l < 0) {
            snprintf(msg, cap, "%s: '%s' is not error|warn|info|debug", src, v);
            return -1;
        }
        c->log_level = l;
    } else if (!strcmp(name, "log-format")) {
        if (!strcmp(v, "logfmt"))
            c->log_json = 0;
        else if (!strcmp(v, "json"))
            c->log_json = 1;
        else {
            snprintf(msg, cap, "%s: '%.32s' is not logfmt or json", src, v);
            return -1;
        }
    } else if (!strcmp(name, "metrics-listen")) {
        if (strlen(v) >= sizeof c->metrics_listen || !strrchr(v, ':')) {
            snprintf(msg, cap, "%s: '%.64s' is not HOST:PORT", src, v);
            return -1;
        }
        strcpy(c->metrics_listen, v);
    } else if (!strcmp(name, "progress-interval-ms")) {
        c->progress_interval_ms = u > 3600000 ? 3600000u : (unsigned)u;
    } else if (!strcmp(name, "shutdown-grace-ms")) {
        c->shutdown_grace_ms = u > 3600000 ? 3600000u : (unsigned)u;
    } else if (!strcmp(name, "key-ownership")) {
        if (strcmp(v, "check") && strcmp(v, "off")) {
            snprintf(msg, cap, "%s: '%s' is not check or off", src, v);
            return -1;
        }
        c->key_ownership_off = !strcmp(v, "off");
    } else if (!strcmp(name, "coalesce")) {
        if (!strcmp(v, "auto"))
            c->coalesce = SRV_COALESCE_AUTO;
        else if (!strcmp(v, "on"))
            c->coalesce = SRV_COALESCE_ON;
        else if (!strcmp(v, "off"))
            c->coalesce = SRV_COALESCE_OFF;
        else {
            snprintf(msg, cap, "%s: '%.32s' is not auto, on or off", src, v);
            return -1;
        }
    } else if (!strcmp(name, "coalesce-max-keys")) {
        if (u < 1 || u > (UINT64_C(1) << 30)) {
            snprintf(msg, cap, "%s: %s is outside 1..1G", src, v);
            return -1;
        }
        c->coalesce_max_keys = u;
    } else if (!strcmp(name, "coalesce-queue-keys")) {
        if (u < 1 || u > (UINT64_C(1) << 32)) {
            snprintf(msg, cap, "%s: %s is outside 1..4G", src, v);
            return -1;
        }
        c->coalesce_queue_keys = u;
    } else if (!strncmp(name, "tls-", 4) || strstr(name, "-token-file") ||
               strstr(name, "-identities")) {
        char *dst = !strcmp(name, "tls-cert")            ? c->tls_cert
                    : !strcmp(name, "tls-key")           ? c->tls_key
                    : !strcmp(name, "tls-client-ca")     ? c->tls_client_ca
                    : !strcmp(name, "worker-token-file") ? c->worker_token_file
                    : !strcmp(name, "admin-token-file")  ? c->admin_token_file
                    : !strcmp(name, "reader-token-file") ? c->reader_token_file
                    : !strcmp(name, "worker-identities") ? c->worker_identities
                    : !strcmp(name, "reader-identities") ? c->reader_identities
                                                         : c->admin_identities;
        size_t dcap = strstr(name, "-identities") ? sizeof c->worker_identities : SRV_PATH_MAX;
        if (strlen(v) >= dcap) {
            snprintf(msg, cap, "%s: too long", src);
            return -1;
        }
        strcpy(dst, v);
    } else if (!strcmp(name, "coalesce-wait-us")) {
        if (u > 1000000) {
            snprintf(msg, cap, "%s: %s is outside 0..1000000", src, v);
            return -1;
        }
        c->coalesce_wait_us = (unsigned)u;
    }
    return 0;
}

int srv_config_parse(srv_config *c, int argc, char **argv, char *msg, size_t cap)
{
    memset(c, 0, sizeof *c);
    strcpy(c->listen, "0.0.0.0:7070");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = cores > 0 ? (unsigned)(cores > 256 ? 256 : cores) : 1;
    strcpy(c->backend, "auto");
    c->max_keys_per_request = 1048576;
    c->max_message_bytes = 256u << 20;
    c->max_tables = 1024;
    c->max_concurrent_calls = 4096;
    c->shard_count = 1;
    c->log_level = SRV_LOG_INFO;
    c->shutdown_grace_ms = 10000;
    c->progress_interval_ms = 5000;
    c->checkpoint_keep = 2;
    c->checkpoint_restore = 1;
    c->checkpoint_on_exit = 1;
    c->coalesce = SRV_COALESCE_AUTO;
    c->coalesce_max_keys = 262144;
    c->coalesce_queue_keys = 0; /* 0: from coalesce-max-keys, once every flag is read */
    c->coalesce_wait_us = 0;
    c->ttl_sweep_ms = 1000;

    /* flags first (remembered), then each setting from its flag or, when no
     * flag gave it, from its environment variable: the flag wins, and a bad
     * variable that a flag overrides does not matter */
    const char *given[NOPTS] = {0};
    for (int a = 1; a < argc; a++) {
        const char *s = argv[a];
        if (!strcmp(s, "--help") || !strcmp(s, "-h")) {
            srv_config_usage(stdout);
            return 1;
        }
        if (strncmp(s, "--", 2) != 0) {
            snprintf(msg, cap, "unexpected argument '%s' (see --help)", s);
            return -1;
        }
        s += 2;
        const char *eq = strchr(s, '=');
        size_t len = eq ? (size_t)(eq - s) : strlen(s);
        size_t i;
        for (i = 0; i < NOPTS; i++)
            if (strlen(opts[i].flag) == len && !strncmp(opts[i].flag, s, len))
                break;
        if (i == NOPTS) {
            snprintf(msg, cap, "unknown flag '--%.*s' (see --help)", (int)len, s);
            return -1;
        }
        const char *v = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (!v) {
            snprintf(msg, cap, "flag --%s needs a value (%s)", opts[i].flag, opts[i].arg);
            return -1;
        }
        given[i] = v;
    }
    for (size_t i = 0; i < NOPTS; i++) {
        const char *v = given[i] ? given[i] : getenv(opts[i].env);
        char src[64];
        if (given[i])
            snprintf(src, sizeof src, "--%s", opts[i].flag);
        else
            snprintf(src, sizeof src, "%s", opts[i].env);
        if (v && set(c, i, v, src, msg, cap))
            return -1;
    }
    if (!*c->tls_cert != !*c->tls_key) {
        snprintf(msg, cap, "--tls-cert and --tls-key go together");
        return -1;
    }
    if (*c->tls_client_ca && !*c->tls_cert) {
        snprintf(msg, cap, "--tls-client-ca (mutual TLS) needs --tls-cert and --tls-key");
        return -1;
    }
    if ((*c->worker_identities || *c->admin_identities || *c->reader_identities) &&
        !*c->tls_client_ca) {
        snprintf(msg, cap, "--worker-identities/--admin-identities/--reader-identities need "
                           "--tls-client-ca "
                           "(client certificates)");
        return -1;
    }
    if (!c->coalesce_queue_keys) {
        c->coalesce_queue_keys = 4 * c->coalesce_max_keys;
        if (c->coalesce_queue_keys < c->max_keys_per_request)
            c->coalesce_queue_keys = c->max_keys_per_request;
    } else if (c->coalesce_queue_keys < c->max_keys_per_request) {
        snprintf(msg, cap,
                 "--coalesce-queue-keys %llu is below --max-keys-per-request %llu: a call "
                 "that large could never wait for its table",
                 (unsigned long long)c->coalesce_queue_keys,
                 (unsigned long long)c->max_keys_per_request);
        return -1;
    }
    if (c->shard_index >= c->shard_count) {
        snprintf(msg, cap, "shard-index %u must be below shard-count %u", c->shard_index,
                 c->shard_count);
        return -1;
    }
    return 0;
}
