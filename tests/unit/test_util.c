#define _GNU_SOURCE
#include "test_util.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

ember_table *tu_table(uint32_t dim, uint64_t capacity, int optim, int policy, int init_kind)
{
    return tu_table_on(NULL, dim, capacity, optim, policy, init_kind);
}

ember_table *tu_table_on(const ember_table_backend *backend, uint32_t dim, uint64_t capacity,
                         int optim, int policy, int init_kind)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = capacity;
    c.optim.kind = optim;
    c.score_policy = policy;
    c.init.kind = init_kind;
    c.seed = 42;
    ember_table *t = NULL;
    ember_error err;
    int rc = ember_table_create(&c, backend, &t, &err);
    ck_assert_msg(rc == EMBER_OK, "create: %s", err.message);
    return t;
}

typedef struct sort_ent {
    uint64_t key;
    size_t at;
} sort_ent;

static int by_key(const void *a, const void *b)
{
    uint64_t x = ((const sort_ent *)a)->key, y = ((const sort_ent *)b)->key;
    return x < y ? -1 : x > y;
}

/* Reads rows through `next` (an export of whole buckets) until it is done, then
 * sorts them by key into s. */
typedef int (*tu_next_fn)(void *arg, uint64_t *cursor, size_t max, uint64_t *keys,
                          float *rows, uint64_t *scores, uint64_t *vers, size_t *got);

static void snapshot_read(tu_next_fn next, void *arg, uint64_t end, uint32_t rf, size_t hint,
                          tu_snapshot *s)
{
    size_t cap = hint + EMBER_BUCKET_SLOTS, n = 0, batch = 4096;
    uint64_t *keys = malloc(cap * sizeof *keys), *scores = malloc(cap * sizeof *scores);
    uint64_t *vers = malloc(cap * sizeof *vers);
    float *rows = malloc(cap * rf * sizeof *rows);
    uint64_t cursor = 0;
    while (cursor < end) {
        size_t got = 0;
        if (cap - n < batch) {
            cap = 2 * cap + batch;
            keys = realloc(keys, cap * sizeof *keys);
            scores = realloc(scores, cap * sizeof *scores);
            vers = realloc(vers, cap * sizeof *vers);
            rows = realloc(rows, cap * rf * sizeof *rows);
        }
        ck_assert_int_eq(next(arg, &cursor, batch, keys + n, rows + n * rf, scores + n,
                              vers + n, &got),
                         EMBER_OK);
        n += got;
    }
    sort_ent *e = malloc((n + 1) * sizeof *e);
    for (size_t i = 0; i < n; i++) {
        e[i].key = keys[i];
        e[i].at = i;
    }
    qsort(e, n, sizeof *e, by_key);
    s->n = n;
    s->row_floats = rf;
    s->keys = malloc((n + 1) * sizeof *s->keys);
    s->scores = malloc((n + 1) * sizeof *s->scores);
    s->versions = malloc((n + 1) * sizeof *s->versions);
    s->rows = malloc((n * rf + 1) * sizeof *s->rows);
    for (size_t i = 0; i < n; i++) {
        s->keys[i] = keys[e[i].at];
        s->scores[i] = scores[e[i].at];
        s->versions[i] = vers[e[i].at];
        memcpy(s->rows + i * rf, rows + e[i].at * rf, rf * sizeof(float));
    }
    free(e);
    free(keys);
    free(scores);
    free(vers);
    free(rows);
}

static int table_next(void *arg, uint64_t *cursor, size_t max, uint64_t *keys, float *rows,
                      uint64_t *scores, uint64_t *vers, size_t *got)
{
    const ember_export_filter f = {0, 0, 1};
    return ember_table_export(arg, &f, cursor, max, keys, rows, scores, vers, got, NULL);
}

void tu_snapshot_take(ember_table *t, tu_snapshot *s)
{
    snapshot_read(table_next, t, ember_table_export_end(t), ember_table_row_floats(t),
                  ember_table_size(t), s);
}

static int pit_next(void *arg, uint64_t *cursor, size_t max, uint64_t *keys, float *rows,
                    uint64_t *scores, uint64_t *vers, size_t *got)
{
    return ember_table_snapshot_export(arg, cursor, max, keys, rows, scores, vers, got, NULL);
}

void tu_snapshot_read(ember_table_snapshot *snap, uint32_t row_floats, tu_snapshot *s)
{
    snapshot_read(pit_next, snap, ember_table_snapshot_end_cursor(snap), row_floats,
                  ember_table_snapshot_size(snap), s);
}

int tu_snapshot_equal(const tu_snapshot *a, const tu_snapshot *b)
{
    return a->n == b->n && a->row_floats == b->row_floats &&
           !memcmp(a->keys, b->keys, a->n * sizeof *a->keys) &&
           !memcmp(a->scores, b->scores, a->n * sizeof *a->scores) &&
           !memcmp(a->versions, b->versions, a->n * sizeof *a->versions) &&
           !memcmp(a->rows, b->rows, a->n * a->row_floats * sizeof *a->rows);
}

void tu_snapshot_free(tu_snapshot *s)
{
    free(s->keys);
    free(s->rows);
    free(s->scores);
    free(s->versions);
    memset(s, 0, sizeof *s);
}

long tu_snapshot_find(const tu_snapshot *s, uint64_t key)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->keys[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < s->n && s->keys[lo] == key ? (long)lo : -1;
}

int tu_run(Suite *s)
{
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}

void tdir_make(tdir *d)
{
    const char *base = getenv("TMPDIR");
    snprintf(d->path, sizeof d->path, "%s/ember_test_XXXXXX", base && *base ? base : "/tmp");
    ck_assert_ptr_nonnull(mkdtemp(d->path));
}

const char *tdir_file(const tdir *d, const char *name, char out[512])
{
    snprintf(out, 512, "%s/%s", d->path, name);
    return out;
}

int tdir_count(const tdir *d, const char *part)
{
    DIR *dir = opendir(d->path);
    ck_assert_ptr_nonnull(dir);
    int n = 0;
    for (struct dirent *e; (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strstr(e->d_name, part))
            n++;
    closedir(dir);
    return n;
}

void tdir_remove(tdir *d)
{
    DIR *dir = opendir(d->path);
    char p[512];
    for (struct dirent *e; dir && (e = readdir(dir));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") &&
            unlink(tdir_file(d, e->d_name, p)))
            rmdir(p);
    if (dir)
        closedir(dir);
    rmdir(d->path);
}
