/*
 * checkpoint.c — saving a table to a checkpoint file and loading it back (the
 * format is in checkpoint.h).
 *
 * Saving streams export batches into chunks through one write buffer; the
 * header goes last (pwrite at offset 0) because the row count is known only
 * when the scan ends. Loading reads the file twice through one open fd: a first
 * pass checks everything, a second clears the table and imports chunk by chunk,
 * so a bad file never touches the table. Both passes reuse one chunk buffer.
 *
 * The reader and writer at the end move rows between files without a table
 * (emberctl reshard): the reader runs load's checking pass at open, then hands
 * out chunks; the writer fills one chunk at a time and writes it unbuffered.
 */
#define _GNU_SOURCE
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"

/* Arrays (keys, scores, versions, rows) go to and come from the file as they
 * lie in memory, which is the file's byte order only on little-endian hosts. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "checkpoint.c supports little-endian hosts only"
#endif

#define HDR_LEN 244u     /* version 2, written */
#define HDR_CRC_OFF 240u
#define HDR_LEN_V1 220u  /* version 1, still read: no placement */
#define HDR_CRC_OFF_V1 216u
#define FTR_LEN 28u
#define CHUNK_HEAD 8u
#define CHUNK_MAGIC 0x4B4E4843u /* "CHNK" */
#define CHUNK_ROWS_MIN EMBER_BUCKET_SLOTS /* export returns whole buckets */
#define WRITE_BUF_BYTES (1u << 20)
#define TMP_TRIES 1000

_Static_assert(EMBER_BUCKET_SLOTS <= EMBER_CKPT_CHUNK_ROWS_MAX,
               "a chunk must hold the largest export batch: one whole bucket");

static const uint8_t hdr_magic[8] = {'E', 'M', 'B', 'R', 'C', 'K', 'P', 'T'};
static const uint8_t ftr_magic[8] = {'E', 'M', 'B', 'R', 'E', 'N', 'D', '\0'};

/* The header as this file handles it: what the caller sees plus layout. */
typedef struct ckpt_header {
    ember_ckpt_meta ch_meta;
    uint32_t ch_row_floats;
    uint32_t ch_chunk_rows;
    uint32_t ch_len;        /* this file's header length: where its chunks begin */
} ckpt_header;

/* An open checkpoint being read. */
typedef struct ckpt_file {
    const char *cf_path;
    int cf_fd;
    uint64_t cf_size;
    ckpt_header cf_hdr;
} ckpt_file;

/* ---- errors ---------------------------------------------------------------- */

__attribute__((format(printf, 4, 5)))
static int ckpt_fail(ember_error *err, int code, const char *path, const char *fmt, ...)
{
    char what[EMBER_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ember_error_set(err, code, "checkpoint %s: %s", path, what);
}

static int io_fail(ember_error *err, const char *path, const char *call, int errnum)
{
    return ckpt_fail(err, EMBER_INTERNAL, path, "%s: %s", call, strerror(errnum));
}

/* ---- byte order: explicit little-endian fields ----------------------------- */

static void put_u32(uint8_t *b, size_t *off, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[*off + (size_t)i] = (uint8_t)(v >> (8 * i));
    *off += 4;
}

static void put_u64(uint8_t *b, size_t *off, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[*off + (size_t)i] = (uint8_t)(v >> (8 * i));
    *off += 8;
}

static void put_f32(uint8_t *b, size_t *off, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u32(b, off, bits);
}

static uint32_t get_u32(const uint8_t *b, size_t *off)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)b[*off + (size_t)i] << (8 * i);
    *off += 4;
    return v;
}

static uint64_t get_u64(const uint8_t *b, size_t *off)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[*off + (size_t)i] << (8 * i);
    *off += 8;
    return v;
}

