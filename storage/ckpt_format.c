/*
 * ckpt_format.c — the checkpoint codec (ckpt_format.h; the layout is in
 * checkpoint.h): header, chunks and footer, read and checked, or written onto a
 * durable temp file.
 */
#define _GNU_SOURCE
#include "ckpt_format.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"

#define CHUNK_ROWS_MIN EMBER_BUCKET_SLOTS /* export returns whole buckets */

_Static_assert(EMBER_BUCKET_SLOTS <= EMBER_CKPT_CHUNK_ROWS_MAX,
               "a chunk must hold the largest export batch: one whole bucket");

const uint8_t ckpt_magic[8] = {'E', 'M', 'B', 'R', 'C', 'K', 'P', 'T'};
const uint8_t ckpt_footer_magic[8] = {'E', 'M', 'B', 'R', 'E', 'N', 'D', '\0'};

/* ---- errors ---------------------------------------------------------------- */

static int vfail(ember_error *err, int code, const char *label, const char *path,
                 const char *fmt, va_list ap)
{
    char what[EMBER_ERROR_MSG_MAX];
    vsnprintf(what, sizeof what, fmt, ap);
    return ember_error_set(err, code, "%s%s: %s", label, path, what);
}

int ckpt_fail(ember_error *err, int code, const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(err, code, "checkpoint ", path, fmt, ap);
    va_end(ap);
    return rc;
}

/* "<label><path>: <what>", for an open file f. */
__attribute__((format(printf, 4, 5)))
static int file_fail(ember_error *err, int code, const ckpt_file *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(err, code, f->cf_label, f->cf_path, fmt, ap);
    va_end(ap);
    return rc;
}

/* "<label><path>: <call>: <strerror>", INTERNAL. */
static int label_io_fail(ember_error *err, const char *label, const char *path, const char *call,
                         int errnum)
{
    return ember_error_set(err, EMBER_INTERNAL, "%s%s: %s: %s", label, path, call,
                           strerror(errnum));
}

int ckpt_io_fail(ember_error *err, const char *path, const char *call, int errnum)
{
    return label_io_fail(err, "checkpoint ", path, call, errnum);
}

int ckpt_durable_fail(ember_error *err, const char *path, int e, const ember_durable_fail *f)
{
    if (e == ENOMEM && !strcmp(f->df_step, "malloc"))
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of host memory");
    if (e == ENAMETOOLONG &&
        (!strcmp(f->df_step, "temp name") || !strcmp(f->df_step, "directory name")))
        return ckpt_fail(err, EMBER_INVALID_ARGUMENT, path, "path too long");
    if (!strcmp(f->df_step, "temp name"))
        return ckpt_fail(err, EMBER_INTERNAL, path, "no free temp file name after %d tries",
                         EMBER_DURABLE_TEMP_TRIES);
    return ckpt_io_fail(err, f->df_path, f->df_step, e);
}

/* ---- byte order: floats as their bits (the integers are in ckpt_format.h) -- */

static void put_f32(uint8_t *b, size_t *off, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    ckpt_put_u32(b, off, bits);
}

