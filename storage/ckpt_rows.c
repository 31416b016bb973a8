/*
 * ckpt_rows.c — checkpoint files row by row, without a table (the reader and
 * writer of checkpoint.h, for emberctl reshard).
 *
 * The reader runs load's checking pass at open, then hands out chunks; the
 * writer fills one chunk at a time and writes it unbuffered, so that a reshard
 * to many shards holds only one chunk per writer.
 */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_format.h"

struct ember_ckpt_reader {
    ckpt_file cr_file;
    char *cr_path;          /* cr_file.cf_path points here */
    uint8_t *cr_buf;        /* one chunk */
    uint64_t cr_off, cr_rows, cr_chunks;
    int cr_done, cr_failed;
};

int ember_ckpt_reader_open(const char *path, ember_ckpt_reader **out, ember_ckpt_meta *meta,
                           ember_error *err)
{
    if (!path || !out)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "reader_open needs path and out");
    *out = NULL;
    ember_ckpt_reader *r = calloc(1, sizeof *r);
    char *copy = strdup(path);
    if (!r || !copy) {
        free(r);
        free(copy);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    }
    r->cr_path = copy;
    int rc = ckpt_open(copy, &r->cr_file, err);
    if (rc) {
        free(copy);
        free(r);
        return rc;
    }
    const ckpt_header *h = &r->cr_file.cf_hdr;
    r->cr_buf = malloc(ckpt_chunk_bytes(h->ch_chunk_rows, h->ch_row_floats));
    rc = r->cr_buf ? ckpt_scan(&r->cr_file, r->cr_buf, NULL, NULL, err)
                   : ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    if (rc) {
        ember_ckpt_reader_close(r);
        return rc;
    }
    r->cr_off = h->ch_len;
    if (meta)
        *meta = h->ch_meta;
    *out = r;
    return EMBER_OK;
}

uint32_t ember_ckpt_reader_row_floats(const ember_ckpt_reader *r)
{
    return r->cr_file.cf_hdr.ch_row_floats;
}

int ember_ckpt_reader_next(ember_ckpt_reader *r, size_t *n, const uint64_t **keys,
                           const uint64_t **scores, const uint64_t **versions,
                           const float **rows, ember_error *err)
{
    *n = 0;
    if (r->cr_failed)
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, r->cr_path,
                         "read again after an error");
    if (r->cr_done)
        return EMBER_OK;
    int footer, rc = ckpt_at_footer(&r->cr_file, r->cr_off, &footer, err);
    if (!rc && footer) {
        /* The file was whole at open; a changed one is found out here at the
         * latest, by its counts or its CRCs. */
        rc = ckpt_footer_check(&r->cr_file, r->cr_off, r->cr_rows, r->cr_chunks, err);
        r->cr_done = !rc;
    } else if (!rc) {
        ckpt_chunk c = {0, NULL, NULL, NULL, NULL};
        rc = ckpt_chunk_read(&r->cr_file, r->cr_buf, &r->cr_off, r->cr_chunks, &c, err);
        if (!rc)
            rc = ckpt_chunk_check_rows(&c, r->cr_file.cf_hdr.ch_row_floats, r->cr_chunks, r->cr_path,
                                  err);
        if (!rc) {
            r->cr_rows += c.n;
            r->cr_chunks++;
            *n = c.n;
            *keys = c.keys;
            *scores = c.scores;
            *versions = c.versions;
            *rows = c.rows;
        }
    }
    r->cr_failed = rc != EMBER_OK;
    return rc;
}

void ember_ckpt_reader_close(ember_ckpt_reader *r)
{
    if (!r)
        return;
    close(r->cr_file.cf_fd);
    free(r->cr_buf);
    free(r->cr_path);
    free(r);
}

struct ember_ckpt_writer {
    char *cw_path;
    ember_durable_file *cw_file;
    ckpt_out cw_out;        /* unbuffered */
    ckpt_header cw_hdr;
    uint64_t cw_chunks;
    ckpt_batch cw_batch;    /* the chunk being filled */
    size_t cw_n;            /* rows in it */
    int cw_failed;
};

int ember_ckpt_writer_open(const char *path, const ember_table_config *config,
                           const char *table_name, uint32_t shard_index, uint32_t shard_count,
                           const ember_ckpt_placement *placement, uint32_t chunk_rows,
                           ember_ckpt_writer **out, ember_error *err)
{
    ckpt_header h;
    if (!path || !*path || !config || !out)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "writer_open needs a path, a config and out");
    *out = NULL;
    int rc = ckpt_header_init(&h, config, table_name, shard_index, shard_count, placement,
                              chunk_rows, path, err);
    if (rc)
        return rc;
    if (chunk_rows > EMBER_CKPT_CHUNK_ROWS_MAX)
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "chunks of %u rows, over %u",
                         chunk_rows, EMBER_CKPT_CHUNK_ROWS_MAX);
    rc = ember_table_config_validate(config, err);
    if (rc)
        return rc;
    ember_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->cw_path = strdup(path))) {
        free(w);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    }
    w->cw_hdr = h;
    rc = ckpt_batch_alloc(&w->cw_batch, h.ch_chunk_rows, h.ch_row_floats, err);
    if (!rc) {
        ember_durable_fail fail;
        int e = ember_durable_create(path, &w->cw_file, &fail);
        if (e)
            rc = ckpt_durable_fail(err, path, e, &fail);
    }
    if (!rc) {
        int e = ckpt_out_begin(&w->cw_out, w->cw_file, 0, CKPT_HDR_LEN);
        if (e)
            rc = ckpt_durable_fail(err, path, e, &w->cw_out.co_fail);
    }
    if (rc) {
        ember_ckpt_writer_abort(w);
        return rc;
    }
    *out = w;
    return EMBER_OK;
}