static float get_f32(const uint8_t *b, size_t *off)
{
    uint32_t bits = get_u32(b, off);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ---- header ---------------------------------------------------------------- */

static void config_encode(const ember_table_config *c, uint8_t *b, size_t *off)
{
    const ember_optim_config *o = &c->optim;
    put_u32(b, off, c->dim);
    put_u64(b, off, c->capacity);
    put_u32(b, off, (uint32_t)c->score_policy);
    put_u64(b, off, c->seed);
    put_u32(b, off, (uint32_t)o->kind);
    const float of[10] = {o->lr, o->eps, o->initial_accumulator, o->beta1, o->beta2,
                          o->weight_decay, o->l1, o->l2, o->lr_power, o->beta};
    for (int i = 0; i < 10; i++)
        put_f32(b, off, of[i]);
    put_u32(b, off, (uint32_t)c->init.kind);
    put_f32(b, off, c->init.a);
    put_f32(b, off, c->init.b);
    put_u32(b, off, c->admission.min_count);
    put_u32(b, off, c->admission.sketch_width);
    put_u32(b, off, (uint32_t)c->nonfinite);
}

static void config_decode(const uint8_t *b, size_t *off, ember_table_config *c)
{
    ember_optim_config *o = &c->optim;
    memset(c, 0, sizeof *c);
    c->dim = get_u32(b, off);
    c->capacity = get_u64(b, off);
    c->score_policy = (int32_t)get_u32(b, off);
    c->seed = get_u64(b, off);
    o->kind = (int32_t)get_u32(b, off);
    float *of[10] = {&o->lr, &o->eps, &o->initial_accumulator, &o->beta1, &o->beta2,
                     &o->weight_decay, &o->l1, &o->l2, &o->lr_power, &o->beta};
    for (int i = 0; i < 10; i++)
        *of[i] = get_f32(b, off);
    c->init.kind = (int32_t)get_u32(b, off);
    c->init.a = get_f32(b, off);
    c->init.b = get_f32(b, off);
    c->admission.min_count = get_u32(b, off);
    c->admission.sketch_width = get_u32(b, off);
    c->nonfinite = (int32_t)get_u32(b, off);
}

static void hdr_encode(const ckpt_header *h, uint8_t b[HDR_LEN])
{
    const ember_ckpt_meta *m = &h->ch_meta;
    size_t off = 0, name_len = strlen(m->table_name);
    memset(b, 0, HDR_LEN);
    memcpy(b, hdr_magic, sizeof hdr_magic);
    off += sizeof hdr_magic;
    put_u32(b, &off, EMBER_CKPT_FORMAT_VERSION);
    put_u32(b, &off, HDR_LEN);
    config_encode(&m->config, b, &off);
    put_u32(b, &off, (uint32_t)name_len);
    memcpy(b + off, m->table_name, name_len);
    off += EMBER_CKPT_NAME_MAX;
    put_u32(b, &off, m->shard_index);
    put_u32(b, &off, m->shard_count);
    put_u32(b, &off, h->ch_row_floats);
    put_u32(b, &off, h->ch_chunk_rows);
    put_u64(b, &off, m->version);
    put_u64(b, &off, m->created_ns);
    put_u64(b, &off, m->rows);
    put_u64(b, &off, m->placement.hbm_bytes);
    memcpy(b + off, m->placement.backend, strlen(m->placement.backend));
    off += EMBER_CKPT_BACKEND_MAX + 1;
    put_u32(b, &off, ember_crc32c(b, HDR_CRC_OFF));
}

/* A placement backend: printable ASCII without spaces, NUL-padded. */
static int backend_valid(const uint8_t *b, size_t cap)
{
    size_t n = 0;
    while (n < cap && b[n])
        n++;
    if (n == cap)
        return 0; /* no room for the NUL */
    for (size_t i = 0; i < n; i++)
        if (b[i] <= ' ' || b[i] > '~')
            return 0;
    for (size_t i = n; i < cap; i++)
        if (b[i])
            return 0;
    return 1;
}

/* Fields a sound writer never produces: bad name, shard or row layout. */
static int hdr_check_fields(const ckpt_header *h, const uint8_t *name, uint32_t name_len,
                            const char *path, ember_error *err)
{
    const ember_ckpt_meta *m = &h->ch_meta;
    if (name_len > EMBER_CKPT_NAME_MAX || memchr(name, 0, name_len))
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "bad table name (length %u)", name_len);
    for (uint32_t i = name_len; i < EMBER_CKPT_NAME_MAX; i++)
        if (name[i])
            return ckpt_fail(err, EMBER_DATA_LOSS, path, "table name padding is not zero");
    if (m->shard_count == 0 || m->shard_index >= m->shard_count)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "bad shard %u of %u", m->shard_index,
                         m->shard_count);
    if (m->config.dim < 1 || m->config.dim > EMBER_DIM_MAX ||
        h->ch_row_floats != ember_table_config_row_floats(&m->config))
        return ckpt_fail(err, EMBER_DATA_LOSS, path,
                         "row layout (dim %u, optimizer %d, %u floats per row) is inconsistent",
                         m->config.dim, m->config.optim.kind, h->ch_row_floats);
    if (h->ch_chunk_rows < 1 || h->ch_chunk_rows > EMBER_CKPT_CHUNK_ROWS_MAX)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "bad chunk size of %u rows",
                         h->ch_chunk_rows);
    return EMBER_OK;
}

/* Decodes b[have] (have ≤ HDR_LEN bytes read from the start of a file of
 * `size` bytes), saying first whether it is a checkpoint at all, then whether
 * it is whole, then whether it is intact. Versions 1 and 2. */
