/*
 * ckpt_format.h — the checkpoint file format's codec, shared by the table's
 * save and load (checkpoint.c), the row reader and writer without a table
 * (ckpt_rows.c) and emberctl's export file (client/ctl/xfile.c). Users of
 * checkpoints include checkpoint.h, which documents the byte layout this code
 * reads and writes.
 *
 * The export file (its layout is in client/ctl/ctl.h) frames its rows as a
 * checkpoint does: the same little-endian fields, the same chunks (head, the
 * key, score and version columns, the rows, a CRC-32C of it all) and a footer
 * of the same shape that differs only in its magic. What the two formats share
 * is parameterised here rather than written twice: the footer magic and the
 * error-message label travel in ckpt_file, the header placeholder's length and
 * the header bytes in the writer's calls. Each header is its format's own.
 *
 * Reading: ckpt_open decodes and checks the header; ckpt_scan walks every chunk
 * (each CRC, count and row) to the footer and checks it; the chunk and footer
 * steps are there on their own for a reader that hands chunks out one by one.
 * Writing: a ckpt_out puts chunks and the footer onto a durable temp file
 * (durable.h), buffered or not, with each chunk's running CRC; ckpt_out_end
 * writes the footer and then the header over its placeholder at offset 0,
 * because the row count is known only at the end.
 *
 * Errors: as checkpoint.h says, messages "checkpoint <file>: …" (for an open
 * file, "<cf_label><file>: …").
 */
#ifndef EMBER_CKPT_FORMAT_H
#define EMBER_CKPT_FORMAT_H

#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "durable.h"
#include "status.h"
#include "table.h"

/* Arrays (keys, scores, versions, rows) go to and come from the file as they
 * lie in memory, which is the file's byte order only on little-endian hosts. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint code supports little-endian hosts only"
#endif

#define CKPT_HDR_LEN 268u     /* version 3, written */
#define CKPT_HDR_CRC_OFF 264u
#define CKPT_HDR_LEN_V2 244u  /* version 2, still read: no growth or TTL */
#define CKPT_HDR_CRC_OFF_V2 240u
#define CKPT_HDR_LEN_V1 220u  /* version 1, still read: no placement */
#define CKPT_HDR_CRC_OFF_V1 216u
#define CKPT_FTR_LEN 28u
#define CKPT_CHUNK_HEAD 8u
#define CKPT_CHUNK_MAGIC 0x4B4E4843u /* "CHNK" */
#define CKPT_WRITE_BUF_BYTES (1u << 20)

/* The checkpoint header's and footer's magic ("EMBRCKPT", "EMBREND\0"). */
extern const uint8_t ckpt_magic[8];
extern const uint8_t ckpt_footer_magic[8];

/* ---- byte order: explicit little-endian fields at b + *off, moving *off ---- */

static inline void ckpt_put_u32(uint8_t *b, size_t *off, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[*off + (size_t)i] = (uint8_t)(v >> (8 * i));
    *off += 4;
}

static inline void ckpt_put_u64(uint8_t *b, size_t *off, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[*off + (size_t)i] = (uint8_t)(v >> (8 * i));
    *off += 8;
}

static inline uint32_t ckpt_get_u32(const uint8_t *b, size_t *off)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)b[*off + (size_t)i] << (8 * i);
    *off += 4;
    return v;
}

static inline uint64_t ckpt_get_u64(const uint8_t *b, size_t *off)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)b[*off + (size_t)i] << (8 * i);
    *off += 8;
    return v;
}

/* The header as the checkpoint code handles it: what the caller sees plus
 * layout. */
typedef struct ckpt_header {
    ember_ckpt_meta ch_meta;
    uint32_t ch_row_floats;
    uint32_t ch_chunk_rows;
    uint32_t ch_len;        /* this file's header length: where its chunks begin */
    uint32_t ch_format;     /* its format version (read), or the one written */
} ckpt_header;

/* An open file being read, a checkpoint (ckpt_open) or another file framed as
 * one: its reader opens it (ckpt_open_regular) and fills cf_hdr's ch_row_floats,
 * ch_chunk_rows, ch_len (where the chunks begin) and ch_meta.rows (the header's
 * row count), which are all the chunk and footer steps read of it. */
typedef struct ckpt_file {
    const char *cf_path;
    const char *cf_label;           /* before the path in messages: "checkpoint " */
    const uint8_t *cf_footer_magic; /* 8 bytes: ckpt_footer_magic for a checkpoint */
    int cf_fd;
    uint64_t cf_size;
    ckpt_header cf_hdr;
} ckpt_file;

/* One chunk as read into a buffer: pointers into it. */
typedef struct ckpt_chunk {
    size_t n;
    const uint64_t *keys, *scores, *versions;
    const float *rows;
} ckpt_chunk;

/* Column buffers for one chunk of rows, in one allocation (cb_mem). */
typedef struct ckpt_batch {
    void *cb_mem;
    uint64_t *cb_keys, *cb_scores, *cb_versions;
    float *cb_rows;
} ckpt_batch;

/* Chunks and the footer on their way to a durable temp file: through a write
 * buffer of CKPT_WRITE_BUF_BYTES (co_buf), or straight (co_buf NULL). */
typedef struct ckpt_out {
    ember_durable_file *co_file;
    uint8_t *co_buf;
    size_t co_cap, co_len;
    uint32_t co_crc;            /* of what was put since the chunk began */
    ember_durable_fail co_fail; /* where the last write failed */
} ckpt_out;

/* ---- errors ---- */

