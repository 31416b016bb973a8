/*
 * xfile.c — the export file that `emberctl export` writes and `emberctl import`
 * reads (the format is in ctl.h).
 *
 * The rows are framed as in a checkpoint, and by its codec
 * (storage/ckpt_format.h): the same little-endian fields, chunks and footer
 * (with the export file's own footer magic); the header is the export file's.
 * The writer writes chunks into a temp file beside the file (storage/durable.h,
 * as checkpoints are written) and puts the header last (its counts are known
 * only at the end); commit fsyncs, renames and fsyncs the directory: an
 * interrupted export never leaves a half file under the name asked for. The reader checks the whole file
 * (every CRC and count, the footer) when it opens it, so import refuses a
 * damaged file before it sends a single row, then hands the chunks out in a
 * second pass.
 */
#define _GNU_SOURCE

#include "ctl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage/ckpt_format.h"
#include "storage/crc32c.h"
#include "storage/durable.h"

#define XF_FIXED 144u            /* header bytes before the shard entries */
#define XF_ENTRY 40u             /* bytes per shard entry */
#define XF_MAX_SHARDS 65536u
#define XF_MAX_CONFIG 65536u
#define XF_MAX_ROW_FLOATS (4096u * 3u + 1u)
#define XF_MAX_CHUNK_ROWS (1u << 20)
#define XF_MAX_CHUNK_BYTES (UINT64_C(256) << 20)

static const uint8_t xf_magic[8] = {'E', 'M', 'B', 'R', 'E', 'X', 'P', 'T'};
static const uint8_t xf_ftr_magic[8] = {'E', 'M', 'B', 'X', 'E', 'N', 'D', '\0'};

static int xf_fail(ember_error *err, int code, const char *path, const char *what)
{
    return ember_error_set(err, code, "%s: %s", path, what);
}

static int xf_io(ember_error *err, const char *path, const char *call, int errnum)
{
    return ember_error_set(err, EMBER_INTERNAL, "%s: %s: %s", path, call,
                           strerror(errnum));
}

/* ---- header ------------------------------------------------------------------------- */

size_t ctl_xheader_length(const ctl_xheader *h)
{
    return XF_FIXED + (size_t)h->n_shards * XF_ENTRY + h->config_len + 4;
}

void ctl_xheader_free(ctl_xheader *h)
{
    free(h->shards);
    free(h->config);
    h->shards = NULL;
    h->config = NULL;
    h->n_shards = 0;
    h->config_len = 0;
}

static uint8_t *header_encode(const ctl_xheader *h, size_t *len)
{
    size_t n = ctl_xheader_length(h), o = 0, name_len = strlen(h->table);
    uint8_t *b = calloc(1, n);
    if (!b)
        return NULL;
    memcpy(b, xf_magic, sizeof xf_magic);
    o = 8;
    ckpt_put_u32(b, &o, CTL_XFILE_VERSION);
    ckpt_put_u32(b, &o, (uint32_t)n);
    ckpt_put_u32(b, &o, h->dim);
    ckpt_put_u32(b, &o, h->row_floats);
    ckpt_put_u32(b, &o, h->full_rows ? 1u : 0u);
    ckpt_put_u32(b, &o, h->optimizer);
    ckpt_put_u32(b, &o, h->shard_count);
    ckpt_put_u32(b, &o, h->n_shards);
    ckpt_put_u32(b, &o, (uint32_t)name_len);
    memcpy(b + o, h->table, name_len);
    o += 64;
    ckpt_put_u64(b, &o, h->min_score);
    ckpt_put_u64(b, &o, h->created_ns);
    ckpt_put_u64(b, &o, h->rows);
    ckpt_put_u32(b, &o, h->chunk_rows);
    ckpt_put_u32(b, &o, (uint32_t)h->config_len);
    o += 4; /* reserved */
    for (uint32_t i = 0; i < h->n_shards; i++) {
        const ctl_xshard *s = &h->shards[i];
        ckpt_put_u32(b, &o, s->index);
        o += 4; /* reserved */
        ckpt_put_u64(b, &o, s->after_version);
        ckpt_put_u64(b, &o, s->table_version);
        ckpt_put_u64(b, &o, s->rows);
        ckpt_put_u64(b, &o, s->max_version);
    }
    if (h->config_len)
        memcpy(b + o, h->config, h->config_len);
    o += h->config_len;
    ckpt_put_u32(b, &o, ember_crc32c(b, o));
    *len = n;
    return b;
}