static int hdr_decode(const uint8_t *b, size_t have, uint64_t size, ckpt_header *h,
                      const char *path, ember_error *err)
{
    size_t off = 8;
    if (have < 8 || memcmp(b, hdr_magic, sizeof hdr_magic))
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "not an ember checkpoint (bad magic)");
    if (have < 16)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "truncated in the header (%llu bytes)",
                         (unsigned long long)size);
    uint32_t version = get_u32(b, &off), len = get_u32(b, &off);
    if (version != 1 && version != EMBER_CKPT_FORMAT_VERSION)
        return ckpt_fail(err, EMBER_DATA_LOSS, path,
                         "format version %u, this build reads 1 to %u", version,
                         EMBER_CKPT_FORMAT_VERSION);
    uint32_t want = version == 1 ? HDR_LEN_V1 : HDR_LEN;
    uint32_t crc_off = version == 1 ? HDR_CRC_OFF_V1 : HDR_CRC_OFF;
    if (len != want)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "header length %u, expected %u", len,
                         want);
    if (have < want)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "truncated in the header (%llu bytes)",
                         (unsigned long long)size);
    off = crc_off;
    if (get_u32(b, &off) != ember_crc32c(b, crc_off))
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "header CRC mismatch");
    off = 16;
    ember_ckpt_meta *m = &h->ch_meta;
    memset(h, 0, sizeof *h);
    h->ch_len = want;
    config_decode(b, &off, &m->config);
    uint32_t name_len = get_u32(b, &off);
    const uint8_t *name = b + off;
    off += EMBER_CKPT_NAME_MAX;
    m->shard_index = get_u32(b, &off);
    m->shard_count = get_u32(b, &off);
    h->ch_row_floats = get_u32(b, &off);
    h->ch_chunk_rows = get_u32(b, &off);
    m->version = get_u64(b, &off);
    m->created_ns = get_u64(b, &off);
    m->rows = get_u64(b, &off);
    if (version >= 2) {
        m->placement.hbm_bytes = get_u64(b, &off);
        if (!backend_valid(b + off, EMBER_CKPT_BACKEND_MAX + 1))
            return ckpt_fail(err, EMBER_DATA_LOSS, path, "bad placement backend");
        memcpy(m->placement.backend, b + off, EMBER_CKPT_BACKEND_MAX + 1);
    }
    int rc = hdr_check_fields(h, name, name_len, path, err);
    if (!rc)
        memcpy(m->table_name, name, name_len);
    return rc;
}

/* ---- reading --------------------------------------------------------------- */

/* Reads len bytes at off: 0, an errno, or -1 when the file ends first. */
static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return -1;
        p += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return 0;
}

static int read_fail(ember_error *err, const char *path, int rc)
{
    if (rc < 0)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "file shrank while being read");
    return io_fail(err, path, "read", rc);
}

static int ckpt_open(const char *path, ckpt_file *f, ember_error *err)
{
    struct stat st;
    uint8_t b[HDR_LEN];
    f->cf_path = path;
    f->cf_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (f->cf_fd < 0)
        return errno == ENOENT ? ckpt_fail(err, EMBER_NOT_FOUND, path, "no such file")
                               : io_fail(err, path, "open", errno);
    /* Both load passes read front to back: let the kernel read ahead. */
    (void)posix_fadvise(f->cf_fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = EMBER_OK;
    if (fstat(f->cf_fd, &st))
        rc = io_fail(err, path, "fstat", errno);
    else if (!S_ISREG(st.st_mode))
        rc = ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "not a regular file");
    if (!rc) {
        f->cf_size = (uint64_t)st.st_size;
        size_t have = f->cf_size < HDR_LEN ? (size_t)f->cf_size : HDR_LEN;
        int r = pread_full(f->cf_fd, b, have, 0);
        rc = r ? read_fail(err, path, r)
               : hdr_decode(b, have, f->cf_size, &f->cf_hdr, path, err);
    }
    if (rc)
        close(f->cf_fd);
    return rc;
}

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
    if (m->rows > ember_table_capacity(t))
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, p,
                         "holds %llu rows, more than the table's capacity of %llu",
                         (unsigned long long)m->rows,
                         (unsigned long long)ember_table_capacity(t));
    return EMBER_OK;
}

/* One chunk as read into the buffer: pointers into it. */
typedef struct ckpt_chunk {
    size_t n;
    const uint64_t *keys, *scores, *versions;
    const float *rows;
} ckpt_chunk;

static uint64_t chunk_bytes(uint64_t n, uint32_t row_floats)
{
    return CHUNK_HEAD + n * (3u * sizeof(uint64_t) + (uint64_t)row_floats * sizeof(float)) +
           sizeof(uint32_t);
}

/* Index of the first NaN/Inf in v[n], or n. */
static size_t first_nonfinite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        if ((bits & 0x7f800000u) == 0x7f800000u)
            return i;
    }
    return n;
}

/* What import would refuse, found before the table is touched. */
static int chunk_check_rows(const ckpt_chunk *c, uint32_t rf, uint64_t idx,
                            const char *path, ember_error *err)
{
    for (size_t i = 0; i < c->n; i++)
        if (ember_key_is_reserved(c->keys[i]))
            return ckpt_fail(err, EMBER_DATA_LOSS, path, "chunk %llu holds reserved key %llu",
                             (unsigned long long)idx, (unsigned long long)c->keys[i]);
    size_t bad = first_nonfinite(c->rows, c->n * rf);
    if (bad < c->n * rf)
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, path,
                         "row of key %llu holds NaN or Inf", (unsigned long long)c->keys[bad / rf]);
    return EMBER_OK;
}

