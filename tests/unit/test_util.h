/*
 * test_util.h — helpers shared by the unit suites: tables with a given shape,
 * whole-table snapshots to prove that a refused call changed nothing, and
 * temp directories for suites that write files.
 */
#ifndef EMBER_TEST_UTIL_H
#define EMBER_TEST_UTIL_H

#include <check.h>
#include <stdint.h>

#include "storage/table.h"

/* A table of `dim` × `capacity` with optimizer `optim` and score policy
 * `policy`, zeros initializer unless `init_kind` says otherwise; fails the test
 * if creation fails. */
ember_table *tu_table(uint32_t dim, uint64_t capacity, int optim, int policy, int init_kind);
/* The same on `backend` (NULL: the CPU's). */
ember_table *tu_table_on(const ember_table_backend *backend, uint32_t dim, uint64_t capacity,
                         int optim, int policy, int init_kind);

/* Every row of a table, sorted by key: keys, full rows, scores, versions. */
typedef struct tu_snapshot {
    size_t n;
    uint32_t row_floats;
    uint64_t *keys;
    float *rows;
    uint64_t *scores;
    uint64_t *versions;
} tu_snapshot;

void tu_snapshot_take(ember_table *t, tu_snapshot *s);
/* Every row of a point-in-time snapshot (table.h), read through, sorted alike. */
void tu_snapshot_read(ember_table_snapshot *snap, uint32_t row_floats, tu_snapshot *s);
/* 1 if both hold the same keys with bit-identical rows, scores and versions. */
int tu_snapshot_equal(const tu_snapshot *a, const tu_snapshot *b);
void tu_snapshot_free(tu_snapshot *s);
/* Index of `key` in the snapshot, or -1. */
long tu_snapshot_find(const tu_snapshot *s, uint64_t key);

/* A fresh directory under $TMPDIR (or /tmp) for a test's files. */
typedef struct tdir {
    char path[256];
} tdir;

void tdir_make(tdir *d);
/* d/name into out; returns out. */
const char *tdir_file(const tdir *d, const char *name, char out[512]);
/* Entries of d whose name contains `part` ("" counts all). */
int tdir_count(const tdir *d, const char *part);
/* Removes d with the files (and empty directories) in it. */
void tdir_remove(tdir *d);

/* Runs one Check suite and returns the process exit code (0 = all passed). */
int tu_run(Suite *s);

#endif