static float get_f32(const uint8_t *b, size_t *off)
{
    uint32_t bits = ckpt_get_u32(b, off);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* ---- header ---------------------------------------------------------------- */

static void config_encode(const ember_table_config *c, uint8_t *b, size_t *off)
{
    const ember_optim_config *o = &c->optim;
    ckpt_put_u32(b, off, c->dim);
    ckpt_put_u64(b, off, c->capacity);
    ckpt_put_u32(b, off, (uint32_t)c->score_policy);
    ckpt_put_u64(b, off, c->seed);
    ckpt_put_u32(b, off, (uint32_t)o->kind);
    const float of[10] = {o->lr, o->eps, o->initial_accumulator, o->beta1, o->beta2,
                          o->weight_decay, o->l1, o->l2, o->lr_power, o->beta};
    for (int i = 0; i < 10; i++)
        put_f32(b, off, of[i]);
    ckpt_put_u32(b, off, (uint32_t)c->init.kind);
    put_f32(b, off, c->init.a);
    put_f32(b, off, c->init.b);
    ckpt_put_u32(b, off, c->admission.min_count);
    ckpt_put_u32(b, off, c->admission.sketch_width);
    ckpt_put_u32(b, off, (uint32_t)c->nonfinite);
}

static void config_decode(const uint8_t *b, size_t *off, ember_table_config *c)
{
    ember_optim_config *o = &c->optim;
    memset(c, 0, sizeof *c);
    c->dim = ckpt_get_u32(b, off);
    c->capacity = ckpt_get_u64(b, off);
    c->score_policy = (ember_score_policy)ckpt_get_u32(b, off);
    c->seed = ckpt_get_u64(b, off);
    o->kind = (ember_optim_kind)ckpt_get_u32(b, off);
    float *of[10] = {&o->lr, &o->eps, &o->initial_accumulator, &o->beta1, &o->beta2,
                     &o->weight_decay, &o->l1, &o->l2, &o->lr_power, &o->beta};
    for (int i = 0; i < 10; i++)
        *of[i] = get_f32(b, off);
    c->init.kind = (ember_init_kind)ckpt_get_u32(b, off);
    c->init.a = get_f32(b, off);
    c->init.b = get_f32(b, off);
    c->admission.min_count = ckpt_get_u32(b, off);
    c->admission.sketch_width = ckpt_get_u32(b, off);
    c->nonfinite = (ember_nonfinite_policy)ckpt_get_u32(b, off);
}

void ckpt_hdr_encode(const ckpt_header *h, uint8_t b[CKPT_HDR_LEN])
{
    const ember_ckpt_meta *m = &h->ch_meta;
    size_t off = 0, name_len = strlen(m->table_name);
    memset(b, 0, CKPT_HDR_LEN);
    memcpy(b, ckpt_magic, sizeof ckpt_magic);
    off += sizeof ckpt_magic;
    ckpt_put_u32(b, &off, EMBER_CKPT_FORMAT_VERSION);
    ckpt_put_u32(b, &off, CKPT_HDR_LEN);
    config_encode(&m->config, b, &off);
    ckpt_put_u32(b, &off, (uint32_t)name_len);
    memcpy(b + off, m->table_name, name_len);
    off += EMBER_CKPT_NAME_MAX;
    ckpt_put_u32(b, &off, m->shard_index);
    ckpt_put_u32(b, &off, m->shard_count);
    ckpt_put_u32(b, &off, h->ch_row_floats);
    ckpt_put_u32(b, &off, h->ch_chunk_rows);
    ckpt_put_u64(b, &off, m->version);
    ckpt_put_u64(b, &off, m->created_ns);
    ckpt_put_u64(b, &off, m->rows);
    ckpt_put_u64(b, &off, m->placement.hbm_bytes);
    memcpy(b + off, m->placement.backend, strlen(m->placement.backend));
    off += EMBER_CKPT_BACKEND_MAX + 1;
    ckpt_put_u64(b, &off, m->config.max_capacity);
    put_f32(b, &off, m->config.max_load_factor);
    ckpt_put_u64(b, &off, m->config.ttl_seconds);
    ckpt_put_u32(b, &off, m->epoch);
    ckpt_put_u32(b, &off, ember_crc32c(b, CKPT_HDR_CRC_OFF));
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

/* Decodes b[have] (have ≤ CKPT_HDR_LEN bytes read from the start of a file of
 * `size` bytes), saying first whether it is a checkpoint at all, then whether
 * it is whole, then whether it is intact. Versions 1 to 3. */
static int hdr_decode(const uint8_t *b, size_t have, uint64_t size, ckpt_header *h,
                      const char *path, ember_error *err)
{
    size_t off = 8;
    if (have < 8 || memcmp(b, ckpt_magic, sizeof ckpt_magic))
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "not an ember checkpoint (bad magic)");
    if (have < 16)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "truncated in the header (%llu bytes)",
                         (unsigned long long)size);
    uint32_t version = ckpt_get_u32(b, &off), len = ckpt_get_u32(b, &off);
    if (version < 1 || version > EMBER_CKPT_FORMAT_VERSION)
        return ckpt_fail(err, EMBER_DATA_LOSS, path,
                         "format version %u, this build reads 1 to %u", version,
                         EMBER_CKPT_FORMAT_VERSION);
    static const uint32_t lens[] = {CKPT_HDR_LEN_V1, CKPT_HDR_LEN_V2, CKPT_HDR_LEN};
    static const uint32_t crc_offs[] = {CKPT_HDR_CRC_OFF_V1, CKPT_HDR_CRC_OFF_V2,
                                        CKPT_HDR_CRC_OFF};
    uint32_t want = lens[version - 1], crc_off = crc_offs[version - 1];
    if (len != want)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "header length %u, expected %u", len,
                         want);
    if (have < want)
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "truncated in the header (%llu bytes)",
                         (unsigned long long)size);
    off = crc_off;
    if (ckpt_get_u32(b, &off) != ember_crc32c(b, crc_off))
        return ckpt_fail(err, EMBER_DATA_LOSS, path, "header CRC mismatch");
    off = 16;
    ember_ckpt_meta *m = &h->ch_meta;
    memset(h, 0, sizeof *h);
    h->ch_len = want;
    h->ch_format = version;
    config_decode(b, &off, &m->config);
    uint32_t name_len = ckpt_get_u32(b, &off);
    const uint8_t *name = b + off;
    off += EMBER_CKPT_NAME_MAX;
    m->shard_index = ckpt_get_u32(b, &off);
    m->shard_count = ckpt_get_u32(b, &off);
    h->ch_row_floats = ckpt_get_u32(b, &off);
    h->ch_chunk_rows = ckpt_get_u32(b, &off);
    m->version = ckpt_get_u64(b, &off);
    m->created_ns = ckpt_get_u64(b, &off);
    m->rows = ckpt_get_u64(b, &off);
    if (version >= 2) {
        m->placement.hbm_bytes = ckpt_get_u64(b, &off);
        if (!backend_valid(b + off, EMBER_CKPT_BACKEND_MAX + 1))
            return ckpt_fail(err, EMBER_DATA_LOSS, path, "bad placement backend");
        memcpy(m->placement.backend, b + off, EMBER_CKPT_BACKEND_MAX + 1);
        off += EMBER_CKPT_BACKEND_MAX + 1;
    }
    if (version >= 3) {
        m->config.max_capacity = ckpt_get_u64(b, &off);
        m->config.max_load_factor = get_f32(b, &off);
        m->config.ttl_seconds = ckpt_get_u64(b, &off);
        m->epoch = ckpt_get_u32(b, &off);
    }
    int rc = hdr_check_fields(h, name, name_len, path, err);
    if (!rc)
        memcpy(m->table_name, name, name_len);
    return rc;
}