/* Sets "checkpoint <path>: <what>" with `code` in err; returns code. */
int ckpt_fail(ember_error *err, int code, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* INTERNAL: "checkpoint <path>: <call>: <strerror>". */
int ckpt_io_fail(ember_error *err, const char *path, const char *call, int errnum);

/* The status for a durable.h failure `e` of a checkpoint for `path`:
 * INVALID_ARGUMENT (path too long), RESOURCE_EXHAUSTED, INTERNAL (I/O, or no free
 * temp name). */
int ckpt_durable_fail(ember_error *err, const char *path, int e, const ember_durable_fail *f);

/* The time now, in ns since the epoch (CLOCK_REALTIME): a header's created_ns. */
uint64_t ckpt_now_ns(void);

/* ---- header ---- */

/* Fills h for a new file of rows shaped by `config`: the name (NULL for none),
 * shard, placement (NULL for none), chunk size (0: the size that keeps a chunk
 * near EMBER_CKPT_CHUNK_BYTES) and creation time. Errors: INVALID_ARGUMENT (name
 * too long, shard index ≥ count, a placement backend a reader would refuse). */
int ckpt_header_init(ckpt_header *h, const ember_table_config *config, const char *table_name,
                     uint32_t shard_index, uint32_t shard_count,
                     const ember_ckpt_placement *placement, uint32_t chunk_rows,
                     const char *path, ember_error *err);

/* Encodes h as the version-2 header, CRC included. */
void ckpt_hdr_encode(const ckpt_header *h, uint8_t b[CKPT_HDR_LEN]);

/* ---- rows ---- */

/* Bytes of a chunk of n rows of row_floats floats, head and CRC included. */
uint64_t ckpt_chunk_bytes(uint64_t n, uint32_t row_floats);

/* Index of the first NaN/Inf in v[n], or n. */
size_t ckpt_first_nonfinite(const float *v, size_t n);

/* Allocates b for chunk_rows rows of rf floats. RESOURCE_EXHAUSTED. */
int ckpt_batch_alloc(ckpt_batch *b, uint32_t chunk_rows, uint32_t rf, ember_error *err);

/* ---- reading ---- */

/* Opens `path` for reading and checks that it is a regular file: *fd and *size.
 * Errors, as "<label><path>: …": NOT_FOUND, INVALID_ARGUMENT (not a regular
 * file), INTERNAL. */
int ckpt_open_regular(const char *path, const char *label, int *fd, uint64_t *size,
                      ember_error *err);

/* Opens the checkpoint `path` and decodes its header into f->cf_hdr;
 * f->cf_path is `path` (kept, not copied). Errors: NOT_FOUND, DATA_LOSS, INVALID_ARGUMENT (not a
 * regular file), INTERNAL. */
int ckpt_open(const char *path, ckpt_file *f, ember_error *err);

/* Is the data at off the footer (f->cf_footer_magic)? (Its magic cannot start
 * a chunk.) DATA_LOSS when fewer than 8 bytes are left. */
int ckpt_at_footer(const ckpt_file *f, uint64_t off, int *yes, ember_error *err);

/* Reads the chunk at *off (chunk number idx) into buf (ckpt_chunk_bytes of the
 * header's chunk_rows), checks its magic, count and CRC, points c into buf and
 * moves *off past it. */
int ckpt_chunk_read(const ckpt_file *f, uint8_t *buf, uint64_t *off, uint64_t idx,
                    ckpt_chunk *c, ember_error *err);

/* What an import would refuse in a chunk: DATA_LOSS (a reserved key),
 * FAILED_PRECONDITION (a row holding NaN/Inf). */
int ckpt_chunk_check_rows(const ckpt_chunk *c, uint32_t rf, uint64_t idx, const char *path,
                          ember_error *err);

/* Checks the footer at off against the rows and chunks counted and the
 * header's row count, and that the file ends with it. DATA_LOSS. */
int ckpt_footer_check(const ckpt_file *f, uint64_t off, uint64_t rows, uint64_t chunks,
                      ember_error *err);

/* One pass over the chunks and the footer. With each NULL every chunk's rows
 * are checked (ckpt_chunk_check_rows); otherwise each chunk goes to
 * each(c, arg, err), whose error ends the pass. */
int ckpt_scan(const ckpt_file *f, uint8_t *buf,
              int (*each)(const ckpt_chunk *c, void *arg, ember_error *err), void *arg,
              ember_error *err);

/* ---- writing ---- */

/* Starts o on `file`, buffered or not, and puts a zero placeholder of hdr_len
 * bytes for the header: 0 or an errno (o->co_fail; ENOMEM at step "malloc" when
 * the buffer cannot be had). */
int ckpt_out_begin(ckpt_out *o, ember_durable_file *file, int buffered, size_t hdr_len);

/* Puts the c->n rows of rf floats in c as one chunk: 0 or an errno (o->co_fail). */
int ckpt_out_chunk(ckpt_out *o, const ckpt_chunk *c, uint32_t rf);

/* Puts the footer (footer_magic, `rows`, `chunks`), flushes and writes the
 * header hdr[hdr_len] at offset 0: 0 or an errno (o->co_fail). */
int ckpt_out_finish(ckpt_out *o, const uint8_t footer_magic[8], uint64_t rows, uint64_t chunks,
                    const uint8_t *hdr, size_t hdr_len);

/* ckpt_out_finish for a checkpoint: its footer, and h's header. */
int ckpt_out_end(ckpt_out *o, const ckpt_header *h, uint64_t chunks);

/* Frees o's buffer (not the file). */
void ckpt_out_free(ckpt_out *o);

#endif /* EMBER_CKPT_FORMAT_H */
