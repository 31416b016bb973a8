/*
 * xfile.c — the export file that `emberctl export` writes and `emberctl import`
 * reads (the format is in ctl.h).
 *
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
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "storage/crc32c.h"
#include "storage/durable.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "xfile.c writes arrays as they lie in memory: little-endian hosts only"
#endif

#define XF_FIXED 144u            /* header bytes before the shard entries */
#define XF_ENTRY 40u             /* bytes per shard entry */
#define XF_FTR_LEN 28u
#define XF_CHUNK_HEAD 8u
#define XF_CHUNK_MAGIC 0x4B4E4843u /* "CHNK", as in a checkpoint */
#define XF_MAX_SHARDS 65536u
#define XF_MAX_CONFIG 65536u
#define XF_MAX_ROW_FLOATS (4096u * 3u + 1u)
#define XF_MAX_CHUNK_ROWS (1u << 20)
#define XF_MAX_CHUNK_BYTES (UINT64_C(256) << 20)

static const uint8_t xf_magic[8] = {'E', 'M', 'B', 'R', 'E', 'X', 'P', 'T'};
static const uint8_t xf_ftr_magic[8] = {'E', 'M', 'B', 'X', 'E', 'N', 'D', '\0'};
static const uint8_t ckpt_magic[8] = {'E', 'M', 'B', 'R', 'C', 'K', 'P', 'T'};

/* ---- little-endian fields ------------------------------------------------------- */

static void put32(uint8_t *b, size_t *o, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[*o + (size_t)i] = (uint8_t)(v >> (8 * i));
    *o += 4;
}

static void put64(uint8_t *b, size_t *o, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[*o + (size_t)i] = (uint8_t)(v >> (8 * i));
    *o += 8;
}

static uint32_t get32(const uint8_t *b, size_t *o)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)b[*o + (size_t)i] << (8 * i);
    *o += 4;
    return v;
}