/* Writes the rows buffered so far as one chunk. */
static int writer_flush_chunk(ember_ckpt_writer *w, ember_error *err)
{
    if (!w->cw_n)
        return EMBER_OK;
    const ckpt_batch *b = &w->cw_batch;
    const ckpt_chunk c = {w->cw_n, b->cb_keys, b->cb_scores, b->cb_versions, b->cb_rows};
    int e = ckpt_out_chunk(&w->cw_out, &c, w->cw_hdr.ch_row_floats);
    if (e)
        return ckpt_io_fail(err, w->cw_out.co_fail.df_path, "write", e);
    w->cw_hdr.ch_meta.rows += w->cw_n;
    w->cw_chunks++;
    w->cw_n = 0;
    return EMBER_OK;
}

int ember_ckpt_writer_append(ember_ckpt_writer *w, const uint64_t *keys, size_t n,
                             const float *rows, const uint64_t *scores,
                             const uint64_t *versions, ember_error *err)
{
    const char *p = w->cw_path;
    uint32_t rf = w->cw_hdr.ch_row_floats;
    if (w->cw_failed)
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p, "append after an error");
    if (n && (!keys || !rows || !scores || !versions))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "append needs every array");
    for (size_t i = 0; i < n; i++)
        if (ember_key_is_reserved(keys[i]))
            return ckpt_fail(err, EMBER_INVALID_ARGUMENT, p, "reserved key %llu",
                             (unsigned long long)keys[i]);
    size_t bad = ckpt_first_nonfinite(rows, n * rf);
    if (bad < n * rf)
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p, "row of key %llu holds NaN or Inf",
                         (unsigned long long)keys[bad / rf]);
    int rc = EMBER_OK;
    while (!rc && n) {
        size_t room = w->cw_hdr.ch_chunk_rows - w->cw_n, k = n < room ? n : room;
        ckpt_batch *b = &w->cw_batch;
        memcpy(b->cb_keys + w->cw_n, keys, k * sizeof *keys);
        memcpy(b->cb_scores + w->cw_n, scores, k * sizeof *scores);
        memcpy(b->cb_versions + w->cw_n, versions, k * sizeof *versions);
        memcpy(b->cb_rows + w->cw_n * rf, rows, k * rf * sizeof *rows);
        w->cw_n += k;
        keys += k;
        scores += k;
        versions += k;
        rows += k * rf;
        n -= k;
        if (w->cw_n == w->cw_hdr.ch_chunk_rows)
            rc = writer_flush_chunk(w, err);
    }
    w->cw_failed = rc != EMBER_OK;
    return rc;
}

void ember_ckpt_writer_set_epoch(ember_ckpt_writer *w, uint32_t epoch)
{
    w->cw_hdr.ch_meta.epoch = epoch;
}

int ember_ckpt_writer_commit(ember_ckpt_writer *w, uint64_t version, ember_ckpt_meta *out_meta,
                             ember_error *err)
{
    if (w->cw_failed) {
        int rc = ckpt_fail(err, EMBER_FAILED_PRECONDITION, w->cw_path, "commit after an error");
        ember_ckpt_writer_abort(w);
        return rc;
    }
    ckpt_header *h = &w->cw_hdr;
    int rc = writer_flush_chunk(w, err);
    if (!rc) {
        h->ch_meta.version = version;
        int e = ckpt_out_end(&w->cw_out, h, w->cw_chunks);
        if (e)
            rc = ckpt_io_fail(err, w->cw_out.co_fail.df_path, "write", e);
    }
    if (rc) {
        ember_ckpt_writer_abort(w);
        return rc;
    }
    ember_durable_fail fail;
    int e = ember_durable_commit(w->cw_file, &fail);
    w->cw_file = NULL; /* committed or removed: nothing to abort */
    if (e)
        rc = ckpt_durable_fail(err, w->cw_path, e, &fail);
    if (!rc && out_meta)
        *out_meta = h->ch_meta;
    ember_ckpt_writer_abort(w);
    return rc;
}

void ember_ckpt_writer_abort(ember_ckpt_writer *w)
{
    if (!w)
        return;
    ember_durable_abort(w->cw_file);
    ckpt_out_free(&w->cw_out);
    free(w->cw_batch.cb_mem);
    free(w->cw_path);
    free(w);
}