uint64_t ckpt_now_ns(void)
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

int ckpt_header_init(ckpt_header *h, const ember_table_config *config, const char *table_name,
                     uint32_t shard_index, uint32_t shard_count,
                     const ember_ckpt_placement *placement, uint32_t chunk_rows,
                     const char *path, ember_error *err)
{
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
    h->ch_meta.created_ns = ckpt_now_ns();
    h->ch_meta.config = *config;
    h->ch_meta.config.hbm_bytes = 0; /* not in the file: placement says what was asked */
    h->ch_row_floats = ember_table_config_row_floats(config);
    h->ch_chunk_rows = chunk_rows ? chunk_rows : chunk_rows_for(h->ch_row_floats);
    h->ch_len = CKPT_HDR_LEN;
    h->ch_format = EMBER_CKPT_FORMAT_VERSION;
    return placement_set(h, placement, path, err);
}

/* ---- rows ------------------------------------------------------------------ */

uint64_t ckpt_chunk_bytes(uint64_t n, uint32_t row_floats)
{
    return CKPT_CHUNK_HEAD + n * (3u * sizeof(uint64_t) + (uint64_t)row_floats * sizeof(float)) +
           sizeof(uint32_t);
}

/* Index of the first NaN/Inf in v[n], or n. */
size_t ckpt_first_nonfinite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], sizeof bits);
        if ((bits & 0x7f800000u) == 0x7f800000u)
            return i;
    }
    return n;
}

int ckpt_batch_alloc(ckpt_batch *b, uint32_t chunk_rows, uint32_t rf, ember_error *err)
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

