/*
 * ctl.h — emberctl's pieces, one file per concern:
 *
 *   main.c      the command line: global options, the subcommand table, help,
 *               argument and number parsing.
 *   shards.c    the shard list and the fan-out: one Admin call sent to every
 *               selected shard at once, each shard's reply or error kept apart.
 *   commands.c  the subcommands: build the request, fan it out, print the result.
 *   format.c    output: aligned human tables, a JSON writer, human numbers, the
 *               progress line of long transfers.
 *   stats.c     what stats and stats --watch share: counters summed over
 *               shards, and their JSON.
 *   watch.c     stats --watch: refreshes, with rates between them.
 *   transfer.c  export and import: rows between shards and an export file.
 *   xfile.c     the export file's format, written and read.
 *   reshard.c   reshard: N shards' checkpoints into M shards' (reshard.h, over
 *               storage/checkpoint.h).
 *   manifest.c  the manifest of a cluster-wide save (save --all-shards), written
 *               and read.
 *
 * Exit status, for scripts: CTL_EXIT_OK (0) every call succeeded;
 * CTL_EXIT_RPC (1) a call failed on some shard (each failure printed on stderr
 * as "emberctl: shard I (ADDR): CODE_NAME: message", and listed under "errors" in
 * --json output), or a file of export/import/reshard could not be used (printed
 * as "emberctl CMD: message"; {"error": {"code", "message"}} in --json output);
 * CTL_EXIT_USAGE (2) the command line was wrong.
 */
#ifndef EMBER_CTL_H
#define EMBER_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>

#include "ember/ember.h"

enum { CTL_EXIT_OK = 0, CTL_EXIT_RPC = 1, CTL_EXIT_USAGE = 2 };

/* ---- shards.c ---------------------------------------------------------------- */

typedef struct ctl_shard {
    unsigned index;          /* position in the shard list: the shard's index */
    char *address;           /* "host:port" */
    grpc_channel *ch;        /* opened by ctl_shards_open */
} ctl_shard;

/* What a command works on: the selected shards, and how to talk to them. */
typedef struct ctl {
    ctl_shard *shards;       /* the selected shards (all, or the --shard one) */
    unsigned n;
    unsigned count;          /* shards in the list: the cluster's shard count */
    int json;                /* --json: one JSON document on stdout */
    int timeout_ms;          /* deadline of each call */
    /* security (--tls-*, --token-file or their EMBER_* variables; NULL: unset) */
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name, *token_file;
} ctl;

/* One shard's answer to a fanned-out call. */
typedef struct ctl_reply {
    const ctl_shard *shard;
    int code;                /* gRPC status; 0 = OK */
    char message[512];       /* the status message when code != 0 */
    ProtobufCMessage *msg;   /* the decoded reply when code == 0 */
} ctl_reply;

/* Splits `list` ("host:port,host:port,...") into c->shards and keeps the one at
 * `only` (-1: all). Returns 0, or prints why and returns CTL_EXIT_USAGE (empty
 * list, malformed address, `only` out of range). */
int ctl_shards_parse(ctl *c, const char *list, int only);

/* Opens a channel to every selected shard (lazily connecting). Returns 0 or
 * CTL_EXIT_USAGE. */
int ctl_shards_open(ctl *c);

/* Closes the channels and frees the list. */
void ctl_shards_close(ctl *c);

/* Sends `req` to `method` ("/ember.v1.Admin/ListTables") on every selected shard
 * at once and waits for all. replies[c->n] receives each shard's answer, its
 * message decoded as `reply_type`. `timeout_ms` ≤ 0: c->timeout_ms. Returns how
 * many shards failed. Free with ctl_replies_free. */
unsigned ctl_call(const ctl *c, const char *method, const ProtobufCMessage *req,
                  const ProtobufCMessageDescriptor *reply_type, int timeout_ms,
                  ctl_reply *replies);

void ctl_replies_free(ctl_reply *replies, unsigned n);


/* Prints each failed reply on stderr ("emberctl: shard I (ADDR): CODE: message")
 * and returns CTL_EXIT_RPC if any failed, else CTL_EXIT_OK. */