static uint64_t get64(const uint8_t *b, size_t *o)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[*o + (size_t)i] << (8 * i);
    *o += 8;
    return v;
}

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
    put32(b, &o, CTL_XFILE_VERSION);
    put32(b, &o, (uint32_t)n);
    put32(b, &o, h->dim);
    put32(b, &o, h->row_floats);
    put32(b, &o, h->full_rows ? 1u : 0u);
    put32(b, &o, h->optimizer);
    put32(b, &o, h->shard_count);
    put32(b, &o, h->n_shards);
    put32(b, &o, (uint32_t)name_len);
    memcpy(b + o, h->table, name_len);
    o += 64;
    put64(b, &o, h->min_score);
    put64(b, &o, h->created_ns);
    put64(b, &o, h->rows);
    put32(b, &o, h->chunk_rows);
    put32(b, &o, (uint32_t)h->config_len);
    o += 4; /* reserved */
    for (uint32_t i = 0; i < h->n_shards; i++) {
        const ctl_xshard *s = &h->shards[i];
        put32(b, &o, s->index);
        o += 4; /* reserved */
        put64(b, &o, s->after_version);
        put64(b, &o, s->table_version);
        put64(b, &o, s->rows);
        put64(b, &o, s->max_version);
    }
    if (h->config_len)
        memcpy(b + o, h->config, h->config_len);
    o += h->config_len;
    put32(b, &o, ember_crc32c(b, o));
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
    uint32_t version = get32(fixed, &o), len = get32(fixed, &o);
    if (version != CTL_XFILE_VERSION)
        return ember_error_set(err, EMBER_DATA_LOSS,
                               "%s: export format version %u, this emberctl reads %u", path,
                               version, CTL_XFILE_VERSION);
    h->dim = get32(fixed, &o);
    h->row_floats = get32(fixed, &o);
    uint32_t flags = get32(fixed, &o);
    h->full_rows = (int)(flags & 1u);
    h->optimizer = get32(fixed, &o);
    h->shard_count = get32(fixed, &o);
    h->n_shards = get32(fixed, &o);
    uint32_t name_len = get32(fixed, &o);
    const uint8_t *name = fixed + o;
    o += 64;
    h->min_score = get64(fixed, &o);
    h->created_ns = get64(fixed, &o);
    h->rows = get64(fixed, &o);
    h->chunk_rows = get32(fixed, &o);
    h->config_len = get32(fixed, &o);
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
    if (get32(b, &o) != ember_crc32c(b, len - 4)) {
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "header CRC mismatch");
        goto out;
    }
    o = XF_FIXED;
    for (uint32_t i = 0; i < h->n_shards; i++) {
        ctl_xshard *s = &h->shards[i];
        s->index = get32(b, &o);
        o += 4;
        s->after_version = get64(b, &o);
        s->table_version = get64(b, &o);
        s->rows = get64(b, &o);
        s->max_version = get64(b, &o);
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

static int open_regular(const char *path, int *fd, uint64_t *size, ember_error *err)
{
    struct stat st;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return errno == ENOENT ? xf_fail(err, EMBER_NOT_FOUND, path, "no such file")
                               : xf_io(err, path, "open", errno);
    if (fstat(*fd, &st) || !S_ISREG(st.st_mode)) {
        close(*fd);
        return xf_fail(err, EMBER_INVALID_ARGUMENT, path, "not a regular file");
    }
    *size = (uint64_t)st.st_size;
    return 0;
}

int ctl_xheader_read(const char *path, ctl_xheader *h, ember_error *err)
{
    int fd;
    uint64_t size;
    memset(h, 0, sizeof *h);
    int rc = open_regular(path, &fd, &size, err);
    if (rc)
        return rc;
    rc = header_read(fd, size, path, h, err);
    close(fd);
    return rc;
}

/* ---- reading ------------------------------------------------------------------------- */

struct ctl_xreader {
    char *path;
    FILE *f;
    uint64_t size, off, rows, chunks;
    uint64_t data_off;       /* where the chunks begin */
    uint32_t row_floats, chunk_rows;
    uint8_t *buf;
    int failed;
};

static uint64_t chunk_len(uint64_t n, uint32_t rf)
{
    return XF_CHUNK_HEAD + n * (24u + 4u * (uint64_t)rf) + 4u;
}

/* Reads the next chunk or the footer at r->off. *n = rows (0: the footer, checked
 * against the counts). */
static int read_next(ctl_xreader *r, size_t *n, ember_error *err)
{
    uint8_t head[XF_CHUNK_HEAD];
    size_t o = 0;
    *n = 0;
    if (r->size - r->off < 8)
        return xf_fail(err, EMBER_DATA_LOSS, r->path, "truncated (no footer)");
    if (fread(head, 1, 8, r->f) != 8)
        return xf_fail(err, EMBER_DATA_LOSS, r->path, "read failed or file shrank");
    if (memcmp(head, xf_ftr_magic, 8) == 0) {
        uint8_t f[XF_FTR_LEN];
        memcpy(f, head, 8);
        if (r->size - r->off != XF_FTR_LEN)
            return xf_fail(err, EMBER_DATA_LOSS, r->path,
                           r->size - r->off < XF_FTR_LEN ? "truncated in the footer"
                                                         : "garbage after the footer");
        if (fread(f + 8, 1, XF_FTR_LEN - 8, r->f) != XF_FTR_LEN - 8)
            return xf_fail(err, EMBER_DATA_LOSS, r->path, "read failed or file shrank");
        o = 8;
        uint64_t rows = get64(f, &o), chunks = get64(f, &o);
        if (get32(f, &o) != ember_crc32c(f, XF_FTR_LEN - 4))
            return xf_fail(err, EMBER_DATA_LOSS, r->path, "footer CRC mismatch");
        if (rows != r->rows || chunks != r->chunks)
            return xf_fail(err, EMBER_DATA_LOSS, r->path,
                           "the footer's counts disagree with the chunks");
        r->off += XF_FTR_LEN;
        return 0;
    }
    uint32_t magic = get32(head, &o), k = get32(head, &o);
    if (magic != XF_CHUNK_MAGIC)
        return ember_error_set(err, EMBER_DATA_LOSS,
                               "%s: bad chunk magic at offset %llu", r->path,
                               (unsigned long long)r->off);
    if (k < 1 || k > r->chunk_rows)
        return ember_error_set(err, EMBER_DATA_LOSS,
                               "%s: chunk %llu claims %u rows (1..%u allowed)", r->path,
                               (unsigned long long)r->chunks, k, r->chunk_rows);
    uint64_t len = chunk_len(k, r->row_floats);
    if (len > r->size - r->off)
        return ember_error_set(err, EMBER_DATA_LOSS,
                               "%s: truncated in chunk %llu at offset %llu", r->path,
                               (unsigned long long)r->chunks, (unsigned long long)r->off);
    memcpy(r->buf, head, 8);
    if (fread(r->buf + 8, 1, (size_t)len - 8, r->f) != (size_t)len - 8)
        return xf_fail(err, EMBER_DATA_LOSS, r->path, "read failed or file shrank");
    o = (size_t)len - 4;
    if (get32(r->buf, &o) != ember_crc32c(r->buf, (size_t)len - 4))
        return ember_error_set(err, EMBER_DATA_LOSS,
                               "%s: chunk %llu at offset %llu: CRC mismatch", r->path,
                               (unsigned long long)r->chunks, (unsigned long long)r->off);
    r->off += len;
    r->rows += k;
    r->chunks++;
    *n = k;
    return 0;
}

static int rewind_to_data(ctl_xreader *r, ember_error *err)
{
    if (fseeko(r->f, (off_t)r->data_off, SEEK_SET))
        return xf_io(err, r->path, "seek", errno);
    r->off = r->data_off;
    r->rows = r->chunks = 0;
    return 0;
}

int ctl_xreader_open(const char *path, ctl_xreader **out, ctl_xheader *h, ember_error *err)
{
    int fd;
    uint64_t size;
    *out = NULL;
    memset(h, 0, sizeof *h);
    int rc = open_regular(path, &fd, &size, err);
    if (rc)
        return rc;
    rc = header_read(fd, size, path, h, err);
    ctl_xreader *r = rc ? NULL : calloc(1, sizeof *r);
    if (!rc && r) {
        r->path = strdup(path);
        r->f = fdopen(fd, "rb");
        r->buf = malloc(chunk_len(h->chunk_rows ? h->chunk_rows : 1, h->row_floats));
        if (r->f)
            fd = -1;
    }
    if (!rc && (!r || !r->path || !r->f || !r->buf))
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    if (fd >= 0)
        close(fd);
    if (rc) {
        ctl_xreader_close(r);
        ctl_xheader_free(h);
        return rc;
    }
    r->size = size;
    r->data_off = ctl_xheader_length(h);
    r->row_floats = h->row_floats;
    r->chunk_rows = h->chunk_rows;
    /* Pass 1: the whole file, before a single row is handed out. */
    size_t n;
    rc = rewind_to_data(r, err);
    do
        rc = rc ? rc : read_next(r, &n, err);
    while (!rc && n);
    if (!rc && r->rows != h->rows)
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "the header's row count disagrees");
    uint64_t per_shard = 0;
    for (uint32_t i = 0; i < h->n_shards; i++)
        per_shard += h->shards[i].rows;
    if (!rc && per_shard != h->rows)
        rc = xf_fail(err, EMBER_DATA_LOSS, path, "the shards' row counts disagree");
    if (!rc)
        rc = rewind_to_data(r, err);
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
        return xf_fail(err, EMBER_FAILED_PRECONDITION, r->path, "read after an error");
    if (r->off == r->size)
        return 0;
    size_t n;
    int rc = read_next(r, &n, err);
    if (rc) {
        r->failed = 1;
        return rc;
    }
    c->n = n;
    c->keys = (const uint64_t *)(r->buf + XF_CHUNK_HEAD);
    c->scores = c->keys + n;
    c->versions = c->scores + n;
    c->rows = (const float *)(c->versions + n);
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
    if (r->f)
        fclose(r->f);
    free(r->path);
    free(r->buf);
    free(r);
}