/* Reads and checks the header at the start of fd (a file of `size` bytes). */
static int header_read(int fd, uint64_t size, const char *path, ctl_xheader *h, ember_error *err)
{
    uint8_t fixed[XF_FIXED];
    size_t o = 8;
    memset(h, 0, sizeof *h);
    size_t have = size < XF_FIXED ? (size_t)size : XF_FIXED;
    if (pread(fd, fixed, have, 0) != (ssize_t)have)
        return xf_io(err, path, "read", errno ? errno : EIO);
    if (have >= 8 && memcmp(fixed, ckpt_magic, 8) == 0)
        return xf_fail(err, EMBER_INVALID_ARGUMENT, path,
                       "a checkpoint, not an export file (load it with 'emberctl load', or "
                       "'emberctl reshard' it)");
    if (have < 8 || memcmp(fixed, xf_magic, 8))
        return xf_fail(err, EMBER_DATA_LOSS, path, "not an ember export file (bad magic)");
    if (have < XF_FIXED)
        return xf_fail(err, EMBER_DATA_LOSS, path, "truncated in the header");
    uint32_t version = ckpt_get_u32(fixed, &o), len = ckpt_get_u32(fixed, &o);
    if (version != CTL_XFILE_VERSION)
        return ember_error_set(err, EMBER_DATA_LOSS,
                               "%s: export format version %u, this emberctl reads %u", path,
                               version, CTL_XFILE_VERSION);
    h->dim = ckpt_get_u32(fixed, &o);
    h->row_floats = ckpt_get_u32(fixed, &o);
    uint32_t flags = ckpt_get_u32(fixed, &o);
    h->full_rows = (int)(flags & 1u);
    h->optimizer = ckpt_get_u32(fixed, &o);
    h->shard_count = ckpt_get_u32(fixed, &o);
    h->n_shards = ckpt_get_u32(fixed, &o);
    uint32_t name_len = ckpt_get_u32(fixed, &o);
    const uint8_t *name = fixed + o;
    o += 64;
    h->min_score = ckpt_get_u64(fixed, &o);
    h->created_ns = ckpt_get_u64(fixed, &o);
    h->rows = ckpt_get_u64(fixed, &o);
    h->chunk_rows = ckpt_get_u32(fixed, &o);
    h->config_len = ckpt_get_u32(fixed, &o);
    if (h->n_shards > XF_MAX_SHARDS || h->config_len > XF_MAX_CONFIG ||
        len != ctl_xheader_length(h)) {
        h->n_shards = 0;
        h->config_len = 0;
        return xf_fail(err, EMBER_DATA_LOSS, path, "bad header length");
    }
    if (len > size)
        return xf_fail(err, EMBER_DATA_LOSS, path, "truncated in the header");
    uint8_t *b = malloc(len);
    h->shards = calloc(h->n_shards ? h->n_shards : 1, sizeof *h->shards);
    h->config = malloc(h->config_len ? h->config_len : 1);
    if (!b || !h->shards || !h->config) {
        free(b);
        ctl_xheader_free(h);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    int rc = 0;
    if (pread(fd, b, len, 0) != (ssize_t)len) {
        rc = xf_io(err, path, "read", errno ? errno : EIO);
        goto out;
    }
    o = len - 4;
    if (ckpt_get_u32(b, &o) != ember_crc32c(b, len - 4)) {
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "header CRC mismatch");
        goto out;
    }
    o = XF_FIXED;
    for (uint32_t i = 0; i < h->n_shards; i++) {
        ctl_xshard *s = &h->shards[i];
        s->index = ckpt_get_u32(b, &o);
        o += 4;
        s->after_version = ckpt_get_u64(b, &o);
        s->table_version = ckpt_get_u64(b, &o);
        s->rows = ckpt_get_u64(b, &o);
        s->max_version = ckpt_get_u64(b, &o);
    }
    memcpy(h->config, b + o, h->config_len);
    /* Fields a sound writer never produces. */
    if (name_len < 1 || name_len > 64 || memchr(name, 0, name_len))
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "bad table name");
    else if (h->dim < 1 || h->row_floats < h->dim || h->row_floats > XF_MAX_ROW_FLOATS ||
             (!h->full_rows && h->row_floats != h->dim))
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "bad row layout");
    else if (h->shard_count < 1 || h->n_shards > h->shard_count)
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "bad shard count");
    else if (h->chunk_rows > XF_MAX_CHUNK_ROWS ||
             (uint64_t)h->chunk_rows * (24u + 4u * h->row_floats) > XF_MAX_CHUNK_BYTES)
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "bad chunk size");
    for (uint32_t i = 0; !rc && i < h->n_shards; i++)
        if (h->shards[i].index >= h->shard_count)
            rc = xf_fail(err, EMBER_DATA_LOSS, path, "bad shard index");
    if (!rc)
        memcpy(h->table, name, name_len);
    h->table[rc ? 0 : name_len] = '\0';