/* Reads the chunk at *off (chunk number idx) into buf and checks it. */
static int chunk_read(const ckpt_file *f, uint8_t *buf, uint64_t *off, uint64_t idx,
                      ckpt_chunk *c, ember_error *err)
{
    const ckpt_header *h = &f->cf_hdr;
    const char *p = f->cf_path;
    size_t o = 0;
    int r = pread_full(f->cf_fd, buf, CHUNK_HEAD, *off);
    if (r)
        return read_fail(err, p, r);
    uint32_t magic = get_u32(buf, &o), n = get_u32(buf, &o);
    if (magic != CHUNK_MAGIC)
        return ckpt_fail(err, EMBER_DATA_LOSS, p, "bad chunk magic at offset %llu",
                         (unsigned long long)*off);
    if (n < 1 || n > h->ch_chunk_rows)
        return ckpt_fail(err, EMBER_DATA_LOSS, p, "chunk %llu claims %u rows (1..%u allowed)",
                         (unsigned long long)idx, n, h->ch_chunk_rows);
    uint64_t len = chunk_bytes(n, h->ch_row_floats);
    if (len > f->cf_size - *off)
        return ckpt_fail(err, EMBER_DATA_LOSS, p,
                         "truncated: chunk %llu at offset %llu needs %llu bytes, %llu left",
                         (unsigned long long)idx, (unsigned long long)*off,
                         (unsigned long long)len, (unsigned long long)(f->cf_size - *off));
    r = pread_full(f->cf_fd, buf + CHUNK_HEAD, (size_t)len - CHUNK_HEAD, *off + CHUNK_HEAD);
    if (r)
        return read_fail(err, p, r);
    o = (size_t)len - sizeof(uint32_t);
    if (get_u32(buf, &o) != ember_crc32c(buf, (size_t)len - sizeof(uint32_t)))
        return ckpt_fail(err, EMBER_DATA_LOSS, p, "chunk %llu at offset %llu: CRC mismatch",
                         (unsigned long long)idx, (unsigned long long)*off);
    c->n = n;
    c->keys = (const uint64_t *)(buf + CHUNK_HEAD);
    c->scores = c->keys + n;
    c->versions = c->scores + n;
    c->rows = (const float *)(c->versions + n);
    *off += len;
    return EMBER_OK;
}

/* Checks the footer at off against the rows and chunks counted. */
static int footer_check(const ckpt_file *f, uint64_t off, uint64_t rows, uint64_t chunks,
                        ember_error *err)
{
    const char *p = f->cf_path;
    uint8_t b[FTR_LEN];
    size_t o = 8;
    if (f->cf_size - off < FTR_LEN)
        return ckpt_fail(err, EMBER_DATA_LOSS, p, "truncated in the footer at offset %llu",
                         (unsigned long long)off);
    if (f->cf_size - off > FTR_LEN)
        return ckpt_fail(err, EMBER_DATA_LOSS, p, "%llu bytes of garbage after the footer",
                         (unsigned long long)(f->cf_size - off - FTR_LEN));
    int r = pread_full(f->cf_fd, b, FTR_LEN, off);
    if (r)
        return read_fail(err, p, r);
    uint64_t f_rows = get_u64(b, &o), f_chunks = get_u64(b, &o);
    if (get_u32(b, &o) != ember_crc32c(b, FTR_LEN - 4))
        return ckpt_fail(err, EMBER_DATA_LOSS, p, "footer CRC mismatch");
    if (f_rows != rows || f_chunks != chunks || rows != f->cf_hdr.ch_meta.rows)
        return ckpt_fail(err, EMBER_DATA_LOSS, p,
                         "counts disagree: header %llu rows, footer %llu rows in %llu chunks, "
                         "found %llu rows in %llu chunks",
                         (unsigned long long)f->cf_hdr.ch_meta.rows,
                         (unsigned long long)f_rows, (unsigned long long)f_chunks,
                         (unsigned long long)rows, (unsigned long long)chunks);
    return EMBER_OK;
}

/* Is the data at off the footer? (Its magic cannot start a chunk.) */
static int at_footer(const ckpt_file *f, uint64_t off, int *yes, ember_error *err)
{
    uint8_t b[8];
    *yes = 0;
    if (f->cf_size - off < sizeof b)
        return ckpt_fail(err, EMBER_DATA_LOSS, f->cf_path,
                         "truncated at offset %llu (no footer)", (unsigned long long)off);
    int r = pread_full(f->cf_fd, b, sizeof b, off);
    if (r)
        return read_fail(err, f->cf_path, r);
    *yes = !memcmp(b, ftr_magic, sizeof ftr_magic);
    return EMBER_OK;
}

/* One pass over the chunks and footer. With t NULL: checks only. With t: also
 * imports each chunk into t (the caller has cleared it). */
static int ckpt_scan(const ckpt_file *f, uint8_t *buf, ember_table *t, ember_error *err)
{
    uint64_t off = f->cf_hdr.ch_len, rows = 0, chunks = 0;
    for (;;) {
        int footer, rc = at_footer(f, off, &footer, err);
        if (rc || footer)
            return rc ? rc : footer_check(f, off, rows, chunks, err);
        ckpt_chunk c = {0, NULL, NULL, NULL, NULL};
        rc = chunk_read(f, buf, &off, chunks, &c, err);
        if (!rc && !t)
            rc = chunk_check_rows(&c, f->cf_hdr.ch_row_floats, chunks, f->cf_path, err);
        if (!rc && t)
            rc = ember_table_import(t, c.keys, c.n, c.rows, c.scores, c.versions, err);
        if (rc)
            return rc;
        rows += c.n;
        chunks++;
    }
}

