/*
 * checkpoint.c — saving a table to a checkpoint file and loading it back (the
 * format is in checkpoint.h, its codec in ckpt_format.c, the file's replacement
 * in durable.c).
 *
 * Saving streams export batches into chunks through one write buffer; the
 * header goes last (at offset 0) because the row count is known only when the
 * scan ends. Loading reads the file twice through one open fd: a first pass
 * checks everything, a second clears the table and imports chunk by chunk, so a
 * bad file never touches the table. Both passes reuse one chunk buffer.
 */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_format.h"

/* ---- loading --------------------------------------------------------------- */

/* Is the file's table shaped like `t`, and the shard the one expected? */
static int check_fits(ember_table *t, const ckpt_file *f, const ember_ckpt_expect *expect,
                      ember_error *err)
{
    const ember_ckpt_meta *m = &f->cf_hdr.ch_meta;
    const ember_table_config *c = ember_table_config_of(t);
    const char *p = f->cf_path;
    if (m->config.dim != c->dim || m->config.optim.kind != c->optim.kind ||
        f->cf_hdr.ch_row_floats != ember_table_row_floats(t))
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p,
                         "rows of dim %u, optimizer %d (%u floats) do not fit a table of "
                         "dim %u, optimizer %d (%u floats)",
                         m->config.dim, m->config.optim.kind, f->cf_hdr.ch_row_floats, c->dim,
                         c->optim.kind, ember_table_row_floats(t));
    if (expect && (m->shard_index != expect->shard_index ||
                   m->shard_count != expect->shard_count))
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p,
                         "holds shard %u of %u, expected shard %u of %u", m->shard_index,
                         m->shard_count, expect->shard_index, expect->shard_count);
    if (expect && expect->table_name && strcmp(expect->table_name, m->table_name))
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p,
                         "holds table '%s', expected '%s'", m->table_name,
                         expect->table_name);
    uint64_t room = ember_table_config_max_slots(c);
    if (m->rows > room)
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p,
                         "holds %llu rows, more than the table's capacity of %llu",
                         (unsigned long long)m->rows, (unsigned long long)room);
    return EMBER_OK;
}

/* A load's table and its progress report. */
typedef struct fill_ctx {
    ember_table *t;
    const ember_ckpt_progress *progress;
    uint64_t done, total;
} fill_ctx;

static void progress_report(const ember_ckpt_progress *p, uint64_t done, uint64_t total)
{
    if (p && p->fn)
        p->fn(p->arg, done, total);
}

static int import_chunk(const ckpt_chunk *c, void *arg, ember_error *err)
{
    fill_ctx *x = arg;
    int rc = ember_table_import(x->t, c->keys, c->n, c->rows, c->scores, c->versions, err);
    if (!rc) {
        x->done += c->n;
        progress_report(x->progress, x->done, x->total);
    }
    return rc;
}

/* Clears t and imports the (already checked) file; on failure t is left empty. */
static int ckpt_fill(ember_table *t, const ckpt_file *f, uint8_t *buf,
                     const ember_ckpt_progress *progress, ember_error *err)
{
    int rc = ember_table_clear(t, err);
    if (rc)
        return rc;
    /* A growing table takes its size for these rows at once, not doubling by
     * doubling as they come; without the memory it grows as far as it can. */
    ember_table_reserve(t, f->cf_hdr.ch_meta.rows, NULL);
    fill_ctx x = {t, progress, 0, f->cf_hdr.ch_meta.rows};
    progress_report(progress, 0, x.total);
    rc = ckpt_scan(f, buf, import_chunk, &x, err);
    if (!rc) {
        ember_table_raise_version(t, f->cf_hdr.ch_meta.version);
        if (f->cf_hdr.ch_format >= 3) /* older files carry no epoch */
            ember_table_set_epoch(t, f->cf_hdr.ch_meta.epoch);
        return EMBER_OK;
    }
    ember_error first = {0};
    if (err)
        first = *err;
    ember_table_clear(t, NULL);
    if (rc == EMBER_DATA_LOSS)
        return ember_error_set(err, rc, "%s (the file changed while loading; table cleared)",
                               first.message);
    return ember_error_set(err, rc, "%s (table cleared)", first.message);
}

int ember_ckpt_read_meta(const char *path, ember_ckpt_meta *out, ember_error *err)
{
    ckpt_file f;
    if (!path || !out)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "read_meta needs path and out");
    int rc = ckpt_open(path, &f, err);
    if (rc)
        return rc;
    close(f.cf_fd);
    *out = f.cf_hdr.ch_meta;
    return EMBER_OK;
}

int ember_ckpt_load(ember_table *t, const char *path, const ember_ckpt_expect *expect,
                    ember_ckpt_meta *out_meta, ember_error *err)
{
    return ember_ckpt_load_progress(t, path, expect, NULL, out_meta, err);
}

int ember_ckpt_load_progress(ember_table *t, const char *path, const ember_ckpt_expect *expect,
                             const ember_ckpt_progress *progress, ember_ckpt_meta *out_meta,
                             ember_error *err)
{
    ckpt_file f;
    if (!t || !path)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "load needs a table and a path");
    int rc = ckpt_open(path, &f, err);
    if (rc)
        return rc;
    uint8_t *buf = NULL;
    rc = check_fits(t, &f, expect, err);
    if (!rc) {
        buf = malloc(ckpt_chunk_bytes(f.cf_hdr.ch_chunk_rows, f.cf_hdr.ch_row_floats));
        if (!buf)
            rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    }
    if (!rc)
        rc = ckpt_scan(&f, buf, NULL, NULL, err);
    if (!rc)
        rc = ckpt_fill(t, &f, buf, progress, err);
    free(buf);
    close(f.cf_fd);
    if (!rc && out_meta)
        *out_meta = f.cf_hdr.ch_meta;
    return rc;
}