/* ---- writing ------------------------------------------------------------------------- */

struct ctl_xwriter {
    ember_durable_file *file;
    size_t header_len;
    uint64_t rows, chunks, bytes;
    uint32_t row_floats, chunk_rows;
};

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

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
    h->created_ns = now_ns();
    w->header_len = ctl_xheader_length(h);
    w->row_floats = h->row_floats;
    /* a placeholder: the header goes in at commit */
    uint8_t *zero = e ? NULL : calloc(1, w->header_len);
    if (e)
        rc = xf_durable(err, e, &fail);
    else if (!zero)
        rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    else if ((e = ember_durable_write(w->file, zero, w->header_len, &fail)))
        rc = xf_durable(err, e, &fail);
    free(zero);
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
    uint8_t head[XF_CHUNK_HEAD], tail[4];
    size_t o = 0;
    put32(head, &o, XF_CHUNK_MAGIC);
    put32(head, &o, (uint32_t)n);
    const void *part[] = {head, keys, scores, versions, rows};
    const size_t len[] = {sizeof head, 8 * n, 8 * n, 8 * n, 4 * n * row_floats};
    ember_durable_fail fail;
    uint32_t crc = 0;
    int e = 0;
    for (int i = 0; !e && i < 5; i++) {
        crc = ember_crc32c_extend(crc, part[i], len[i]);
        e = ember_durable_write(w->file, part[i], len[i], &fail);
    }
    o = 0;
    put32(tail, &o, crc);
    if (!e)
        e = ember_durable_write(w->file, tail, 4, &fail);
    if (e)
        return xf_durable(err, e, &fail);
    w->rows += n;
    w->chunks++;
    w->bytes += chunk_len(n, row_floats);
    if (n > w->chunk_rows)
        w->chunk_rows = (uint32_t)n;
    return 0;
}