static int read_fail(ember_error *err, const ckpt_file *f, int rc)
{
    if (rc < 0)
        return file_fail(err, EMBER_DATA_LOSS, f, "file shrank while being read");
    return label_io_fail(err, f->cf_label, f->cf_path, "read", rc);
}

int ckpt_open_regular(const char *path, const char *label, int *fd, uint64_t *size,
                      ember_error *err)
{
    struct stat st;
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return errno == ENOENT
                   ? ember_error_set(err, EMBER_NOT_FOUND, "%s%s: no such file", label, path)
                   : label_io_fail(err, label, path, "open", errno);
    /* Readers read front to back: let the kernel read ahead. */
    (void)posix_fadvise(*fd, 0, 0, POSIX_FADV_SEQUENTIAL);
    int rc = EMBER_OK;
    if (fstat(*fd, &st))
        rc = label_io_fail(err, label, path, "fstat", errno);
    else if (!S_ISREG(st.st_mode))
        rc = ember_error_set(err, EMBER_INVALID_ARGUMENT, "%s%s: not a regular file", label,
                             path);
    if (rc)
        close(*fd);
    else
        *size = (uint64_t)st.st_size;
    return rc;
}

int ckpt_open(const char *path, ckpt_file *f, ember_error *err)
{
    uint8_t b[CKPT_HDR_LEN];
    f->cf_path = path;
    f->cf_label = "checkpoint ";
    f->cf_footer_magic = ckpt_footer_magic;
    int rc = ckpt_open_regular(path, f->cf_label, &f->cf_fd, &f->cf_size, err);
    if (rc)
        return rc;
    size_t have = f->cf_size < CKPT_HDR_LEN ? (size_t)f->cf_size : CKPT_HDR_LEN;
    int r = pread_full(f->cf_fd, b, have, 0);
    rc = r ? read_fail(err, f, r) : hdr_decode(b, have, f->cf_size, &f->cf_hdr, path, err);
    if (rc)
        close(f->cf_fd);
    return rc;
}

/* What import would refuse, found before the table is touched. */
int ckpt_chunk_check_rows(const ckpt_chunk *c, uint32_t rf, uint64_t idx,
                            const char *path, ember_error *err)
{
    for (size_t i = 0; i < c->n; i++)
        if (ember_key_is_reserved(c->keys[i]))
            return ckpt_fail(err, EMBER_DATA_LOSS, path, "chunk %llu holds reserved key %llu",
                             (unsigned long long)idx, (unsigned long long)c->keys[i]);
    size_t bad = ckpt_first_nonfinite(c->rows, c->n * rf);
    if (bad < c->n * rf)
        return ckpt_fail(err, EMBER_FAILED_PRECONDITION, path,
                         "row of key %llu holds NaN or Inf", (unsigned long long)c->keys[bad / rf]);
    return EMBER_OK;
}

/* Reads the chunk at *off (chunk number idx) into buf and checks it. */
int ckpt_chunk_read(const ckpt_file *f, uint8_t *buf, uint64_t *off, uint64_t idx,
                      ckpt_chunk *c, ember_error *err)
{
    const ckpt_header *h = &f->cf_hdr;
        size_t o = 0;
    int r = pread_full(f->cf_fd, buf, CKPT_CHUNK_HEAD, *off);
    if (r)
        return read_fail(err, f, r);
    uint32_t magic = ckpt_get_u32(buf, &o), n = ckpt_get_u32(buf, &o);
    if (magic != CKPT_CHUNK_MAGIC)
        return file_fail(err, EMBER_DATA_LOSS, f, "bad chunk magic at offset %llu",
                         (unsigned long long)*off);
    if (n < 1 || n > h->ch_chunk_rows)
        return file_fail(err, EMBER_DATA_LOSS, f, "chunk %llu claims %u rows (1..%u allowed)",
                         (unsigned long long)idx, n, h->ch_chunk_rows);
    uint64_t len = ckpt_chunk_bytes(n, h->ch_row_floats);
    if (len > f->cf_size - *off)
        return file_fail(err, EMBER_DATA_LOSS, f,
                         "truncated: chunk %llu at offset %llu needs %llu bytes, %llu left",
                         (unsigned long long)idx, (unsigned long long)*off,
                         (unsigned long long)len, (unsigned long long)(f->cf_size - *off));
    r = pread_full(f->cf_fd, buf + CKPT_CHUNK_HEAD, (size_t)len - CKPT_CHUNK_HEAD, *off + CKPT_CHUNK_HEAD);
    if (r)
        return read_fail(err, f, r);
    o = (size_t)len - sizeof(uint32_t);
    if (ckpt_get_u32(buf, &o) != ember_crc32c(buf, (size_t)len - sizeof(uint32_t)))
        return file_fail(err, EMBER_DATA_LOSS, f, "chunk %llu at offset %llu: CRC mismatch",
                         (unsigned long long)idx, (unsigned long long)*off);
    c->n = n;
    c->keys = (const uint64_t *)(buf + CKPT_CHUNK_HEAD);
    c->scores = c->keys + n;
    c->versions = c->scores + n;
    c->rows = (const float *)(c->versions + n);
    *off += len;
    return EMBER_OK;
}

