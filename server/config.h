/*
 * config.h — ember-server's settings: command-line flags, each also an EMBER_*
 * environment variable (the flag wins). `ember-server --help` lists them.
 *
 *   --listen HOST:PORT          EMBER_LISTEN              0.0.0.0:7070
 *   --threads N                 EMBER_THREADS             online cores
 *   --backend auto|gpu|cpu      EMBER_BACKEND             auto (gpu when a GPU is visible)
 *   --gpu N                     EMBER_GPU                 0 (the CUDA device, gpu backend)
 *   --hbm-bytes N               EMBER_HBM_BYTES           0 (a gpu table's rows in device
 *                                                           memory; 0 = all of them)
 *   --max-keys-per-request N    EMBER_MAX_KEYS_PER_REQUEST 1048576
 *   --max-message-bytes N       EMBER_MAX_MESSAGE_BYTES   268435456 (256 MiB)
 *   --max-tables N              EMBER_MAX_TABLES          1024
 *   --max-concurrent-calls N    EMBER_MAX_CONCURRENT_CALLS 4096 (Health excluded)
 *   --max-table-host-bytes N    EMBER_MAX_TABLE_HOST_BYTES 0 (no cap; a table's host bytes)
 *   --max-table-hbm-bytes N     EMBER_MAX_TABLE_HBM_BYTES 0 (no cap; device bytes)
 *   --shard-index I             EMBER_SHARD_INDEX         0
 *   --shard-count N             EMBER_SHARD_COUNT         1
 *   --key-ownership check|off   EMBER_KEY_OWNERSHIP       check (with shard-count > 1)
 *   --replica-of HOST:PORT      EMBER_REPLICA_OF          "" (a leader; set: a follower, repl.h)
 *   --replica-tls-ca FILE       EMBER_REPLICA_TLS_CA      "" (plaintext to the leader)
 *   --checkpoint-dir DIR        EMBER_CHECKPOINT_DIR      "" (none: no saves of its own,
 *                                                           Save/Load need a dir)
 *   --checkpoint-interval DUR   EMBER_CHECKPOINT_INTERVAL 0 (off; e.g. 10m, 90s, 1h)
 *   --checkpoint-keep N         EMBER_CHECKPOINT_KEEP     2 (checkpoints kept per table)
 *   --checkpoint-restore on|off EMBER_CHECKPOINT_RESTORE  on (restore at start)
 *   --checkpoint-on-exit on|off EMBER_CHECKPOINT_ON_EXIT  on (save at SIGTERM/SIGINT)
 *   --checkpoint-exit-timeout-ms MS EMBER_CHECKPOINT_EXIT_TIMEOUT_MS 0 (no bound)
 *   --log-level LEVEL           EMBER_LOG_LEVEL           info
 *   --log-format logfmt|json    EMBER_LOG_FORMAT          logfmt
 *   --metrics-listen HOST:PORT  EMBER_METRICS_LISTEN      "" (off; Prometheus at /metrics)
 *   --shutdown-grace-ms MS      EMBER_SHUTDOWN_GRACE_MS   10000
 *   --progress-interval-ms MS   EMBER_PROGRESS_INTERVAL_MS 5000 (0: every chunk)
 *   --coalesce auto|on|off      EMBER_COALESCE            auto (on for gpu tables)
 *   --coalesce-max-keys N       EMBER_COALESCE_MAX_KEYS   262144
 *   --coalesce-queue-keys N     EMBER_COALESCE_QUEUE_KEYS 4 x coalesce-max-keys (at least
 *                                                           max-keys-per-request)
 *   --coalesce-wait-us US       EMBER_COALESCE_WAIT_US    obsolete: accepted, ignored
 *   --tls-cert FILE             EMBER_TLS_CERT            "" (PEM; with --tls-key: TLS only)
 *   --tls-key FILE              EMBER_TLS_KEY             ""
 *   --tls-client-ca FILE        EMBER_TLS_CLIENT_CA       "" (mutual TLS: client certs
 *                                                           required, verified against it)
 *   --worker-token-file FILE    EMBER_WORKER_TOKEN_FILE   "" (or the token itself in
 *                                                           EMBER_WORKER_TOKEN)
 *   --admin-token-file FILE     EMBER_ADMIN_TOKEN_FILE    "" (or EMBER_ADMIN_TOKEN)
 *   --worker-identities LIST    EMBER_WORKER_IDENTITIES   "" (mTLS client CNs/SANs)
 *   --admin-identities LIST     EMBER_ADMIN_IDENTITIES    ""
 *   --reader-token-file FILE    EMBER_READER_TOKEN_FILE   "" (or EMBER_READER_TOKEN)
 *   --reader-identities LIST    EMBER_READER_IDENTITIES   ""
 *
 * Sizes accept a K/M/G suffix (powers of 1024).
 */