/* Clears t and imports the (already checked) file; on failure t is left empty. */
static int ckpt_fill(ember_table *t, const ckpt_file *f, uint8_t *buf, ember_error *err)
{
    int rc = ember_table_clear(t, err);
    if (rc)
        return rc;
    rc = ckpt_scan(f, buf, t, err);
    if (!rc) {
        ember_table_raise_version(t, f->cf_hdr.ch_meta.version);
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
    ckpt_file f;
    if (!t || !path)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "load needs a table and a path");
    int rc = ckpt_open(path, &f, err);
    if (rc)
        return rc;
    uint8_t *buf = NULL;
    rc = check_fits(t, &f, expect, err);
    if (!rc) {
        buf = malloc(chunk_bytes(f.cf_hdr.ch_chunk_rows, f.cf_hdr.ch_row_floats));
        if (!buf)
            rc = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    }
    if (!rc)
        rc = ckpt_scan(&f, buf, NULL, err);
    if (!rc)
        rc = ckpt_fill(t, &f, buf, err);
    free(buf);
    close(f.cf_fd);
    if (!rc && out_meta)
        *out_meta = f.cf_hdr.ch_meta;
    return rc;
}

/* ---- writing --------------------------------------------------------------- */

/* A write buffer with a running CRC of what was put since crc was reset. */
typedef struct ckpt_writer {
    int cw_fd;
    uint8_t *cw_buf;
    size_t cw_len;
    uint32_t cw_crc;
} ckpt_writer;

/* Writes p[len]: 0 or an errno. */
static int write_full(int fd, const void *p, size_t len)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t r = write(fd, b, len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return EIO; /* no progress: do not spin */
        b += r;
        len -= (size_t)r;
    }
    return 0;
}