/* Checks the footer at off against the rows and chunks counted. */
int ckpt_footer_check(const ckpt_file *f, uint64_t off, uint64_t rows, uint64_t chunks,
                        ember_error *err)
{
        uint8_t b[CKPT_FTR_LEN];
    size_t o = 8;
    if (f->cf_size - off < CKPT_FTR_LEN)
        return file_fail(err, EMBER_DATA_LOSS, f, "truncated in the footer at offset %llu",
                         (unsigned long long)off);
    if (f->cf_size - off > CKPT_FTR_LEN)
        return file_fail(err, EMBER_DATA_LOSS, f, "%llu bytes of garbage after the footer",
                         (unsigned long long)(f->cf_size - off - CKPT_FTR_LEN));
    int r = pread_full(f->cf_fd, b, CKPT_FTR_LEN, off);
    if (r)
        return read_fail(err, f, r);
    uint64_t f_rows = ckpt_get_u64(b, &o), f_chunks = ckpt_get_u64(b, &o);
    if (ckpt_get_u32(b, &o) != ember_crc32c(b, CKPT_FTR_LEN - 4))
        return file_fail(err, EMBER_DATA_LOSS, f, "footer CRC mismatch");
    if (f_rows != rows || f_chunks != chunks || rows != f->cf_hdr.ch_meta.rows)
        return file_fail(err, EMBER_DATA_LOSS, f,
                         "counts disagree: header %llu rows, footer %llu rows in %llu chunks, "
                         "found %llu rows in %llu chunks",
                         (unsigned long long)f->cf_hdr.ch_meta.rows,
                         (unsigned long long)f_rows, (unsigned long long)f_chunks,
                         (unsigned long long)rows, (unsigned long long)chunks);
    return EMBER_OK;
}

/* Is the data at off the footer? (Its magic cannot start a chunk.) */
int ckpt_at_footer(const ckpt_file *f, uint64_t off, int *yes, ember_error *err)
{
    uint8_t b[8];
    *yes = 0;
    if (f->cf_size - off < sizeof b)
        return file_fail(err, EMBER_DATA_LOSS, f,
                         "truncated at offset %llu (no footer)", (unsigned long long)off);
    int r = pread_full(f->cf_fd, b, sizeof b, off);
    if (r)
        return read_fail(err, f, r);
    *yes = !memcmp(b, f->cf_footer_magic, sizeof b);
    return EMBER_OK;
}

int ckpt_scan(const ckpt_file *f, uint8_t *buf,
              int (*each)(const ckpt_chunk *c, void *arg, ember_error *err), void *arg,
              ember_error *err)
{
    uint64_t off = f->cf_hdr.ch_len, rows = 0, chunks = 0;
    for (;;) {
        int footer, rc = ckpt_at_footer(f, off, &footer, err);
        if (rc || footer)
            return rc ? rc : ckpt_footer_check(f, off, rows, chunks, err);
        ckpt_chunk c = {0, NULL, NULL, NULL, NULL};
        rc = ckpt_chunk_read(f, buf, &off, chunks, &c, err);
        if (!rc)
            rc = each ? each(&c, arg, err)
                      : ckpt_chunk_check_rows(&c, f->cf_hdr.ch_row_floats, chunks, f->cf_path,
                                              err);
        if (rc)
            return rc;
        rows += c.n;
        chunks++;
    }
}

