/*
 * checkpoint.h — one table shard saved to, and restored from, one file.
 *
 * A checkpoint holds every row of a table (embedding + optimizer slots, score,
 * version) with the table's configuration, so a restarted server can recreate
 * the table (ember_ckpt_read_meta) and fill it (ember_ckpt_load).
 *
 * Durability: a save writes `<path>.tmp.<pid>.<n>` in the same directory, fsyncs
 * it, renames it over `path` and fsyncs the directory (durable.h). A crash at any moment
 * leaves either the previous file or the new one at `path`, never a mix; a failed
 * save removes its temp file and leaves `path` untouched.
 *
 * Consistency: saving while other threads write the table is allowed, and the
 * file is the table at one moment: a save reads a snapshot of the table
 * (table.h), whose cut is the version the header records. Every write with a
 * version up to it is in the file, none after it (rows written during the save
 * are saved as they were at the cut). Files saved before snapshots (format 1 to
 * 3 written by older builds) hold in that field the table's version when the
 * save finished, and were consistent per row only; the field's layout is the
 * same, so both load alike.
 *
 * File format, version 3 (written), 2 and 1 (still read). All integers
 * little-endian, floats IEEE-754 binary32 (this code builds only on
 * little-endian hosts). CRCs are CRC-32C (crc32c.h).
 *
 *   header (268 bytes; version 2: 244, version 1: 220)
 *     0   8  magic "EMBRCKPT"
 *     8   4  format version = 3 (or 2, 1)
 *    12   4  header length in bytes, CRC included = 268 (version 2: 244,
 *            version 1: 220)
 *    16   4  config.dim
 *    20   8  config.capacity
 *    28   4  config.score_policy                 (int32)
 *    32   8  config.seed
 *    40   4  config.optim.kind                   (int32)
 *    44  40  config.optim lr, eps, initial_accumulator, beta1, beta2,
 *            weight_decay, l1, l2, lr_power, beta (float32 each, that order)
 *    84   4  config.init.kind                    (int32)
 *    88   4  config.init.a                       (float32)
 *    92   4  config.init.b                       (float32)
 *    96   4  config.admission.min_count
 *   100   4  config.admission.sketch_width
 *   104   4  config.nonfinite                    (int32)
 *   108   4  table name length, 0..64
 *   112  64  table name, zero-padded
 *   176   4  shard index (< shard count)
 *   180   4  shard count (≥ 1)
 *   184   4  row_floats: floats per row = ember_row_floats(optim.kind, dim)
 *   188   4  chunk_rows: most rows in one chunk, 1..4096
 *   192   8  the table's version at the save's cut (older builds: when the
 *            save finished); ≥ every row's version either way
 *   200   8  creation time, ns since the Unix epoch
 *   208   8  rows in the file
 *   216   8  placement.hbm_bytes                  (version 2 on)
 *   224  16  placement.backend, ASCII, zero-padded (version 2 on)
 *   240   8  config.max_capacity                 (version 3 on)
 *   248   4  config.max_load_factor              (float32, version 3 on)
 *   252   8  config.ttl_seconds                  (version 3 on)
 *   260   4  the table's epoch (EPOCH_* scores)   (version 3 on)
 *   264   4  CRC of bytes 0..263                  (version 2: at 240, of 0..239;
 *                                                 version 1: at 216, of 0..215)
 *
 *   chunks (zero or more, each 1..chunk_rows rows; n = rows in this chunk)
 *     0   4  magic 0x4B4E4843 ("CHNK" in file order)
 *     4   4  n
 *     8  8n  keys       (uint64)
 *        8n  scores     (uint64)
 *        8n  versions   (uint64)
 *     4n·row_floats rows (float32, row after row)
 *         4  CRC of the chunk's bytes before it, from its magic on
 *
 *   footer (28 bytes), then end of file
 *     0   8  magic "EMBREND\0"
 *     8   8  rows in the file (= the header's)
 *    16   8  chunks in the file
 *    24   4  CRC of bytes 0..23 of the footer
 *
 * Statuses: EMBER_NOT_FOUND (no such file), EMBER_DATA_LOSS (the file is damaged,
 * truncated, has bytes after its footer, or is not a version 1 to 3 checkpoint),
 * EMBER_FAILED_PRECONDITION (a sound checkpoint that does not fit the table or
 * the expectation: other dim, optimizer or row layout, another shard or table
 * name, more rows than the table's capacity (the largest it can grow to), a row
 * holding NaN/Inf),
 * EMBER_INVALID_ARGUMENT (bad arguments), EMBER_RESOURCE_EXHAUSTED (memory),
 * EMBER_INTERNAL (an I/O call failed; the message has strerror). Messages name
 * the file and what is wrong with it.
 *
 * Code: the format's codec is ckpt_format.c, a table's save and load
 * checkpoint.c, the reader and writer without a table ckpt_rows.c.
 *
 * Thread-safety: saves and loads of different files may run at once, except that
 * saves of one table run one after another (each holds the table's one
 * snapshot); a save may run beside writers of its table (see Consistency). A
 * load replaces the table's rows: run it with no other writer on the table, or
 * their rows may be lost or mixed with the file's.
 */