int ctl_report(const ctl_reply *replies, unsigned n);

/* ---- format.c: human tables ------------------------------------------------ */

/* A table printed with aligned columns. Headers starting with '>' are
 * right-aligned (numbers); the '>' is not printed. */
typedef struct ctl_table {
    unsigned cols;
    const char *head[24];
    char **cells;            /* row-major, cols per row */
    size_t n, cap;           /* cells used, allocated */
} ctl_table;

void ctl_table_init(ctl_table *t, unsigned cols, const char *const *head);
/* Appends one cell (printf-style); rows fill left to right. */
void ctl_table_add(ctl_table *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the table with `indent` spaces in front of each line, then frees it. */
void ctl_table_print(ctl_table *t, FILE *f, int indent);
/* Frees the table without printing it. */
void ctl_table_free(ctl_table *t);

/* Human numbers into buf (returns buf): 12,345,678; 1.5 GiB; 3d 04h; 0.125. */
char *ctl_fmt_count(char *buf, size_t n, uint64_t v);
char *ctl_fmt_bytes(char *buf, size_t n, uint64_t v);
char *ctl_fmt_duration(char *buf, size_t n, uint64_t seconds);

/* ---- format.c: JSON ------------------------------------------------------------ */

/* A streaming JSON writer: keys are given inside objects, NULL inside arrays. */
typedef struct ctl_json {
    FILE *f;
    int depth;
    unsigned char need_comma[32];
} ctl_json;

void ctl_json_init(ctl_json *j, FILE *f);
void ctl_json_object(ctl_json *j, const char *key);
void ctl_json_array(ctl_json *j, const char *key);
void ctl_json_end_object(ctl_json *j);
void ctl_json_end_array(ctl_json *j);
void ctl_json_str(ctl_json *j, const char *key, const char *v);
void ctl_json_u64(ctl_json *j, const char *key, uint64_t v);
void ctl_json_double(ctl_json *j, const char *key, double v);  /* NaN/Inf: null */
void ctl_json_float(ctl_json *j, const char *key, float v);    /* shortest float32 */
void ctl_json_bool(ctl_json *j, const char *key, int v);
/* Closes the document (ends with a newline). */
void ctl_json_finish(ctl_json *j);

/* "shard": s's index, "address": its address (inside an object). */
void ctl_json_shard(ctl_json *j, const ctl_shard *s);
/* "errors": [{"shard", "address", "code", "message"}...] for the failed replies. */
void ctl_json_errors(ctl_json *j, const ctl_reply *replies, unsigned n);

/* replies[c->n] for ctl_call (calloc'ed; NULL, said on stderr, when out of memory). */
ctl_reply *ctl_replies_new(const ctl *c);
/* Ends a command's JSON document (with its "errors") when --json, reports
 * failures on stderr, frees the replies; returns the exit status (commands.c). */
int ctl_finish(const ctl *c, ctl_json *j, ctl_reply *r);

/* ---- format.c: progress ----------------------------------------------------------- */

/* A progress line on stderr, redrawn in place at most ten times a second: rows
 * and bytes done, the rate, and with a known total the share done and an ETA.
 * Drawn only when stderr is a terminal; otherwise every call is a no-op. */
typedef struct ctl_progress {
    int on;
    const char *what;        /* "export emb" */
    uint64_t total_rows;     /* 0: unknown (no share, no ETA) */
    uint64_t rows, bytes;
    double start, last;
    int no_bytes;            /* rows only (save, load: the servers count no bytes) */
} ctl_progress;

void ctl_progress_start(ctl_progress *p, const char *what, uint64_t total_rows);
/* Sets the rows and bytes done so far. */
void ctl_progress_update(ctl_progress *p, uint64_t rows, uint64_t bytes);
/* Draws the last state and ends the line. */
void ctl_progress_end(ctl_progress *p);
/* Seconds on the monotonic clock. */
double ctl_now(void);

/* ---- xfile.c: the export file ------------------------------------------------------ */

/*
 * What `emberctl export` writes: one file for a table of any number of shards.
 * Integers little-endian, floats IEEE-754 binary32, CRCs CRC-32C (as in a
 * checkpoint, storage/checkpoint.h, whose chunk layout it shares).
 *
 *   header (144 + 40·E + L + 4 bytes; E shard entries, L config bytes)
 *     0   8  magic "EMBREXPT"
 *     8   4  format version = 1
 *    12   4  header length in bytes, CRC included
 *    16   4  dim
 *    20   4  row_floats: floats per row in this file (dim; with --full-rows the
 *            table's embedding + optimizer slots)
 *    24   4  flags: bit 0 = full rows
 *    28   4  optimizer (ember.v1.Optimizer) of the exported table
 *    32   4  shard count of the exporting cluster
 *    36   4  E: shards exported (all, or the --shard one)
 *    40   4  table name length, 1..64
 *    44  64  table name, zero-padded
 *   108   8  --min-score filter (0: none)
 *   116   8  creation time, ns since the Unix epoch
 *   124   8  rows in the file
 *   132   4  most rows in one chunk
 *   136   4  L
 *   140   4  zero
 *   144  40  per shard exported, E times:
 *              0 4 shard index     4 4 zero
 *              8 8 after_version: the delta filter used (0: every row)
 *             16 8 table_version: the shard's table version when its export
 *                  began — the after_version of the next delta
 *             24 8 rows from this shard
 *             32 8 largest row version among them
 *     …   L  the table's ember.v1.TableConfig, protobuf-encoded, as the first
 *            shard's DescribeTable gave it (import --create makes tables from it)
 *     …   4  CRC of every header byte before it
 *
 *   chunks (zero or more; n = 1.. rows in this chunk)
 *     0   4  magic 0x4B4E4843 ("CHNK" in file order)
 *     4   4  n
 *        8n  keys (uint64)      8n  scores (uint64)      8n  versions (uint64)
 *     4n·row_floats  rows (float32, row after row)
 *         4  CRC of the chunk's bytes before it, from its magic on
 *
 *   footer (28 bytes), then end of file
 *     0   8  magic "EMBXEND\0"
 *     8   8  rows in the file      16   8  chunks in the file
 *    24   4  CRC of bytes 0..23 of the footer
 *
 * A file is written under a temp name and renamed when whole. A reader refuses
 * a damaged file whole (DATA_LOSS) before handing out any row; NOT_FOUND for a
 * missing one, INVALID_ARGUMENT for a checkpoint or a non-regular file.
 */
#define CTL_XFILE_VERSION 1u

typedef struct ctl_xshard {
    uint32_t index;
    uint64_t after_version, table_version, rows, max_version;
} ctl_xshard;

typedef struct ctl_xheader {
    char table[65];
    uint32_t dim, row_floats, optimizer;
    int full_rows;
    uint32_t shard_count;
    uint32_t n_shards;
    ctl_xshard *shards;      /* [n_shards], malloc'ed */
    uint64_t min_score, created_ns, rows;
    uint32_t chunk_rows;
    uint8_t *config;         /* packed ember.v1.TableConfig, malloc'ed */
    size_t config_len;
} ctl_xheader;

/* One chunk read: pointers into the reader's buffer, valid until the next read. */
typedef struct ctl_xchunk {
    size_t n;
    const uint64_t *keys, *scores, *versions;
    const float *rows;
} ctl_xchunk;

typedef struct ctl_xreader ctl_xreader;
typedef struct ctl_xwriter ctl_xwriter;

size_t ctl_xheader_length(const ctl_xheader *h);
/* Frees h->shards and h->config. */
void ctl_xheader_free(ctl_xheader *h);
/* Reads and checks only the header of the file at path (for --after-version-file). */
int ctl_xheader_read(const char *path, ctl_xheader *h, ember_error *err);

/* Opens the export file at path, fills *h (free with ctl_xheader_free) and checks
 * the whole file; then ctl_xreader_next hands out its chunks in order (c->n 0 at
 * the end). */
int ctl_xreader_open(const char *path, ctl_xreader **out, ctl_xheader *h, ember_error *err);
int ctl_xreader_next(ctl_xreader *r, ctl_xchunk *c, ember_error *err);
/* Bytes of the file read so far. */
uint64_t ctl_xreader_offset(const ctl_xreader *r);
void ctl_xreader_close(ctl_xreader *r);

/* Starts writing `path` (through a temp file); h gives the table, the shard
 * entries and the config, and must keep its entry count and config length until
 * commit. Sets h->created_ns. */
int ctl_xwriter_open(const char *path, ctl_xheader *h, ctl_xwriter **out, ember_error *err);
/* Appends n rows of row_floats floats each (every chunk of a file must have the
 * same row_floats). n = 0 writes nothing. */
int ctl_xwriter_chunk(ctl_xwriter *w, size_t n, const uint64_t *keys, const uint64_t *scores,
                      const uint64_t *versions, const float *rows, uint32_t row_floats,
                      ember_error *err);
/* The file's size once committed, as it stands. */
uint64_t ctl_xwriter_bytes(const ctl_xwriter *w);
/* Fills h->rows, row_floats and chunk_rows, writes the footer and header, fsyncs
 * and renames the file into place. Frees w in every case. */
int ctl_xwriter_commit(ctl_xwriter *w, ctl_xheader *h, ember_error *err);
/* Removes the temp file and frees w. NULL is a no-op. */
void ctl_xwriter_abort(ctl_xwriter *w);

/* ---- main.c: the command line ---------------------------------------------------- */

#define CTL_MAX_POSITIONAL 1024 /* erase TABLE KEY... */
#define CTL_MAX_OPTIONS 32

/* An option of a subcommand: "--dim" with metavar "N", or a flag (arg NULL). A
 * metavar in brackets ("[SECONDS]") makes the value optional: it is the text
 * after '=', or the next argument unless that starts with "--"; given without
 * one, ctl_opt returns "". */
typedef struct ctl_optdef {
    const char *name;
    const char *arg;
    const char *help;
} ctl_optdef;

/* A parsed subcommand line. */
typedef struct ctl_args {
    const struct ctl_cmd *cmd;
    const char *pos[CTL_MAX_POSITIONAL];
    unsigned n_pos;
    const char *value[CTL_MAX_OPTIONS]; /* by index in cmd->opts; a given flag is "" */
} ctl_args;

typedef struct ctl_cmd {
    const char *name;
    const char *synopsis;    /* positional arguments, e.g. "NAME" or "[TABLE]" */
    unsigned min_pos, max_pos;
    const char *summary;     /* one line */
    const char *details;     /* more help, or NULL */
    const ctl_optdef *opts;  /* NULL-terminated, or NULL */
    int (*run)(ctl *c, const ctl_args *a);
    unsigned flags;          /* CTL_CMD_* */
} ctl_cmd;

/* The command works on files only: no shard list is needed or opened. */
#define CTL_CMD_OFFLINE 1u
/* The command talks to the one server its first argument names (ADDR), not to
 * the shard list. */
#define CTL_CMD_ADDR 2u

extern const ctl_cmd ctl_commands[];

/* The value of option `name` ("--dim"), or NULL when not given. */
const char *ctl_opt(const ctl_args *a, const char *name);

/* Parse an option's value; on failure print "emberctl CMD: OPT ..." and return
 * -1 (the caller returns CTL_EXIT_USAGE). Integers take K, M, G, T suffixes
 * (powers of 1024, as ember-server's flags do). */
int ctl_parse_u64(const ctl_args *a, const char *opt, const char *s, uint64_t lo, uint64_t hi,
                  uint64_t *out);
int ctl_parse_float(const ctl_args *a, const char *opt, const char *s, float *out);
/* Prints "emberctl CMD: <message>" and a pointer to --help; returns CTL_EXIT_USAGE. */
int ctl_usage_error(const ctl_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- manifest.c: a cluster-wide save's manifest ------------------------------------- */

/*
 * What `emberctl save --all-shards` writes once every shard has saved its set,
 * and `emberctl load --manifest` reads: one JSON document,
 *
 *   {"format": "ember-save-manifest", "version": 1, "set": NAME,
 *    "created_unix_ns": N, "shard_count": S,
 *    "shards": [{"shard": I, "address": "host:port", "dir": DIR, "window": B,
 *                "tables": [{"name": T, "cut": V}, ...]}, ...]}
 *
 * one entry per shard in shard order: DIR is where that shard saved the set (as
 * the server sees it), V each table's cut (the version its file holds), B
 * whether the at-most-once window was saved beside the tables. The file is
 * replaced whole (a temp file beside it, fsync, rename, fsync of the directory:
 * storage/durable.h), so a crash leaves the previous manifest or the new one.
 */
typedef struct ctl_manifest_table {
    char *name;
    uint64_t cut;
} ctl_manifest_table;

typedef struct ctl_manifest_shard {
    unsigned index;
    char *address, *dir;
    int window;
    ctl_manifest_table *tables;
    size_t n;
} ctl_manifest_shard;

typedef struct ctl_manifest {
    char *set;
    uint64_t created_ns;
    unsigned shard_count;
    ctl_manifest_shard *shards; /* shard_count of them, in shard order */
    size_t n;
} ctl_manifest;

/* Writes m to path durably. -1 with the reason in err. */
int ctl_manifest_write(const char *path, const ctl_manifest *m, char *err, size_t cap);
/* Reads and checks path into m (free it with ctl_manifest_free). -1 with the
 * reason in err: unreadable, not a manifest, malformed, shards missing. */
int ctl_manifest_read(const char *path, ctl_manifest *m, char *err, size_t cap);
void ctl_manifest_free(ctl_manifest *m);

/* ---- stats.c: what stats --watch shares with stats --------------------------------- */

struct Ember__V1__TableStats;

/* total += s, as `stats` sums shards: counters added, the version the largest,
 * the load factor recomputed. s NULL adds nothing. */
void ctl_stats_add(struct Ember__V1__TableStats *total, const struct Ember__V1__TableStats *s);
/* `key`: {every counter of s, "load_factor"}; s NULL: zeros. */
void ctl_json_stats(ctl_json *j, const char *key, const struct Ember__V1__TableStats *s);
/* `stats --json`'s "servers" object from GetStats replies r[c->n]: requests and
 * errors summed, then per answering shard; with req_rate (per shard, NAN: none
 * yet) each shard's requests per second too (stats --watch). */
void ctl_json_stats_servers(ctl_json *j, const ctl *c, const ctl_reply *r,
                            const double *req_rate);

/* ---- watch.c: stats --watch ---------------------------------------------------------- */

/* `stats [TABLE] --watch [SECONDS] [--count N]`: GetStats on every selected
 * shard every SECONDS (default 2, 0.1..86400, fractions allowed), printed with
 * per-second rates of pulls, pushes, keys pulled and keys pushed since the
 * previous refresh; a full screen redrawn on a terminal, refreshes one after
 * another (each after a timestamp line) otherwise, one JSON object per line with
 * --json. A shard that fails a refresh is shown failed in that refresh only.
 * Runs until SIGINT or SIGTERM, or N refreshes. Returns CTL_EXIT_OK, or
 * CTL_EXIT_RPC when some shard never answered (its last error on stderr), or
 * CTL_EXIT_USAGE for a bad --watch or --count. */
int ctl_stats_watch(ctl *c, const ctl_args *a);

/* ---- transfer.c: the commands beyond commands.c ------------------------------------ */

extern const ctl_optdef ctl_export_opts[], ctl_import_opts[], ctl_reshard_opts[];
int ctl_cmd_export(ctl *c, const ctl_args *a);
int ctl_cmd_import(ctl *c, const ctl_args *a);
int ctl_cmd_reshard(ctl *c, const ctl_args *a);
/* ---- erase.c ---- */
int ctl_cmd_erase(ctl *c, const ctl_args *a);
int ctl_cmd_epoch(ctl *c, const ctl_args *a);

#endif /* EMBER_CTL_H */