/* Writes p[len] at off: 0 or an errno. */
static int pwrite_full(int fd, const void *p, size_t len, uint64_t off)
{
    const uint8_t *b = p;
    while (len) {
        ssize_t r = pwrite(fd, b, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return errno;
        if (r == 0)
            return EIO;
        b += r;
        off += (uint64_t)r;
        len -= (size_t)r;
    }
    return 0;
}

static int w_flush(ckpt_writer *w)
{
    int e = write_full(w->cw_fd, w->cw_buf, w->cw_len);
    w->cw_len = 0;
    return e;
}

/* Buffers small pieces; large ones go straight to the file after a flush. */
static int w_put(ckpt_writer *w, const void *p, size_t len)
{
    int e = 0;
    w->cw_crc = ember_crc32c_extend(w->cw_crc, p, len);
    if (w->cw_len + len > WRITE_BUF_BYTES)
        e = w_flush(w);
    if (e)
        return e;
    if (len >= WRITE_BUF_BYTES)
        return write_full(w->cw_fd, p, len);
    memcpy(w->cw_buf + w->cw_len, p, len);
    w->cw_len += len;
    return 0;
}

/* Export batch buffers for one chunk, in one allocation. */
typedef struct ckpt_batch {
    void *cb_mem;
    uint64_t *cb_keys, *cb_scores, *cb_versions;
    float *cb_rows;
} ckpt_batch;

static int batch_alloc(ckpt_batch *b, uint32_t chunk_rows, uint32_t rf, ember_error *err)
{
    size_t n = chunk_rows;
    b->cb_mem = malloc(n * 3 * sizeof(uint64_t) + n * rf * sizeof(float));
    if (!b->cb_mem)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    b->cb_keys = b->cb_mem;
    b->cb_scores = b->cb_keys + n;
    b->cb_versions = b->cb_scores + n;
    b->cb_rows = (float *)(b->cb_versions + n);
    return EMBER_OK;
}

static int write_chunk(ckpt_writer *w, const ckpt_batch *b, size_t n, uint32_t rf)
{
    uint8_t head[CHUNK_HEAD], tail[4];
    size_t o = 0;
    put_u32(head, &o, CHUNK_MAGIC);
    put_u32(head, &o, (uint32_t)n);
    w->cw_crc = 0;
    int e = w_put(w, head, sizeof head);
    if (!e)
        e = w_put(w, b->cb_keys, n * sizeof(uint64_t));
    if (!e)
        e = w_put(w, b->cb_scores, n * sizeof(uint64_t));
    if (!e)
        e = w_put(w, b->cb_versions, n * sizeof(uint64_t));
    if (!e)
        e = w_put(w, b->cb_rows, n * rf * sizeof(float));
    o = 0;
    put_u32(tail, &o, w->cw_crc);
    return e ? e : w_put(w, tail, sizeof tail);
}

static int write_footer(ckpt_writer *w, uint64_t rows, uint64_t chunks)
{
    uint8_t b[FTR_LEN];
    size_t o = 8;
    memcpy(b, ftr_magic, sizeof ftr_magic);
    put_u64(b, &o, rows);
    put_u64(b, &o, chunks);
    put_u32(b, &o, ember_crc32c(b, FTR_LEN - 4));
    return w_put(w, b, sizeof b);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Rows per chunk: as many as fit EMBER_CKPT_CHUNK_BYTES, within the limits. */
static uint32_t chunk_rows_for(uint32_t rf)
{
    uint64_t rows = EMBER_CKPT_CHUNK_BYTES / (3u * sizeof(uint64_t) + rf * sizeof(float));
    if (rows < CHUNK_ROWS_MIN)
        return CHUNK_ROWS_MIN;
    return rows > EMBER_CKPT_CHUNK_ROWS_MAX ? EMBER_CKPT_CHUNK_ROWS_MAX : (uint32_t)rows;
}

/* Exports every row of t into chunks; counts rows into h and chunks into
 * *chunks. */
static int write_rows(ember_table *t, ckpt_writer *w, ckpt_header *h, uint64_t *chunks,
                      const char *path, ember_error *err)
{
    const ember_export_filter all = {0, 0, 1};
    uint32_t rf = h->ch_row_floats;
    uint64_t cursor = 0, end = ember_table_export_end(t);
    ckpt_batch b = {NULL, NULL, NULL, NULL, NULL};
    int rc = batch_alloc(&b, h->ch_chunk_rows, rf, err);
    while (!rc && cursor < end) {
        size_t n;
        rc = ember_table_export(t, &all, &cursor, h->ch_chunk_rows, b.cb_keys, b.cb_rows,
                                b.cb_scores, b.cb_versions, &n, err);
        if (rc || !n)
            continue;
        size_t bad = first_nonfinite(b.cb_rows, n * rf);
        if (bad < n * rf) {
            rc = ckpt_fail(err, EMBER_FAILED_PRECONDITION, path,
                           "row of key %llu holds NaN or Inf; not saved",
                           (unsigned long long)b.cb_keys[bad / rf]);
            continue;
        }
        int e = write_chunk(w, &b, n, rf);
        if (e) {
            rc = io_fail(err, path, "write", e);
            continue;
        }
        h->ch_meta.rows += n;
        (*chunks)++;
    }
    free(b.cb_mem);
    return rc;
}

/* Writes the whole file to fd: a placeholder header, the chunks, the footer,
 * then the real header (its counts are known only now), and fsyncs it. */
static int write_file(ember_table *t, int fd, ckpt_header *h, const char *path,
                      ember_error *err)
{
    uint8_t hdr[HDR_LEN] = {0};
    uint64_t chunks = 0;
    ckpt_writer w = {fd, malloc(WRITE_BUF_BYTES), 0, 0};
    if (!w.cw_buf)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    int e = w_put(&w, hdr, sizeof hdr);
    int rc = e ? io_fail(err, path, "write", e) : write_rows(t, &w, h, &chunks, path, err);
    if (!rc) {
        ember_table_stats st;
        ember_table_stats_get(t, &st); /* after the scan: ≥ every saved row's version */
        h->ch_meta.version = st.version;
        hdr_encode(h, hdr);
        e = write_footer(&w, h->ch_meta.rows, chunks);
        if (!e)
            e = w_flush(&w);
        if (!e)
            e = pwrite_full(fd, hdr, sizeof hdr, 0);
        rc = e ? io_fail(err, path, "write", e) : EMBER_OK;
    }
    if (!rc && fsync(fd))
        rc = io_fail(err, path, "fsync", errno);
    free(w.cw_buf);
    return rc;
}

/* Creates `<path>.tmp.<pid>.<n>` with the first free n. O_EXCL makes the name
 * ours even beside other savers of the same path, with no shared counter. */
static int tmp_create(const char *path, char tmp[PATH_MAX], int *fd, ember_error *err)
{
    for (int n = 0; n < TMP_TRIES; n++) {
        int len = snprintf(tmp, PATH_MAX, "%s.tmp.%ld.%d", path, (long)getpid(), n);
        if (len < 0 || len >= PATH_MAX)
            return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "path too long");
        *fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (*fd >= 0)
            return EMBER_OK;
        if (errno != EEXIST)
            return io_fail(err, tmp, "open", errno);
    }
    return ckpt_fail(err, EMBER_INTERNAL, path, "no free temp file name after %d tries",
                     TMP_TRIES);
}

/* fsync of path's directory, so that the rename itself is durable. */
static int fsync_dir(const char *path, ember_error *err)
{
    char dir[PATH_MAX] = ".";
    const char *slash = strrchr(path, '/');
    if (slash) {
        size_t len = slash == path ? 1 : (size_t)(slash - path); /* "/name": the root */
        if (len >= sizeof dir)
            return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "path too long");
        memcpy(dir, path, len);
        dir[len] = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return io_fail(err, dir, "open directory", errno);
    int rc = fsync(fd) ? io_fail(err, dir, "fsync directory", errno) : EMBER_OK;
    close(fd);
    return rc;
}

/* Checks save's arguments and fills the header fields known before the scan. */
/* Copies `p` (NULL: none) into h's meta; INVALID_ARGUMENT on a backend that a
 * reader would refuse. */
static int placement_set(ckpt_header *h, const ember_ckpt_placement *p, const char *path,
                         ember_error *err)
{
    memset(&h->ch_meta.placement, 0, sizeof h->ch_meta.placement);
    if (!p)
        return EMBER_OK;
    uint8_t b[EMBER_CKPT_BACKEND_MAX + 1] = {0};
    size_t n = strnlen(p->backend, sizeof b);
    if (n < sizeof b)
        memcpy(b, p->backend, n);
    if (n == sizeof b || !backend_valid(b, sizeof b))
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path,
                         "placement backend is not up to %u printable characters",
                         EMBER_CKPT_BACKEND_MAX);
    memcpy(h->ch_meta.placement.backend, b, sizeof b);
    h->ch_meta.placement.hbm_bytes = p->hbm_bytes;
    return EMBER_OK;
}

