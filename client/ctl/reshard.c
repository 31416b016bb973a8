/*
 * reshard.c — N shards' checkpoints into M shards' (see reshard.h).
 *
 * One pass: the inputs' headers are read and compared first (a mixed or
 * incomplete set is refused before any row is read), then each input is opened
 * with ember_ckpt_reader_open — which checks the whole file — and its rows are
 * routed to M checkpoint writers. The writers write temp files; they are
 * renamed into place only after the last input was read, so a damaged input
 * found late leaves nothing behind.
 */
#define _GNU_SOURCE

#include "reshard.h"

#include <dirent.h>
#include <errno.h>
#include <glob.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "storage/checkpoint.h"

/* Memory for the writers' chunk buffers, all M together. */
#define WRITERS_BUDGET (UINT64_C(256) << 20)
#define CHUNK_DEFAULT_BYTES (UINT64_C(4) << 20)

__attribute__((format(printf, 4, 5)))
static int fail(char *msg, size_t len, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return code;
}

static int oom(char *msg, size_t len)
{
    return fail(msg, len, EMBER_RESOURCE_EXHAUSTED, "out of memory");
}

/* ---- finding the inputs ----------------------------------------------------------- */

typedef struct input {
    char *path;
    ember_ckpt_meta meta;
} input;

typedef struct inputs {
    input *v;
    size_t n, cap;
} inputs;

static int has_suffix(const char *s, const char *suffix)
{
    size_t l = strlen(s), k = strlen(suffix);
    return l > k && strcmp(s + l - k, suffix) == 0;
}

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The checkpoint of `table` in dir, as ember-server saves it: <dir>/<table>.ckpt
 * (older ones in <dir>/history/ are taken only when named). With table NULL, the
 * dir must hold exactly one <name>.ckpt. */
static int find_in_dir(const char *dir, const char *table, char **path, char *msg, size_t len)
{
    *path = NULL;
    if (table) {
        if (asprintf(path, "%s/%s.ckpt", dir, table) < 0) {
            *path = NULL;
            return oom(msg, len);
        }
        if (is_file(*path))
            return 0;
        int rc = fail(msg, len, EMBER_NOT_FOUND, "no checkpoint of table '%s' in %s (no %s)",
                      table, dir, *path);
        free(*path);
        *path = NULL;
        return rc;
    }
    DIR *d = opendir(dir);
    struct dirent *e;
    char *found = NULL;
    unsigned tables = 0;
    if (!d)
        return fail(msg, len, EMBER_NOT_FOUND, "%s: %s", dir, strerror(errno));
    while ((e = readdir(d))) {
        char *p;
        if (e->d_name[0] == '.' || !has_suffix(e->d_name, ".ckpt") ||
            asprintf(&p, "%s/%s", dir, e->d_name) < 0)
            continue;
        if (is_file(p)) {
            tables++;
            free(found);
            found = p;
        } else {
            free(p);
        }
    }
    closedir(d);
    if (tables == 1) {
        *path = found;
        return 0;
    }
    free(found);
    if (tables == 0)
        return fail(msg, len, EMBER_NOT_FOUND, "no checkpoint (<table>.ckpt) in %s", dir);
    return fail(msg, len, EMBER_INVALID_ARGUMENT,
                "%s holds checkpoints of %u tables: name one with --table", dir, tables);
}

static int add_input(inputs *in, char *path, char *msg, size_t len)
{
    if (in->n == in->cap) {
        size_t cap = in->cap ? 2 * in->cap : 8;
        input *v = realloc(in->v, cap * sizeof *v);
        if (!v) {
            free(path);
            return oom(msg, len);
        }
        in->v = v;
        in->cap = cap;
    }
    ember_error err;
    input *x = &in->v[in->n];
    x->path = path;
    int rc = ember_ckpt_read_meta(path, &x->meta, &err);
    if (rc) {
        char magic[8] = {0};
        FILE *f = rc == EMBER_DATA_LOSS ? fopen(path, "rb") : NULL;
        int is_export = f && fread(magic, 1, 8, f) == 8 && !memcmp(magic, "EMBREXPT", 8);
        if (f)
            fclose(f);
        if (is_export)
            rc = fail(msg, len, EMBER_INVALID_ARGUMENT,
                      "%s is an export file, not a checkpoint: 'emberctl import' it into the "
                      "new shards instead", path);
        else
            fail(msg, len, rc, "%s", err.message);
        free(path);
        return rc;
    }
    in->n++;
    return 0;
}

