/*
 * reshard.h — emberctl reshard's engine: the checkpoints of one table's N shards
 * turned into checkpoints for M shards, offline, with the client's key→shard
 * function.
 *
 * reshard.c works on storage/checkpoint.h; emberctl's command side meets it
 * through the plain types below. The key→shard function comes in as a pointer
 * (ember_shard_of), so the routing is exactly the one libember uses.
 *
 * Inputs: each entry of `from` is a path or a glob(3) pattern. A file is taken
 * as a checkpoint (an older one from a server's `history/` too). A directory is
 * taken as a server's checkpoint directory: its `<table>.ckpt`, the table named
 * by `table`, by the first file given, or else the only one the directory holds.
 *
 * The inputs must be the checkpoints of one table (same name, dim, optimizer),
 * saved by one cluster (same shard count), one file per shard, every shard
 * present. Each is checked whole (every CRC) before its rows are used; nothing
 * is renamed into place until every input was read and every output written.
 *
 * Output: `<out>/shard-<i>/<table>.ckpt` for i in 0..M-1, each a checkpoint of
 * shard i of M with the first input's config (capacity per shard: `capacity`,
 * or by default enough that the M shards together hold what the N did), the
 * largest input version, and the rows whose keys shard_of(key, M) sends to i —
 * keys, rows (embedding and optimizer slots), scores and versions unchanged.
 * Each directory can be a new shard's --checkpoint-dir or `emberctl load --dir`.
 */
#ifndef EMBER_CTL_RESHARD_H
#define EMBER_CTL_RESHARD_H

#include <stddef.h>
#include <stdint.h>

typedef struct ctl_reshard_job {
    const char *const *from;  /* paths, directories or glob patterns */
    size_t n_from;
    const char *table;        /* NULL: the one table the inputs hold */
    uint32_t to_count;        /* M ≥ 1 */
    const char *out_dir;      /* created if missing */
    uint64_t capacity;        /* keys per new shard; 0: derived (see above) */
    unsigned (*shard_of)(uint64_t key, unsigned shard_count);
    /* called now and then while rows are copied; may be NULL */
    void (*progress)(void *ud, uint64_t rows, uint64_t total_rows, uint64_t bytes);
    void *progress_ud;
} ctl_reshard_job;

typedef struct ctl_reshard_result {
    char table[65];
    uint32_t dim, optimizer, row_floats;
    uint32_t from_count, to_count;
    uint64_t rows;            /* copied: the sum of the inputs' */
    uint64_t bytes_in;        /* of row data read */
    uint64_t version;         /* the outputs' table version */
    uint64_t capacity;        /* per new shard */
    uint64_t misplaced;       /* rows found in an input shard that does not own them */
    char **inputs;            /* [from_count], input shard i's file */
    char **outputs;           /* [to_count] */
    uint64_t *rows_out;       /* [to_count] */
} ctl_reshard_result;

/* Runs the job. Returns 0, or a gRPC status code with a message in msg:
 * INVALID_ARGUMENT (a bad job, a mixed or incomplete set of inputs, a directory
 * without a single table's checkpoint), NOT_FOUND (an input missing),
 * DATA_LOSS (an input damaged), FAILED_PRECONDITION (a new shard's rows over
 * --capacity), RESOURCE_EXHAUSTED, INTERNAL (I/O). On failure no output file
 * was put in place (except on a failure while renaming them, which the message
 * says). The result is filled as far as the job got; free it with
 * ctl_reshard_result_free. */
int ctl_reshard_run(const ctl_reshard_job *j, ctl_reshard_result *r, char *msg, size_t msg_len);

void ctl_reshard_result_free(ctl_reshard_result *r);

#endif /* EMBER_CTL_RESHARD_H */