out:
    free(b);
    if (rc)
        ctl_xheader_free(h);
    return rc;
}

/* Opens `path` (*fd, *size) and reads its header into h; on failure nothing
 * is left open. */
static int header_open(const char *path, int *fd, uint64_t *size, ctl_xheader *h,
                       ember_error *err)
{
    memset(h, 0, sizeof *h);
    int rc = ckpt_open_regular(path, "", fd, size, err);
    if (!rc && (rc = header_read(*fd, *size, path, h, err)))
        close(*fd);
    return rc;
}

int ctl_xheader_read(const char *path, ctl_xheader *h, ember_error *err)
{
    int fd;
    uint64_t size;
    int rc = header_open(path, &fd, &size, h, err);
    if (!rc)
        close(fd);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------- */

struct ctl_xreader {
    ckpt_file file;          /* the checkpoint codec's view: path, fd, size, framing */
    uint64_t off, rows, chunks;
    uint8_t *buf;
    int failed;
};

/* Reads the next chunk (into r->buf, *c pointing into it) or the footer at r->off.
 * c->n = rows (0: the footer, checked against the counts). */
static int read_next(ctl_xreader *r, ckpt_chunk *c, ember_error *err)
{
    int footer, rc = ckpt_at_footer(&r->file, r->off, &footer, err);
    if (rc)
        return rc;
    if (footer) {
        rc = ckpt_footer_check(&r->file, r->off, r->rows, r->chunks, err);
        if (!rc)
            r->off += CKPT_FTR_LEN;
        return rc;
    }
    rc = ckpt_chunk_read(&r->file, r->buf, &r->off, r->chunks, c, err);
    if (rc)
        return rc;
    r->rows += c->n;
    r->chunks++;
    return 0;
}

/* Pass 1 takes each chunk as it is: the codec has checked its frame and CRC. */
static int accept_chunk(const ckpt_chunk *c, void *arg, ember_error *err)
{
    (void)c, (void)arg, (void)err;
    return 0;
}

int ctl_xreader_open(const char *path, ctl_xreader **out, ctl_xheader *h, ember_error *err)
{
    int fd;
    uint64_t size;
    *out = NULL;
    int rc = header_open(path, &fd, &size, h, err);
    if (rc)
        return rc;
    ctl_xreader *r = calloc(1, sizeof *r);
    char *copy = r ? strdup(path) : NULL;
    if (r)
        r->buf = malloc(ckpt_chunk_bytes(h->chunk_rows ? h->chunk_rows : 1, h->row_floats));
    if (!r || !copy || !r->buf) {
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        close(fd);
        free(copy);
        if (r)
            free(r->buf);
        free(r);
        ctl_xheader_free(h);
        return rc;
    }
    /* What the codec's chunk and footer steps read of a file (ckpt_format.h). */
    ckpt_file *f = &r->file;
    f->cf_path = copy;
    f->cf_label = "";
    f->cf_footer_magic = xf_ftr_magic;
    f->cf_fd = fd;
    f->cf_size = size;
    f->cf_hdr.ch_row_floats = h->row_floats;
    f->cf_hdr.ch_chunk_rows = h->chunk_rows;
    f->cf_hdr.ch_len = (uint32_t)ctl_xheader_length(h);
    f->cf_hdr.ch_meta.rows = h->rows;
    r->off = f->cf_hdr.ch_len;
    /* Pass 1: the whole file (every chunk's frame and CRC, the footer's counts
     * against the chunks and the header's), before a single row is handed out. */
    rc = ckpt_scan(f, r->buf, accept_chunk, NULL, err);
    uint64_t per_shard = 0;
    for (uint32_t i = 0; i < h->n_shards; i++)
        per_shard += h->shards[i].rows;
    if (!rc && per_shard != h->rows)
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "the shards' row counts disagree");
    if (rc) {
        ctl_xreader_close(r);
        ctl_xheader_free(h);
        return rc;
    }
    *out = r;
    return 0;
}

int ctl_xreader_next(ctl_xreader *r, ctl_xchunk *c, ember_error *err)
{
    memset(c, 0, sizeof *c);
    if (r->failed)
        return xf_fail(err, EMBER_FAILED_PRECONDITION, r->file.cf_path, "read after an error");
    if (r->off == r->file.cf_size)
        return 0;
    ckpt_chunk k = {0, NULL, NULL, NULL, NULL};
    int rc = read_next(r, &k, err);
    if (rc) {
        r->failed = 1;
        return rc;
    }
    c->n = k.n;
    c->keys = k.keys;
    c->scores = k.scores;
    c->versions = k.versions;
    c->rows = k.rows;
    return 0;
}