#ifndef EMBER_CHECKPOINT_H
#define EMBER_CHECKPOINT_H

#include <stdint.h>

#include "status.h"
#include "table.h"

#ifdef __cplusplus
extern "C" {
#endif

#define EMBER_CKPT_FORMAT_VERSION 3u
#define EMBER_CKPT_NAME_MAX 64u
#define EMBER_CKPT_BACKEND_MAX 15u
/* Chunks hold up to 4,096 rows, fewer for wide rows so that one chunk's buffer
 * stays near 4 MiB, but never fewer than a bucket (export returns whole
 * buckets). */
#define EMBER_CKPT_CHUNK_ROWS_MAX 4096u
#define EMBER_CKPT_CHUNK_BYTES (UINT64_C(4) << 20)

/* Where the saved table asked to live, so that a server recreating it from the
 * file places it alike: `backend` "cpu", "gpu" or "" (the server's default),
 * `hbm_bytes` its budget of rows in device memory, 0 = the server's default.
 * What was asked, not what the server chose: a table that took the server's
 * default follows a changed default. Storage keeps it and does not interpret
 * it. Version-1 files have none ("" and 0). */
typedef struct ember_ckpt_placement {
    char backend[EMBER_CKPT_BACKEND_MAX + 1]; /* NUL-terminated */
    uint64_t hbm_bytes;
} ember_ckpt_placement;

/* What a checkpoint's header says. */
typedef struct ember_ckpt_meta {
    char table_name[EMBER_CKPT_NAME_MAX + 1]; /* NUL-terminated, may be empty */
    uint32_t shard_index;
    uint32_t shard_count;
    uint64_t version;      /* the table's version at the save's cut: every write up to
                              it is in the file, none after (older builds: the
                              version when the save finished) */
    uint64_t created_ns;   /* when the save started, ns since the Unix epoch */
    uint64_t rows;
    ember_table_config config;  /* config.hbm_bytes is 0: see placement */
    ember_ckpt_placement placement;
    uint32_t epoch;        /* the table's epoch at the cut (format 3 on;
                              0 in older files, whose load leaves the table's) */
} ember_ckpt_meta;

/* What a load demands of the file beyond fitting the table. */
typedef struct ember_ckpt_expect {
    uint32_t shard_index;
    uint32_t shard_count;
    const char *table_name; /* NULL: any name */
} ember_ckpt_expect;

/* Saves every row of `t` to `path` (replacing any file there), labelled with
 * `table_name` (NULL or "" for none, at most EMBER_CKPT_NAME_MAX bytes), the
 * shard `shard_index` of `shard_count` and `placement` (NULL: none). On success
 * fills *out_meta (if not NULL) with what the header says. The caller keeps
 * ownership of everything.
 * Errors: INVALID_ARGUMENT (name too long, shard index ≥ count, path too long,
 * a placement backend that is not printable ASCII),
 * FAILED_PRECONDITION (a row holds NaN/Inf: a file that could not be loaded is
 * not written), RESOURCE_EXHAUSTED, INTERNAL (I/O), or what export returned.
 * On any error `path` is as it was, except INTERNAL from the directory fsync
 * after the rename: then the new file is in place but may not survive a crash. */
int ember_ckpt_save(ember_table *t, const char *path, const char *table_name,
                    uint32_t shard_index, uint32_t shard_count,
                    const ember_ckpt_placement *placement, ember_ckpt_meta *out_meta,
                    ember_error *err);

/* Progress of a long save or load: `fn(arg, rows_done, rows_total)` is called
 * after every chunk of rows written or loaded (and once with 0 before the
 * first), from the thread that saves or loads. rows_total is the table's size
 * at the save's cut (the rows the file will hold) or
 * the file's row count on load (whose check pass, before the table is touched,
 * reports nothing). It must not call back into the table. */
typedef struct ember_ckpt_progress {
    void (*fn)(void *arg, uint64_t rows_done, uint64_t rows_total);
    void *arg;
} ember_ckpt_progress;

/* ember_ckpt_save and ember_ckpt_load reporting to `progress` (NULL: none, as
 * the plain calls). Same arguments otherwise, same errors. */
int ember_ckpt_save_progress(ember_table *t, const char *path, const char *table_name,
                             uint32_t shard_index, uint32_t shard_count,
                             const ember_ckpt_placement *placement,
                             const ember_ckpt_progress *progress, ember_ckpt_meta *out_meta,
                             ember_error *err);
int ember_ckpt_load_progress(ember_table *t, const char *path, const ember_ckpt_expect *expect,
                             const ember_ckpt_progress *progress, ember_ckpt_meta *out_meta,
                             ember_error *err);

/* A save's options: `progress` as ember_ckpt_save_progress; `at_cut` (NULL:
 * none) is called with `at_cut_arg` at the snapshot's cut, while no writing call
 * of the table runs (ember_table_snapshot_begin), to record state that must
 * match the file exactly. `snapshot` (NULL: the save begins and ends its own):
 * a snapshot of the table begun by the caller (one cut for several tables,
 * ember_table_snapshot_begin_many), read through by the save; the caller ends
 * it, and at_cut is not called. */
typedef struct ember_ckpt_save_opts {
    const ember_ckpt_progress *progress;
    void (*at_cut)(void *arg, uint64_t cut_epoch);
    void *at_cut_arg;
    ember_table_snapshot *snapshot;
} ember_ckpt_save_opts;

/* ember_ckpt_save with options (NULL: none). Same arguments otherwise, same
 * errors. */
int ember_ckpt_save_opts_run(ember_table *t, const char *path, const char *table_name,
                             uint32_t shard_index, uint32_t shard_count,
                             const ember_ckpt_placement *placement,
                             const ember_ckpt_save_opts *opts, ember_ckpt_meta *out_meta,
                             ember_error *err);

/* Reads and checks the header of the checkpoint at `path` (not its rows) into
 * *out, so a server can recreate the table before loading it.
 * Errors: NOT_FOUND, DATA_LOSS (bad magic, version, length, CRC or fields),
 * INVALID_ARGUMENT (not a regular file), INTERNAL (I/O). */
int ember_ckpt_read_meta(const char *path, ember_ckpt_meta *out, ember_error *err);

/* Replaces the rows of `t` with those of the checkpoint at `path`: the keys,
 * rows, scores and versions saved. The table's version becomes at least the
 * largest row version in the file (table.h offers no way to set it higher; the
 * header's version is in out_meta). `expect` (NULL: no demand) gives the shard
 * and name the file must carry. *out_meta (if not NULL) is filled on success.
 *
 * The file must hold rows of the table's dim and optimizer; the rest of its
 * config (capacity, hyper-parameters, initializer, score policy) may differ, and
 * the table keeps its own. A table with fewer buckets than the saver's may have
 * to evict some loaded rows (counted in stats.evictions, as for any insert).
 *
 * The whole file is checked (every CRC, count and the footer) before the table
 * is touched: on NOT_FOUND, DATA_LOSS, FAILED_PRECONDITION, INVALID_ARGUMENT or
 * RESOURCE_EXHAUSTED the table is exactly as it was. If the table itself fails
 * while being filled (a backend error, INTERNAL) or the file changes underneath,
 * the table is left empty rather than half-loaded. */
int ember_ckpt_load(ember_table *t, const char *path, const ember_ckpt_expect *expect,
                    ember_ckpt_meta *out_meta, ember_error *err);

/* ---- rows without a table: reading and writing files row by row ----------
 *
 * For tools that move rows between checkpoints without building a table
 * (emberctl reshard). The files are the format above, nothing else. */

typedef struct ember_ckpt_reader ember_ckpt_reader;

/* Opens the checkpoint at `path` and checks all of it — header, every chunk's
 * CRC, count and rows (as load's first pass does), the footer — before handing
 * out a single row, so a damaged file is refused whole. On success *out owns
 * the reader (close it with ember_ckpt_reader_close) and *meta (if not NULL)
 * holds the header. Errors: as ember_ckpt_load before it touches a table:
 * NOT_FOUND, DATA_LOSS, FAILED_PRECONDITION (a row holds NaN/Inf),
 * INVALID_ARGUMENT (not a regular file, NULL arguments), RESOURCE_EXHAUSTED,
 * INTERNAL (I/O). */
int ember_ckpt_reader_open(const char *path, ember_ckpt_reader **out, ember_ckpt_meta *meta,
                           ember_error *err);

/* Floats per row in the reader's file (embedding + optimizer slots). */
uint32_t ember_ckpt_reader_row_floats(const ember_ckpt_reader *r);

/* The next chunk, in file order: *n rows (0 once the footer is reached), and
 * pointers to their keys, scores, versions and rows (row_floats each), valid
 * until the next call or close. Errors: DATA_LOSS (the file changed since it
 * was opened), INTERNAL (I/O); after an error the reader only closes. */
int ember_ckpt_reader_next(ember_ckpt_reader *r, size_t *n, const uint64_t **keys,
                           const uint64_t **scores, const uint64_t **versions,
                           const float **rows, ember_error *err);

/* Closes the file and frees the reader. NULL is a no-op. */
void ember_ckpt_reader_close(ember_ckpt_reader *r);

typedef struct ember_ckpt_writer ember_ckpt_writer;

/* Starts a checkpoint for `path`: rows go to a temp file beside it (as
 * ember_ckpt_save's) until ember_ckpt_writer_commit renames it over `path`.
 * The header carries `config` (row layout: ember_table_config_row_floats),
 * `table_name` (NULL or "" for none), shard `shard_index` of `shard_count` and
 * `placement` (NULL: none).
 * `chunk_rows`: most rows per chunk, 0 for the size ember_ckpt_save uses; the
 * writer holds one chunk of rows in memory. On success *out owns the writer:
 * end it with commit or abort. Errors: INVALID_ARGUMENT (bad config, name,
 * shard, chunk_rows over EMBER_CKPT_CHUNK_ROWS_MAX, path too long),
 * RESOURCE_EXHAUSTED, INTERNAL (I/O). */
int ember_ckpt_writer_open(const char *path, const ember_table_config *config,
                           const char *table_name, uint32_t shard_index, uint32_t shard_count,
                           const ember_ckpt_placement *placement, uint32_t chunk_rows,
                           ember_ckpt_writer **out, ember_error *err);

/* Appends n whole rows (row_floats each) with their keys, scores and versions,
 * copied. Refuses what a load would refuse, before writing any of the n:
 * INVALID_ARGUMENT (a reserved key), FAILED_PRECONDITION (a row holding
 * NaN/Inf). INTERNAL (I/O). After any error the writer refuses further
 * appends and commit; abort it. Duplicate keys are not detected. */
int ember_ckpt_writer_append(ember_ckpt_writer *w, const uint64_t *keys, size_t n,
                             const float *rows, const uint64_t *scores,
                             const uint64_t *versions, ember_error *err);

/* The epoch the file records (default 0), before commit. */
void ember_ckpt_writer_set_epoch(ember_ckpt_writer *w, uint32_t epoch);

/* Writes the last chunk, the footer and the header (with `version` as the
 * table's version), fsyncs, renames the temp file over the path and fsyncs the
 * directory; fills *out_meta (if not NULL). Frees `w` whatever happens; on
 * error the temp file is removed and `path` is as it was (except INTERNAL from
 * the directory fsync, as for ember_ckpt_save). */
int ember_ckpt_writer_commit(ember_ckpt_writer *w, uint64_t version, ember_ckpt_meta *out_meta,
                             ember_error *err);

/* Removes the temp file and frees `w`; `path` is untouched. NULL is a no-op. */
void ember_ckpt_writer_abort(ember_ckpt_writer *w);

#ifdef __cplusplus
}
#endif

#endif /* EMBER_CHECKPOINT_H */
