/*
 * test_durability_file.c — what a checkpoint file holds, read through
 * storage/checkpoint.h into a CPU table of its own: an oracle for
 * test_durability.c that does not go through the server under test.
 */
#include "test_durability_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "storage/table.h"

int dur_ckpt_read(const char *path, dur_ckpt *out, char *msg, size_t cap)
{
    ember_error err = {0};
    ember_ckpt_meta m;
    ember_table *t = NULL;
    memset(out, 0, sizeof *out);
    int rc = ember_ckpt_read_meta(path, &m, &err);
    if (!rc)
        rc = ember_table_create(&m.config, ember_table_cpu_backend(), &t, &err);
    if (!rc)
        rc = ember_ckpt_load(t, path, NULL, &m, &err);
    if (rc) {
        snprintf(msg, cap, "%s: %s", ember_status_name(rc), err.message);
        ember_table_destroy(t);
        return rc;
    }
    out->dim = m.config.dim;
    out->shard_index = m.shard_index;
    out->shard_count = m.shard_count;
    out->version = m.version;
    out->created_ns = m.created_ns;
    out->keys = malloc((m.rows ? m.rows : 1) * sizeof *out->keys);
    out->rows = malloc((m.rows ? m.rows : 1) * m.config.dim * sizeof *out->rows);
    size_t chunk = 4096;
    uint64_t *k = malloc(chunk * 8), *sc = malloc(chunk * 8), *ver = malloc(chunk * 8);
    float *r = malloc(chunk * m.config.dim * sizeof *r);
    const ember_export_filter all = {0, 0, 0};
    uint64_t cursor = 0, end = ember_table_export_end(t);
    while (!rc && cursor < end) {
        size_t n = 0;
        rc = ember_table_export(t, &all, &cursor, chunk, k, r, sc, ver, &n, &err);
        if (!rc && out->n + n > m.rows) {
            snprintf(msg, cap, "more rows exported than the file's %llu",
                     (unsigned long long)m.rows);
            rc = EMBER_INTERNAL;
        }
        if (!rc) {
            memcpy(out->keys + out->n, k, n * 8);
            memcpy(out->rows + out->n * m.config.dim, r, n * m.config.dim * sizeof *r);
            out->n += n;
        }
    }
    if (rc && !*msg)
        snprintf(msg, cap, "%s: export: %s", ember_status_name(rc), err.message);
    free(k);
    free(sc);
    free(ver);
    free(r);
    ember_table_destroy(t);
    return rc;
}

void dur_ckpt_free(dur_ckpt *c)
{
    free(c->keys);
    free(c->rows);
    memset(c, 0, sizeof *c);
}

int dur_ckpt_placement(const char *path, char *backend, size_t cap, uint64_t *hbm_bytes,
                       char *msg, size_t msg_cap)
{
    ember_error err = {0};
    ember_ckpt_meta m;
    int rc = ember_ckpt_read_meta(path, &m, &err);
    if (rc) {
        snprintf(msg, msg_cap, "%s: %s", ember_status_name(rc), err.message);
        return rc;
    }
    snprintf(backend, cap, "%s", m.placement.backend);
    *hbm_bytes = m.placement.hbm_bytes;
    return 0;
}

int dur_ckpt_set_placement(const char *path, const char *backend, uint64_t hbm_bytes,
                           char *msg, size_t msg_cap)
{
    ember_error err = {0};
    ember_ckpt_meta m;
    ember_ckpt_reader *r = NULL;
    ember_ckpt_writer *w = NULL;
    ember_ckpt_placement p = {"", hbm_bytes};
    snprintf(p.backend, sizeof p.backend, "%s", backend);
    int rc = ember_ckpt_reader_open(path, &r, &m, &err);
    if (!rc)
        rc = ember_ckpt_writer_open(path, &m.config, m.table_name, m.shard_index,
                                    m.shard_count, &p, 0, &w, &err);
    for (size_t n = 1; !rc && n;) {
        const uint64_t *keys, *scores, *versions;
        const float *rows;
        rc = ember_ckpt_reader_next(r, &n, &keys, &scores, &versions, &rows, &err);
        if (!rc && n)
            rc = ember_ckpt_writer_append(w, keys, n, rows, scores, versions, &err);
    }
    ember_ckpt_reader_close(r);
    if (w) {
        if (rc)
            ember_ckpt_writer_abort(w);
        else
            rc = ember_ckpt_writer_commit(w, m.version, NULL, &err);
    }
    if (rc)
        snprintf(msg, msg_cap, "%s: %s", ember_status_name(rc), err.message);
    return rc;
}