uint64_t ctl_xwriter_bytes(const ctl_xwriter *w)
{
    return w->bytes + XF_FTR_LEN;
}

int ctl_xwriter_commit(ctl_xwriter *w, ctl_xheader *h, ember_error *err)
{
    ember_durable_fail fail;
    uint8_t f[XF_FTR_LEN];
    size_t o = 8, hlen = 0;
    int rc = 0, e = 0;
    h->rows = w->rows;
    h->row_floats = w->row_floats ? w->row_floats : h->dim;
    h->chunk_rows = w->chunk_rows;
    memcpy(f, xf_ftr_magic, 8);
    put64(f, &o, w->rows);
    put64(f, &o, w->chunks);
    put32(f, &o, ember_crc32c(f, XF_FTR_LEN - 4));
    uint8_t *hdr = header_encode(h, &hlen);
    if (!hdr || hlen != w->header_len)
        rc = ember_error_set(err, hdr ? EMBER_INTERNAL : EMBER_RESOURCE_EXHAUSTED,
                             hdr ? "the header changed size" : "out of memory");
    if (!rc)
        e = ember_durable_write(w->file, f, sizeof f, &fail);
    if (!rc && !e)
        e = ember_durable_pwrite(w->file, hdr, hlen, 0, &fail);
    free(hdr);
    if (!rc && !e) {
        e = ember_durable_commit(w->file, &fail);
        w->file = NULL; /* committed or removed */
    }
    if (e)
        rc = xf_durable(err, e, &fail);
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