/* Expands every `from` entry into checkpoint files and reads their headers. */
static int gather(const ctl_reshard_job *j, inputs *in, char *msg, size_t len)
{
    for (size_t i = 0; i < j->n_from; i++) {
        const char *pat = j->from[i];
        glob_t g;
        int gr = glob(pat, 0, NULL, &g);
        if (gr == GLOB_NOMATCH) {
            globfree(&g);
            return strpbrk(pat, "*?[")
                       ? fail(msg, len, EMBER_NOT_FOUND, "'%s' matches no file", pat)
                       : fail(msg, len, EMBER_NOT_FOUND, "%s: no such file or directory", pat);
        }
        if (gr) {
            globfree(&g);
            return fail(msg, len, EMBER_INTERNAL, "cannot expand '%s'", pat);
        }
        int rc = 0;
        for (size_t k = 0; !rc && k < g.gl_pathc; k++) {
            const char *p = g.gl_pathv[k];
            /* once one file named the table, directories are searched for it */
            const char *table = j->table ? j->table : in->n ? in->v[0].meta.table_name : NULL;
            char *path = NULL;
            if (is_dir(p))
                rc = find_in_dir(p, table, &path, msg, len);
            else if (!(path = strdup(p)))
                rc = oom(msg, len);
            if (!rc)
                rc = add_input(in, path, msg, len);
        }
        globfree(&g);
        if (rc)
            return rc;
    }
    return 0;
}

static int by_shard(const void *a, const void *b)
{
    uint32_t x = ((const input *)a)->meta.shard_index, y = ((const input *)b)->meta.shard_index;
    return (x > y) - (x < y);
}

/* One table, one cluster, every shard once: else a message naming the files. */
static int check_set(const ctl_reshard_job *j, inputs *in, char *msg, size_t len)
{
    const input *a = &in->v[0];
    const ember_ckpt_meta *m = &a->meta;
    if (j->table && strcmp(m->table_name, j->table))
        return fail(msg, len, EMBER_INVALID_ARGUMENT, "%s holds table '%s', not '%s'", a->path,
                    m->table_name, j->table);
    for (size_t i = 1; i < in->n; i++) {
        const input *b = &in->v[i];
        const ember_ckpt_meta *o = &b->meta;
        if (strcmp(o->table_name, m->table_name))
            return fail(msg, len, EMBER_INVALID_ARGUMENT,
                        "mixed tables: %s holds '%s', %s holds '%s'", a->path, m->table_name,
                        b->path, o->table_name);
        if (o->config.dim != m->config.dim || o->config.optim.kind != m->config.optim.kind)
            return fail(msg, len, EMBER_INVALID_ARGUMENT,
                        "mixed row layouts: %s has dim %u, optimizer %d; %s has dim %u, "
                        "optimizer %d", a->path, m->config.dim, m->config.optim.kind, b->path,
                        o->config.dim, o->config.optim.kind);
        if (o->shard_count != m->shard_count)
            return fail(msg, len, EMBER_INVALID_ARGUMENT,
                        "mixed shard counts: %s is shard %u of %u, %s is shard %u of %u",
                        a->path, m->shard_index, m->shard_count, b->path, o->shard_index,
                        o->shard_count);
    }
    qsort(in->v, in->n, sizeof *in->v, by_shard);
    for (size_t i = 0; i + 1 < in->n; i++)
        if (in->v[i].meta.shard_index == in->v[i + 1].meta.shard_index)
            return fail(msg, len, EMBER_INVALID_ARGUMENT, "%s and %s both hold shard %u of %u",
                        in->v[i].path, in->v[i + 1].path, in->v[i].meta.shard_index,
                        m->shard_count);
    if (in->n != m->shard_count) {
        uint32_t missing = 0;
        for (size_t i = 0; i < in->n && in->v[i].meta.shard_index == missing; i++)
            missing++;
        return fail(msg, len, EMBER_INVALID_ARGUMENT,
                    "table '%s' was saved by %u shards but %zu file%s given: shard %u is "
                    "missing", m->table_name, m->shard_count, in->n, in->n == 1 ? " is" : "s are",
                    missing);
    }
    return 0;
}