static int save_begin(ember_table *t, const char *path, const char *table_name,
                      uint32_t shard_index, uint32_t shard_count,
                      const ember_ckpt_placement *placement, ckpt_header *h, ember_error *err)
{
    if (!t || !path || !*path)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "save needs a table and a path");
    if (!table_name)
        table_name = "";
    if (strnlen(table_name, EMBER_CKPT_NAME_MAX + 1) > EMBER_CKPT_NAME_MAX)
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path,
                         "table name longer than %u bytes", EMBER_CKPT_NAME_MAX);
    if (shard_count == 0 || shard_index >= shard_count)
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "bad shard %u of %u",
                         shard_index, shard_count);
    memset(h, 0, sizeof *h);
    strcpy(h->ch_meta.table_name, table_name);
    h->ch_meta.shard_index = shard_index;
    h->ch_meta.shard_count = shard_count;
    h->ch_meta.created_ns = now_ns();
    h->ch_meta.config = *ember_table_config_of(t);
    h->ch_meta.config.hbm_bytes = 0; /* not in the file: placement says what was asked */
    h->ch_row_floats = ember_table_row_floats(t);
    h->ch_chunk_rows = chunk_rows_for(h->ch_row_floats);
    h->ch_len = HDR_LEN;
    return placement_set(h, placement, path, err);
}

int ember_ckpt_save(ember_table *t, const char *path, const char *table_name,
                    uint32_t shard_index, uint32_t shard_count,
                    const ember_ckpt_placement *placement, ember_ckpt_meta *out_meta,
                    ember_error *err)
{
    ckpt_header h;
    char tmp[PATH_MAX];
    int fd = -1;
    int rc = save_begin(t, path, table_name, shard_index, shard_count, placement, &h, err);
    if (!rc)
        rc = tmp_create(path, tmp, &fd, err);
    if (rc)
        return rc;
    rc = write_file(t, fd, &h, path, err);
    if (close(fd) && !rc)
        rc = io_fail(err, tmp, "close", errno);
    if (!rc && rename(tmp, path))
        rc = io_fail(err, path, "rename", errno);
    if (rc) {
        unlink(tmp);
        return rc;
    }
    rc = fsync_dir(path, err);
    if (!rc && out_meta)
        *out_meta = h.ch_meta;
    return rc;
}

/* ---- rows without a table (ember_ckpt_reader / ember_ckpt_writer) ---------- */

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
    r->cr_buf = malloc(chunk_bytes(h->ch_chunk_rows, h->ch_row_floats));
    rc = r->cr_buf ? ckpt_scan(&r->cr_file, r->cr_buf, NULL, err)
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
    int footer, rc = at_footer(&r->cr_file, r->cr_off, &footer, err);
    if (!rc && footer) {
        /* The file was whole at open; a changed one is found out here at the
         * latest, by its counts or its CRCs. */
        rc = footer_check(&r->cr_file, r->cr_off, r->cr_rows, r->cr_chunks, err);
        r->cr_done = !rc;
    } else if (!rc) {
        ckpt_chunk c = {0, NULL, NULL, NULL, NULL};
        rc = chunk_read(&r->cr_file, r->cr_buf, &r->cr_off, r->cr_chunks, &c, err);
        if (!rc)
            rc = chunk_check_rows(&c, r->cr_file.cf_hdr.ch_row_floats, r->cr_chunks, r->cr_path,
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
    char cw_tmp[PATH_MAX];
    int cw_fd;
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
    if (!path || !*path || !config || !out)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "writer_open needs a path, a config and out");
    *out = NULL;
    if (!table_name)
        table_name = "";
    if (strnlen(table_name, EMBER_CKPT_NAME_MAX + 1) > EMBER_CKPT_NAME_MAX)
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "table name longer than %u bytes",
                         EMBER_CKPT_NAME_MAX);
    if (shard_count == 0 || shard_index >= shard_count)
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "bad shard %u of %u", shard_index,
                         shard_count);
    if (chunk_rows > EMBER_CKPT_CHUNK_ROWS_MAX)
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "chunks of %u rows, over %u",
                         chunk_rows, EMBER_CKPT_CHUNK_ROWS_MAX);
    int rc = ember_table_config_validate(config, err);
    if (rc)
        return rc;
    ember_ckpt_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->cw_path = strdup(path))) {
        free(w);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    }
    ckpt_header *h = &w->cw_hdr;
    strcpy(h->ch_meta.table_name, table_name);
    h->ch_meta.shard_index = shard_index;
    h->ch_meta.shard_count = shard_count;
    h->ch_meta.created_ns = now_ns();
    h->ch_meta.config = *config;
    h->ch_meta.config.hbm_bytes = 0;
    h->ch_row_floats = ember_table_config_row_floats(config);
    h->ch_chunk_rows = chunk_rows ? chunk_rows : chunk_rows_for(h->ch_row_floats);
    h->ch_len = HDR_LEN;
    w->cw_fd = -1;
    rc = placement_set(h, placement, path, err);
    if (!rc)
        rc = batch_alloc(&w->cw_batch, h->ch_chunk_rows, h->ch_row_floats, err);
    if (!rc && (rc = tmp_create(path, w->cw_tmp, &w->cw_fd, err)))
        w->cw_tmp[0] = '\0'; /* the name tried is not ours to remove */
    if (!rc) {
        uint8_t hdr[HDR_LEN] = {0}; /* the real one goes here at commit */
        int e = write_full(w->cw_fd, hdr, sizeof hdr);
        if (e)
            rc = io_fail(err, w->cw_tmp, "write", e);
    }
    if (rc) {
        ember_ckpt_writer_abort(w);
        return rc;
    }
    *out = w;
    return EMBER_OK;
}