/* ---- writing --------------------------------------------------------------- */

static int out_flush(ckpt_out *o)
{
    int e = ember_durable_write(o->co_file, o->co_buf, o->co_len, &o->co_fail);
    o->co_len = 0;
    return e;
}

/* Buffers small pieces; large ones (all, unbuffered) go straight to the file
 * after a flush. */
static int out_put(ckpt_out *o, const void *p, size_t len)
{
    int e = 0;
    o->co_crc = ember_crc32c_extend(o->co_crc, p, len);
    if (o->co_len + len > o->co_cap)
        e = out_flush(o);
    if (e)
        return e;
    if (len >= o->co_cap)
        return ember_durable_write(o->co_file, p, len, &o->co_fail);
    memcpy(o->co_buf + o->co_len, p, len);
    o->co_len += len;
    return 0;
}

int ckpt_out_begin(ckpt_out *o, ember_durable_file *file, int buffered, size_t hdr_len)
{
    static const uint8_t zero[CKPT_HDR_LEN]; /* the real header goes here at the end */
    memset(o, 0, sizeof *o);
    o->co_file = file;
    if (buffered) {
        o->co_buf = malloc(CKPT_WRITE_BUF_BYTES);
        if (!o->co_buf) {
            o->co_fail.df_step = "malloc";
            o->co_fail.df_path[0] = '\0';
            return ENOMEM;
        }
        o->co_cap = CKPT_WRITE_BUF_BYTES;
    }
    int e = 0;
    for (size_t left = hdr_len, n; !e && left; left -= n) {
        n = left < sizeof zero ? left : sizeof zero;
        e = out_put(o, zero, n);
    }
    return e;
}

int ckpt_out_chunk(ckpt_out *o, const ckpt_chunk *c, uint32_t rf)
{
    size_t n = c->n;
    uint8_t head[CKPT_CHUNK_HEAD], tail[4];
    size_t off = 0;
    ckpt_put_u32(head, &off, CKPT_CHUNK_MAGIC);
    ckpt_put_u32(head, &off, (uint32_t)n);
    o->co_crc = 0;
    int e = out_put(o, head, sizeof head);
    if (!e)
        e = out_put(o, c->keys, n * sizeof(uint64_t));
    if (!e)
        e = out_put(o, c->scores, n * sizeof(uint64_t));
    if (!e)
        e = out_put(o, c->versions, n * sizeof(uint64_t));
    if (!e)
        e = out_put(o, c->rows, n * rf * sizeof(float));
    off = 0;
    ckpt_put_u32(tail, &off, o->co_crc);
    return e ? e : out_put(o, tail, sizeof tail);
}

int ckpt_out_finish(ckpt_out *o, const uint8_t footer_magic[8], uint64_t rows, uint64_t chunks,
                    const uint8_t *hdr, size_t hdr_len)
{
    uint8_t ftr[CKPT_FTR_LEN];
    size_t off = 8;
    memcpy(ftr, footer_magic, 8);
    ckpt_put_u64(ftr, &off, rows);
    ckpt_put_u64(ftr, &off, chunks);
    ckpt_put_u32(ftr, &off, ember_crc32c(ftr, CKPT_FTR_LEN - 4));
    int e = out_put(o, ftr, sizeof ftr);
    if (!e)
        e = out_flush(o);
    if (!e)
        e = ember_durable_pwrite(o->co_file, hdr, hdr_len, 0, &o->co_fail);
    return e;
}

int ckpt_out_end(ckpt_out *o, const ckpt_header *h, uint64_t chunks)
{
    uint8_t hdr[CKPT_HDR_LEN];
    ckpt_hdr_encode(h, hdr);
    return ckpt_out_finish(o, ckpt_footer_magic, h->ch_meta.rows, chunks, hdr, sizeof hdr);
}

void ckpt_out_free(ckpt_out *o)
{
    free(o->co_buf);
    o->co_buf = NULL;
}