/* ---- writing ---------------------------------------------------------------------- */

static int make_dir(const char *p, char *msg, size_t len)
{
    if (mkdir(p, 0755) == 0 || (errno == EEXIST && is_dir(p)))
        return 0;
    return fail(msg, len, EMBER_INTERNAL, "mkdir %s: %s", p, strerror(errno));
}

/* mkdir -p */
static int make_dirs(const char *path, char *msg, size_t len)
{
    char *p = strdup(path);
    int rc = p ? 0 : oom(msg, len);
    for (char *s = p ? p + 1 : NULL; !rc && s && (s = strchr(s, '/')); s++) {
        *s = '\0';
        rc = make_dir(p, msg, len);
        *s = '/';
    }
    if (!rc)
        rc = make_dir(p, msg, len);
    free(p);
    return rc;
}

/* Rows per output chunk: the save's size, less when M writers would hold more
 * than WRITERS_BUDGET, never under a bucket. */
static uint32_t chunk_rows_for(uint32_t rf, uint32_t m)
{
    uint64_t row = 24u + 4u * (uint64_t)rf;
    uint64_t want = CHUNK_DEFAULT_BYTES / row, budget = WRITERS_BUDGET / m / row;
    if (want > EMBER_CKPT_CHUNK_ROWS_MAX)
        want = EMBER_CKPT_CHUNK_ROWS_MAX;
    if (budget < want)
        want = budget;
    return want < EMBER_BUCKET_SLOTS ? EMBER_BUCKET_SLOTS : (uint32_t)want;
}

