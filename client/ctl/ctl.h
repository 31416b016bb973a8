/*
 * ctl.h — emberctl's pieces, one file per concern:
 *
 *   main.c      the command line: global options, the subcommand table, help,
 *               argument and number parsing.
 *   shards.c    the shard list and the fan-out: one Admin call sent to every
 *               selected shard at once, each shard's reply or error kept apart.
 *   commands.c  the subcommands: build the request, fan it out, print the result.
 *   format.c    output: aligned human tables, a JSON writer, human numbers.
 *
 * Exit status, for scripts: CTL_EXIT_OK (0) every call succeeded;
 * CTL_EXIT_RPC (1) a call failed on some shard (each failure printed on stderr
 * as "emberctl: shard I (ADDR): CODE_NAME: message", and listed under "errors" in
 * --json output); CTL_EXIT_USAGE (2) the command line was wrong.
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

/* "errors": [{"shard", "address", "code", "message"}...] for the failed replies. */
void ctl_json_errors(ctl_json *j, const ctl_reply *replies, unsigned n);

/* ---- main.c: the command line ---------------------------------------------------- */

#define CTL_MAX_POSITIONAL 4
#define CTL_MAX_OPTIONS 32

/* An option of a subcommand: "--dim" with metavar "N", or a flag (arg NULL). */
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
} ctl_cmd;

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

#endif /* EMBER_CTL_H */