#ifndef EMBER_SRV_CONFIG_H
#define EMBER_SRV_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define SRV_PATH_MAX 4096

/* --coalesce: whether concurrent calls on one table are run as one (coalesce.h). */
enum { SRV_COALESCE_AUTO = 0, SRV_COALESCE_ON = 1, SRV_COALESCE_OFF = 2 };

typedef struct srv_config {
    char listen[256];
    unsigned threads;
    char backend[16];           /* as asked: auto, gpu or cpu (backend.h chooses) */
    unsigned gpu;
    uint64_t hbm_bytes;
    uint64_t max_keys_per_request;
    uint64_t max_message_bytes;
    unsigned max_tables;
    unsigned max_concurrent_calls; /* calls in progress, Health excluded */
    uint64_t max_table_host_bytes; /* one table's host bytes; 0: no cap */
    uint64_t max_table_hbm_bytes;  /* one table's device bytes; 0: no cap */
    uint32_t shard_index, shard_count;
    int key_ownership_off;      /* --key-ownership off: keys of other shards taken */
    char replica_of[256];       /* "" = a leader; else the leader followed (repl.h) */
    char replica_tls_ca[SRV_PATH_MAX]; /* TLS to the leader, verified against it */
    char checkpoint_dir[SRV_PATH_MAX];
    uint64_t checkpoint_interval_ms; /* 0: no periodic saves */
    unsigned checkpoint_keep;        /* checkpoints kept per table, the newest included */
    int checkpoint_restore;          /* restore the dir's checkpoints at start */
    int checkpoint_on_exit;          /* save every table at SIGTERM/SIGINT */
    unsigned checkpoint_exit_timeout_ms; /* bound on that save; 0: none */
    uint64_t ttl_sweep_ms;           /* how often TTL tables are swept */
    int log_level;
    int log_json;               /* --log-format json */
    char metrics_listen[256];   /* "" = no metrics endpoint */
    unsigned shutdown_grace_ms;
    unsigned progress_interval_ms; /* checkpoint_progress log lines (ckpt.h) */
    int coalesce;               /* SRV_COALESCE_*; auto: on for tables on the gpu backend */
    uint64_t coalesce_max_keys; /* most keys in one coalesced batch */
    uint64_t coalesce_queue_keys; /* most keys waiting in one table queue */
    unsigned coalesce_wait_us;  /* obsolete (batches never wait): logged, ignored */
    /* security (auth.h): file paths and lists as given; "" = unset */
    char tls_cert[SRV_PATH_MAX], tls_key[SRV_PATH_MAX], tls_client_ca[SRV_PATH_MAX];
    char worker_token_file[SRV_PATH_MAX], admin_token_file[SRV_PATH_MAX];
    char worker_identities[4096], admin_identities[4096];
    char reader_token_file[SRV_PATH_MAX], reader_identities[4096];
} srv_config;

/* Fills defaults, then the environment, then argv. Returns 0 to run, 1 when
 * --help was printed (exit 0), -1 on a bad setting (the reason is in msg). */
int srv_config_parse(srv_config *c, int argc, char **argv, char *msg, size_t msg_cap);
void srv_config_usage(FILE *out);

#endif