/* ---- saving ---------------------------------------------------------------- */

/* Writes every row of the snapshot s into chunks; counts rows into h and chunks
 * into *chunks. */
static int write_rows(ember_table_snapshot *s, ckpt_out *o, ckpt_header *h, uint64_t *chunks,
                      const ember_ckpt_progress *progress, const char *path, ember_error *err)
{
    uint64_t total = ember_table_snapshot_size(s);
    progress_report(progress, 0, total);
    uint32_t rf = h->ch_row_floats;
    uint64_t cursor = 0, end = ember_table_snapshot_end_cursor(s);
    ckpt_batch b = {NULL, NULL, NULL, NULL, NULL};
    int rc = ckpt_batch_alloc(&b, h->ch_chunk_rows, rf, err);
    while (!rc && cursor < end) {
        size_t n;
        rc = ember_table_snapshot_export(s, &cursor, h->ch_chunk_rows, b.cb_keys, b.cb_rows,
                                         b.cb_scores, b.cb_versions, &n, err);
        if (rc || !n)
            continue;
        size_t bad = ckpt_first_nonfinite(b.cb_rows, n * rf);
        if (bad < n * rf) {
            rc = ckpt_fail(err, EMBER_FAILED_PRECONDITION, path,
                           "row of key %llu holds NaN or Inf; not saved",
                           (unsigned long long)b.cb_keys[bad / rf]);
            continue;
        }
        const ckpt_chunk c = {n, b.cb_keys, b.cb_scores, b.cb_versions, b.cb_rows};
        int e = ckpt_out_chunk(o, &c, rf);
        if (e) {
            rc = ckpt_io_fail(err, path, "write", e);
            continue;
        }
        h->ch_meta.rows += n;
        (*chunks)++;
        progress_report(progress, h->ch_meta.rows, total);
    }
    free(b.cb_mem);
    return rc;
}

/* Writes the whole file from a snapshot of t: a placeholder header, the chunks,
 * the footer, then the real header (its counts are known only now). */
static int write_file(ember_table *t, ember_durable_file *file, ckpt_header *h,
                      const ember_ckpt_save_opts *opts, const char *path, ember_error *err)
{
    uint64_t chunks = 0;
    ckpt_out o;
    ember_table_snapshot *s = opts ? opts->snapshot : NULL, *own = NULL;
    int e = ckpt_out_begin(&o, file, 1, CKPT_HDR_LEN);
    int rc = e ? ckpt_durable_fail(err, path, e, &o.co_fail) : EMBER_OK;
    if (!rc && !s) {
        rc = ember_table_snapshot_begin(t, opts ? opts->at_cut : NULL,
                                        opts ? opts->at_cut_arg : NULL, &own, err);
        s = own;
    }
    if (!rc) {
        /* the header says the table as it was at the cut */
        h->ch_meta.version = ember_table_snapshot_cut(s);
        h->ch_meta.epoch = ember_table_snapshot_epoch(s);
        rc = write_rows(s, &o, h, &chunks, opts ? opts->progress : NULL, path, err);
    }
    ember_table_snapshot_end(own);
    if (!rc) {
        e = ckpt_out_end(&o, h, chunks);
        rc = e ? ckpt_io_fail(err, path, "write", e) : EMBER_OK;
    }
    ckpt_out_free(&o);
    return rc;
}

int ember_ckpt_save(ember_table *t, const char *path, const char *table_name,
                    uint32_t shard_index, uint32_t shard_count,
                    const ember_ckpt_placement *placement, ember_ckpt_meta *out_meta,
                    ember_error *err)
{
    return ember_ckpt_save_progress(t, path, table_name, shard_index, shard_count, placement,
                                    NULL, out_meta, err);
}

int ember_ckpt_save_progress(ember_table *t, const char *path, const char *table_name,
                             uint32_t shard_index, uint32_t shard_count,
                             const ember_ckpt_placement *placement,
                             const ember_ckpt_progress *progress, ember_ckpt_meta *out_meta,
                             ember_error *err)
{
    const ember_ckpt_save_opts opts = {progress, NULL, NULL, NULL};
    return ember_ckpt_save_opts_run(t, path, table_name, shard_index, shard_count, placement,
                                    &opts, out_meta, err);
}

int ember_ckpt_save_opts_run(ember_table *t, const char *path, const char *table_name,
                             uint32_t shard_index, uint32_t shard_count,
                             const ember_ckpt_placement *placement,
                             const ember_ckpt_save_opts *opts, ember_ckpt_meta *out_meta,
                             ember_error *err)
{
    ckpt_header h;
    ember_durable_file *file = NULL;
    ember_durable_fail fail;
    if (!t || !path || !*path)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "save needs a table and a path");
    ember_table_config c = *ember_table_config_of(t);
    c.ttl_seconds = ember_table_ttl(t); /* as it is now: AlterTable may have changed it */
    int rc = ckpt_header_init(&h, &c, table_name, shard_index,
                              shard_count, placement, 0, path, err);
    if (rc)
        return rc;
    int e = ember_durable_create(path, &file, &fail);
    if (e)
        return ckpt_durable_fail(err, path, e, &fail);
    rc = write_file(t, file, &h, opts, path, err);
    if (rc) {
        ember_durable_abort(file);
        return rc;
    }
    e = ember_durable_commit(file, &fail);
    if (e)
        return ckpt_durable_fail(err, path, e, &fail);
    if (out_meta)
        *out_meta = h.ch_meta;
    return EMBER_OK;
}