int ctl_reshard_run(const ctl_reshard_job *j, ctl_reshard_result *r, char *msg, size_t len)
{
    inputs in = {NULL, 0, 0};
    ember_ckpt_writer **w = NULL;
    ember_error err;
    int rc = 0;
    memset(r, 0, sizeof *r);
    msg[0] = '\0';
    if (!j->n_from || !j->out_dir || !*j->out_dir || !j->shard_of || j->to_count < 1 ||
        j->to_count > 65536)
        return fail(msg, len, EMBER_INVALID_ARGUMENT, "reshard needs inputs, --out and "
                                                      "--to-count 1..65536");
    if ((rc = gather(j, &in, msg, len)) || (rc = check_set(j, &in, msg, len)))
        goto out;

    const ember_ckpt_meta *m0 = &in.v[0].meta;
    uint32_t n = m0->shard_count, m = j->to_count;
    ember_table_config cfg = m0->config;
    snprintf(r->table, sizeof r->table, "%s", m0->table_name);
    r->dim = cfg.dim;
    r->optimizer = (uint32_t)cfg.optim.kind;
    r->row_floats = ember_table_config_row_floats(&cfg);
    r->from_count = n;
    r->to_count = m;
    uint64_t total = 0;
    uint32_t epoch = 0; /* the newest any shard had */
    for (size_t i = 0; i < in.n; i++) {
        total += in.v[i].meta.rows;
        if (in.v[i].meta.version > r->version)
            r->version = in.v[i].meta.version;
        if (in.v[i].meta.epoch > epoch)
            epoch = in.v[i].meta.epoch;
    }
    /* Per new shard: what the N shards held together, spread over M; never less
     * than a shard had. */
    uint64_t cap = j->capacity;
    if (!cap) {
        cap = cfg.capacity;
        if (m < n)
            cap = (cfg.capacity * n + m - 1) / m;
        if (cap > EMBER_CAPACITY_MAX)
            cap = EMBER_CAPACITY_MAX;
    }
    cfg.capacity = r->capacity = cap;

    r->inputs = calloc(n, sizeof *r->inputs);
    r->outputs = calloc(m, sizeof *r->outputs);
    r->rows_out = calloc(m, sizeof *r->rows_out);
    w = calloc(m, sizeof *w);
    if (!r->inputs || !r->outputs || !r->rows_out || !w) {
        rc = oom(msg, len);
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        r->inputs[i] = in.v[i].path;
        in.v[i].path = NULL;
    }
    if ((rc = make_dirs(j->out_dir, msg, len)))
        goto out;
    uint32_t chunk_rows = chunk_rows_for(r->row_floats, m);
    for (uint32_t s = 0; s < m && !rc; s++) {
        char *dir = NULL;
        if (asprintf(&dir, "%s/shard-%u", j->out_dir, s) < 0 ||
            asprintf(&r->outputs[s], "%s/%s.ckpt", dir, r->table) < 0) {
            r->outputs[s] = NULL;
            rc = oom(msg, len);
        }
        if (!rc)
            rc = make_dir(dir, msg, len);
        free(dir);
        /* the new shards are placed as shard 0's table asked (its backend, HBM) */
        if (!rc && (rc = ember_ckpt_writer_open(r->outputs[s], &cfg, r->table, s, m,
                                                &m0->placement, chunk_rows, &w[s], &err)))
            fail(msg, len, rc, "%s", err.message);
    }

    /* Route every row. */
    for (uint32_t i = 0; i < n && !rc; i++) {
        ember_ckpt_reader *rd;
        if ((rc = ember_ckpt_reader_open(r->inputs[i], &rd, NULL, &err))) {
            fail(msg, len, rc, "%s", err.message);
            break;
        }
        uint32_t rf = ember_ckpt_reader_row_floats(rd);
        for (;;) {
            size_t k;
            const uint64_t *keys, *scores, *versions;
            const float *rows;
            if ((rc = ember_ckpt_reader_next(rd, &k, &keys, &scores, &versions, &rows, &err))) {
                fail(msg, len, rc, "%s", err.message);
                break;
            }
            if (!k)
                break;
            for (size_t x = 0; x < k && !rc; x++) {
                unsigned s = j->shard_of(keys[x], m);
                r->misplaced += j->shard_of(keys[x], n) != i;
                if ((rc = ember_ckpt_writer_append(w[s], &keys[x], 1, rows + x * rf, &scores[x],
                                                   &versions[x], &err)))
                    fail(msg, len, rc, "%s", err.message);
                r->rows_out[s]++;
            }
            if (rc)
                break;
            r->rows += k;
            r->bytes_in += k * (24u + 4u * (uint64_t)rf);
            if (j->progress)
                j->progress(j->progress_ud, r->rows, total, r->bytes_in);
        }
        ember_ckpt_reader_close(rd);
    }
    for (uint32_t s = 0; s < m && !rc; s++)
        if (r->rows_out[s] > cap)
            rc = fail(msg, len, EMBER_FAILED_PRECONDITION,
                      "new shard %u would hold %llu rows, over its capacity of %llu: give a "
                      "larger --capacity", s, (unsigned long long)r->rows_out[s],
                      (unsigned long long)cap);

    /* Everything read and written: now put the files in place. */
    for (uint32_t s = 0; s < m && !rc; s++) {
        ember_ckpt_writer_set_epoch(w[s], epoch);
        rc = ember_ckpt_writer_commit(w[s], r->version, NULL, &err);
        w[s] = NULL;
        if (rc)
            fail(msg, len, rc, "%s%s", err.message,
                 s ? " (the new shards before this one are in place already)" : "");
    }
out:
    for (uint32_t s = 0; w && s < j->to_count; s++)
        ember_ckpt_writer_abort(w[s]);
    free(w);
    for (size_t i = 0; i < in.n; i++)
        free(in.v[i].path);
    free(in.v);
    return rc;
}

void ctl_reshard_result_free(ctl_reshard_result *r)
{
    for (uint32_t i = 0; r->inputs && i < r->from_count; i++)
        free(r->inputs[i]);
    for (uint32_t i = 0; r->outputs && i < r->to_count; i++)
        free(r->outputs[i]);
    free(r->inputs);
    free(r->outputs);
    free(r->rows_out);
    memset(r, 0, sizeof *r);
}