uint64_t ctl_xreader_offset(const ctl_xreader *r)
{
    return r->off;
}

void ctl_xreader_close(ctl_xreader *r)
{
    if (!r)
        return;
    if (r->file.cf_path) { /* set with the fd */
        close(r->file.cf_fd);
        free((char *)r->file.cf_path);
    }
    free(r->buf);
    free(r);
}

/* ---- writing ------------------------------------------------------------------------- */

struct ctl_xwriter {
    ember_durable_file *file;
    ckpt_out out;            /* the checkpoint codec's chunk writer, unbuffered */
    size_t header_len;
    uint64_t rows, chunks, bytes;
    uint32_t row_floats, chunk_rows;
};

/* The error for a storage/durable.h failure e. */
static int xf_durable(ember_error *err, int e, const ember_durable_fail *fail)
{
    if (e == ENOMEM)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    return xf_io(err, fail->df_path, fail->df_step, e);
}

int ctl_xwriter_open(const char *path, ctl_xheader *h, ctl_xwriter **out, ember_error *err)
{
    ember_durable_fail fail;
    *out = NULL;
    ctl_xwriter *w = calloc(1, sizeof *w);
    if (!w)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    int e = ember_durable_create(path, &w->file, &fail), rc = 0;
    h->created_ns = ckpt_now_ns();
    w->header_len = ctl_xheader_length(h);
    w->row_floats = h->row_floats;
    if (e)
        rc = xf_durable(err, e, &fail);
    /* a placeholder: the header goes in at commit */
    else if ((e = ckpt_out_begin(&w->out, w->file, 0, w->header_len)))
        rc = xf_durable(err, e, &w->out.co_fail);
    if (rc) {
        ctl_xwriter_abort(w);
        return rc;
    }
    w->bytes = w->header_len;
    *out = w;
    return 0;
}

int ctl_xwriter_chunk(ctl_xwriter *w, size_t n, const uint64_t *keys, const uint64_t *scores,
                      const uint64_t *versions, const float *rows, uint32_t row_floats,
                      ember_error *err)
{
    if (!w->row_floats)
        w->row_floats = row_floats;
    if (row_floats != w->row_floats || !row_floats)
        return ember_error_set(err, EMBER_INTERNAL,
                               "rows of %u floats in a file of rows of %u", row_floats,
                               w->row_floats);
    if (!n)
        return 0;
    const ckpt_chunk c = {n, keys, scores, versions, rows};
    int e = ckpt_out_chunk(&w->out, &c, row_floats);
    if (e)
        return xf_durable(err, e, &w->out.co_fail);
    w->rows += n;
    w->chunks++;
    w->bytes += ckpt_chunk_bytes(n, row_floats);
    if (n > w->chunk_rows)
        w->chunk_rows = (uint32_t)n;
    return 0;
}

uint64_t ctl_xwriter_bytes(const ctl_xwriter *w)
{
    return w->bytes + CKPT_FTR_LEN;
}

int ctl_xwriter_commit(ctl_xwriter *w, ctl_xheader *h, ember_error *err)
{
    ember_durable_fail fail;
    size_t hlen = 0;
    int rc = 0, e = 0;
    h->rows = w->rows;
    h->row_floats = w->row_floats ? w->row_floats : h->dim;
    h->chunk_rows = w->chunk_rows;
    uint8_t *hdr = header_encode(h, &hlen);
    if (!hdr || hlen != w->header_len)
        rc = ember_error_set(err, hdr ? EMBER_INTERNAL : EMBER_RESOURCE_EXHAUSTED,
                             hdr ? "the header changed size" : "out of memory");
    if (!rc && (e = ckpt_out_finish(&w->out, xf_ftr_magic, w->rows, w->chunks, hdr, hlen)))
        rc = xf_durable(err, e, &w->out.co_fail);
    free(hdr);
    if (!rc) {
        e = ember_durable_commit(w->file, &fail);
        w->file = NULL; /* committed or removed */
        if (e)
            rc = xf_durable(err, e, &fail);
    }
    ctl_xwriter_abort(w);
    return rc;
}

void ctl_xwriter_abort(ctl_xwriter *w)
{
    if (!w)
        return;
    ember_durable_abort(w->file);
    free(w);
}