/* Writes the rows buffered so far as one chunk: straight from the column
 * arrays, with no write buffer, so that a reshard to many shards holds only one
 * chunk per writer. */
static int writer_flush_chunk(ember_ckpt_writer *w, ember_error *err)
{
    size_t n = w->cw_n, o = 0;
    if (!n)
        return EMBER_OK;
    const ckpt_batch *b = &w->cw_batch;
    uint8_t head[CHUNK_HEAD], tail[4];
    put_u32(head, &o, CHUNK_MAGIC);
    put_u32(head, &o, (uint32_t)n);
    const void *part[] = {head, b->cb_keys, b->cb_scores, b->cb_versions, b->cb_rows};
    const size_t len[] = {sizeof head, n * sizeof(uint64_t), n * sizeof(uint64_t),
                          n * sizeof(uint64_t), n * w->cw_hdr.ch_row_floats * sizeof(float)};
    uint32_t crc = 0;
    int e = 0;
    for (int i = 0; !e && i < 5; i++) {
        crc = ember_crc32c_extend(crc, part[i], len[i]);
        e = write_full(w->cw_fd, part[i], len[i]);
    }
    o = 0;
    put_u32(tail, &o, crc);
    if (!e)
        e = write_full(w->cw_fd, tail, sizeof tail);
    if (e)
        return io_fail(err, w->cw_tmp, "write", e);
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
    size_t bad = first_nonfinite(rows, n * rf);
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

int ember_ckpt_writer_commit(ember_ckpt_writer *w, uint64_t version, ember_ckpt_meta *out_meta,
                             ember_error *err)
{
    if (w->cw_failed) {
        int rc = ckpt_fail(err, EMBER_FAILED_PRECONDITION, w->cw_path, "commit after an error");
        ember_ckpt_writer_abort(w);
        return rc;
    }
    ckpt_header *h = &w->cw_hdr;
    uint8_t hdr[HDR_LEN];
    int rc = writer_flush_chunk(w, err);
    if (!rc) {
        uint8_t ftr[FTR_LEN];
        size_t o = 8;
        memcpy(ftr, ftr_magic, sizeof ftr_magic);
        put_u64(ftr, &o, h->ch_meta.rows);
        put_u64(ftr, &o, w->cw_chunks);
        put_u32(ftr, &o, ember_crc32c(ftr, FTR_LEN - 4));
        h->ch_meta.version = version;
        hdr_encode(h, hdr);
        int e = write_full(w->cw_fd, ftr, sizeof ftr);
        if (!e)
            e = pwrite_full(w->cw_fd, hdr, sizeof hdr, 0);
        if (e)
            rc = io_fail(err, w->cw_tmp, "write", e);
    }
    if (!rc && fsync(w->cw_fd))
        rc = io_fail(err, w->cw_tmp, "fsync", errno);
    if (close(w->cw_fd) && !rc)
        rc = io_fail(err, w->cw_tmp, "close", errno);
    w->cw_fd = -1;
    if (!rc && rename(w->cw_tmp, w->cw_path))
        rc = io_fail(err, w->cw_path, "rename", errno);
    if (rc) {
        ember_ckpt_writer_abort(w);
        return rc;
    }
    w->cw_tmp[0] = '\0'; /* renamed: nothing to remove */
    rc = fsync_dir(w->cw_path, err);
    if (!rc && out_meta)
        *out_meta = h->ch_meta;
    ember_ckpt_writer_abort(w);
    return rc;
}

void ember_ckpt_writer_abort(ember_ckpt_writer *w)
{
    if (!w)
        return;
    if (w->cw_fd >= 0)
        close(w->cw_fd);
    if (w->cw_tmp[0])
        unlink(w->cw_tmp);
    free(w->cw_batch.cb_mem);
    free(w->cw_path);
    free(w);
}
