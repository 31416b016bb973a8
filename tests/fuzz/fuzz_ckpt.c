/*
 * fuzz_ckpt.c — the checkpoint loader (storage/checkpoint.h) on any file.
 *
 * The input is a file's bytes (the fixtures in tests/assets/ckpt are seeds as
 * they are). The loader reads paths, so each input is written to a temp file
 * (in /dev/shm where it exists: saves fsync) and loaded twice: as it is, and —
 * because a fuzzer almost never guesses a CRC-32C — with every CRC that can be
 * located (header, each chunk that fits, footer) recomputed, so the checks
 * behind the CRCs are reached too.
 *
 * For each, checkpoint.h's contract:
 *   - ember_ckpt_read_meta: OK, or DATA_LOSS; on OK a NUL-terminated name, a
 *     shard below the count, a dim within 1..EMBER_DIM_MAX;
 *   - the row reader (ember_ckpt_reader_*): OK, DATA_LOSS or FAILED_PRECONDITION;
 *     on OK chunks of rows without reserved keys or NaN/Inf adding up to the
 *     header's count; it takes every file that load takes;
 *   - ember_ckpt_load into a small CPU table holding 3 known rows (of the file's
 *     shape when the header is sound and small enough, else dim 4 Adagrad): OK,
 *     DATA_LOSS or FAILED_PRECONDITION; on an error the table is exactly as it
 *     was (same size, the 3 rows unchanged); on OK at most the file's rows, a
 *     version at least the header's, and the table saved again must load again
 *     into a fresh table with the same rows.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/checkpoint.h"
#include "storage/crc32c.h"
#include "tests/fuzz/fuzz.h"

#define HDR_LEN 268u    /* format version 3 */
#define HDR_LEN_V2 244u /* version 2 */
#define HDR_LEN_V1 220u /* version 1 */
#define FTR_LEN 28u
#define CHUNK_MAGIC 0x4B4E4843u
#define SMALL_CAPACITY 4096u /* rows a fuzzed table may hold */
#define SMALL_DIM_MAX 256u   /* larger files only meet the fallback table */

static char in_path[256], out_path[256];

static void remove_files(void)
{
    unlink(in_path);
    unlink(out_path);
}

static void paths_init(void)
{
    if (in_path[0])
        return;
    struct stat st;
    const char *dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(in_path, sizeof in_path, "%s/ember-fuzz-ckpt-%d.in", dir, (int)getpid());
    snprintf(out_path, sizeof out_path, "%s/ember-fuzz-ckpt-%d.out", dir, (int)getpid());
    atexit(remove_files);
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0, "cannot create %s", path);
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        FUZZ_CHECK(w > 0, "cannot write %s", path);
        done += (size_t)w;
    }
    close(fd);
}

static uint32_t rd32(const uint8_t *b)
{
    uint32_t v;
    memcpy(&v, b, 4);
    return v;
}

static void wr32(uint8_t *b, uint32_t v) { memcpy(b, &v, 4); }

/* Recomputes the CRCs that can be located in b[len] (the format in
 * checkpoint.h); returns 1 if any byte changed. */
static int fix_crcs(uint8_t *b, size_t len)
{
    uint32_t version = len >= 12 ? rd32(b + 8) : 0;
    size_t hdr = version == 1 ? HDR_LEN_V1 : version == 2 ? HDR_LEN_V2 : HDR_LEN;
    if (len < hdr)
        return 0;
    uint8_t before[4];
    int changed = 0;
#define FIX(at, from, n)                                                                 \
    do {                                                                                 \
        memcpy(before, b + (at), 4);                                                     \
        wr32(b + (at), ember_crc32c(b + (from), (n)));                                   \
        changed |= memcmp(before, b + (at), 4) != 0;                                     \
    } while (0)
    FIX(hdr - 4, 0, hdr - 4);
    uint64_t rf = rd32(b + 184), off = hdr;
    while (len - off >= 8 && rd32(b + off) == CHUNK_MAGIC) {
        uint64_t n = rd32(b + off + 4), clen = 8 + n * (24 + 4 * rf) + 4;
        if (clen > len - off)
            break;
        FIX(off + clen - 4, off, clen - 4);
        off += clen;
    }
    if (len - off >= FTR_LEN && memcmp(b + off, "EMBREND", 8) == 0)
        FIX(off + 24, off, 24);
#undef FIX
    return changed;
}

static const uint64_t known_keys[3] = {11, 22, UINT64_C(0xFFFFFFFFFFFFFFFB)};

/* A small table: the file's shape when `m` is usable, else dim 4 Adagrad (the
 * fixtures' shape), holding the 3 known keys with rows 1, 2, 3, .... */
static ember_table *small_table(const ember_ckpt_meta *m, float **known_rows)
{
    ember_table_config c;
    ember_error err;
    ember_table_config_init(&c);
    c.dim = 4;
    c.capacity = 64;
    c.optim.kind = EMBER_OPTIM_ADAGRAD;
    if (m) {
        ember_table_config f = m->config;
        f.capacity = f.capacity < 1 ? 1 : f.capacity > SMALL_CAPACITY ? SMALL_CAPACITY
                                                                      : f.capacity;
        f.admission.min_count = 0; /* a load does not use it; a huge sketch costs */
        f.hbm_bytes = 0;
        if (f.dim <= SMALL_DIM_MAX && ember_table_config_validate(&f, NULL) == 0)
            c = f;
    }
    ember_table *t = NULL;
    FUZZ_CHECK(ember_table_create(&c, NULL, &t, &err) == 0, "create: %s", err.message);
    size_t rf = ember_table_row_floats(t);
    float *rows = malloc(3 * rf * sizeof(float));
    FUZZ_CHECK(rows, "out of memory");
    for (size_t i = 0; i < 3 * rf; i++)
        rows[i] = (float)(i + 1);
    uint64_t scores[3] = {5, 6, 7}, versions[3] = {1, 2, 3};
    FUZZ_CHECK(ember_table_import(t, known_keys, 3, rows, scores, versions, &err) == 0,
               "import: %s", err.message);
    *known_rows = rows;
    return t;
}

static void same_known_rows(ember_table *t, const float *want)
{
    size_t rf = ember_table_row_floats(t);
    FUZZ_CHECK(ember_table_size(t) == 3, "a failed load changed the table's size to %llu",
               (unsigned long long)ember_table_size(t));
    uint64_t cursor = 0, end = ember_table_export_end(t);
    float *rows = malloc(EMBER_BUCKET_SLOTS * 4 * rf * sizeof(float));
    uint64_t *k = malloc(EMBER_BUCKET_SLOTS * 4 * sizeof(uint64_t));
    FUZZ_CHECK(rows && k, "out of memory");
    ember_export_filter f = {0, 0, 1};
    size_t seen = 0;
    while (cursor != end) {
        size_t n = 0;
        FUZZ_CHECK(ember_table_export(t, &f, &cursor, EMBER_BUCKET_SLOTS * 4, k, rows, NULL,
                                      NULL, &n, NULL) == 0,
                   "export");
        for (size_t i = 0; i < n; i++) {
            int which = k[i] == known_keys[0] ? 0 : k[i] == known_keys[1] ? 1
                                                  : k[i] == known_keys[2] ? 2
                                                                          : -1;
            FUZZ_CHECK(which >= 0, "a failed load left key %llu", (unsigned long long)k[i]);
            FUZZ_CHECK(memcmp(rows + i * rf, want + (size_t)which * rf, rf * sizeof(float)) == 0,
                       "a failed load changed the row of key %llu", (unsigned long long)k[i]);
            seen++;
        }
    }
    FUZZ_CHECK(seen == 3, "a failed load: %zu of the 3 rows left", seen);
    free(rows);
    free(k);
}

/* The row-by-row reader (emberctl reshard's): OK or DATA_LOSS /
 * FAILED_PRECONDITION, as load before it touches a table; on OK, chunks whose
 * rows add up to the header's, none reserved or holding NaN/Inf. Returns its
 * status. */
static int read_rows(void)
{
    ember_ckpt_reader *r = NULL;
    ember_ckpt_meta meta;
    ember_error err;
    int rc = ember_ckpt_reader_open(in_path, &r, &meta, &err);
    FUZZ_CHECK(rc == EMBER_OK || rc == EMBER_DATA_LOSS || rc == EMBER_FAILED_PRECONDITION,
               "reader_open returned %s: %s", ember_status_name(rc), err.message);
    if (rc)
        return rc;
    uint32_t rf = ember_ckpt_reader_row_floats(r);
    FUZZ_CHECK(rf == ember_table_config_row_floats(&meta.config), "reader row_floats %u", rf);
    uint64_t rows = 0;
    for (;;) {
        size_t n;
        const uint64_t *keys, *scores, *versions;
        const float *v;
        rc = ember_ckpt_reader_next(r, &n, &keys, &scores, &versions, &v, &err);
        FUZZ_CHECK(rc == 0, "reader_next after a whole-file check: %s", err.message);
        if (n == 0)
            break;
        for (size_t i = 0; i < n; i++)
            FUZZ_CHECK(!ember_key_is_reserved(keys[i]), "reader hands out a reserved key");
        for (size_t i = 0; i < n * rf; i++)
            FUZZ_CHECK(isfinite(v[i]), "reader hands out NaN/Inf");
        rows += n;
    }
    FUZZ_CHECK(rows == meta.rows, "reader gave %llu rows, the header says %llu",
               (unsigned long long)rows, (unsigned long long)meta.rows);
    ember_ckpt_reader_close(r);
    return 0;
}

static void load_one(const uint8_t *data, size_t size)
{
    ember_ckpt_meta meta, loaded;
    ember_error err;
    write_file(in_path, data, size);

    int mrc = ember_ckpt_read_meta(in_path, &meta, &err);
    FUZZ_CHECK(mrc == EMBER_OK || mrc == EMBER_DATA_LOSS, "read_meta returned %s: %s",
               ember_status_name(mrc), err.message);
    if (mrc == EMBER_OK) {
        FUZZ_CHECK(memchr(meta.table_name, 0, sizeof meta.table_name), "name not terminated");
        FUZZ_CHECK(meta.shard_index < meta.shard_count, "shard %u of %u", meta.shard_index,
                   meta.shard_count);
        FUZZ_CHECK(meta.config.dim >= 1 && meta.config.dim <= EMBER_DIM_MAX, "dim %u",
                   meta.config.dim);
    }

    int rrc = read_rows();
    FUZZ_CHECK(mrc == EMBER_OK || rrc != EMBER_OK, "the reader opened a file read_meta refused");

    float *known;
    ember_table *t = small_table(mrc == EMBER_OK ? &meta : NULL, &known);
    int rc = ember_ckpt_load(t, in_path, NULL, &loaded, &err);
    FUZZ_CHECK(rc == EMBER_OK || rc == EMBER_DATA_LOSS || rc == EMBER_FAILED_PRECONDITION,
               "load returned %s: %s", ember_status_name(rc), err.message);
    /* The reader checks the whole file as load does: a file load took, it takes. */
    FUZZ_CHECK(rc != EMBER_OK || rrc == EMBER_OK, "load took a file the reader refused");
    if (rc) {
        same_known_rows(t, known);
    } else {
        FUZZ_CHECK(mrc == EMBER_OK, "load accepted a file whose header read_meta refused");
        ember_table_stats st;
        ember_table_stats_get(t, &st);
        FUZZ_CHECK(st.size <= loaded.rows, "%llu rows from a file of %llu",
                   (unsigned long long)st.size, (unsigned long long)loaded.rows);
        FUZZ_CHECK(st.version >= loaded.version, "version %llu below the file's %llu",
                   (unsigned long long)st.version, (unsigned long long)loaded.version);
        /* The expectation the file itself meets is met. */
        ember_ckpt_expect ex = {loaded.shard_index, loaded.shard_count, loaded.table_name};
        float *k2;
        ember_table *t2 = small_table(&meta, &k2);
        rc = ember_ckpt_load(t2, in_path, &ex, NULL, &err);
        FUZZ_CHECK(rc == 0, "load with the file's own expectation: %s", err.message);
        ember_table_destroy(t2);
        free(k2);
        /* What was loaded saves, and loads again. */
        rc = ember_ckpt_save(t, out_path, loaded.table_name, loaded.shard_index,
                             loaded.shard_count, NULL, NULL, &err);
        FUZZ_CHECK(rc == 0, "saving a loaded table: %s", err.message);
        t2 = small_table(&meta, &k2);
        rc = ember_ckpt_load(t2, out_path, &ex, NULL, &err);
        FUZZ_CHECK(rc == 0, "loading what was saved: %s", err.message);
        /* Every row loaded is saved, version 0 too (an import may carry it:
         * tests/assets/fuzz/crashes/ckpt/version0_row_not_saved.ckpt). */
        FUZZ_CHECK(ember_table_size(t2) == st.size, "saved %llu rows, loaded %llu",
                   (unsigned long long)st.size, (unsigned long long)ember_table_size(t2));
        ember_table_destroy(t2);
        free(k2);
    }
    ember_table_destroy(t);
    free(known);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    paths_init();
    load_one(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    FUZZ_CHECK(fixed, "out of memory");
    memcpy(fixed, data, size);
    if (fix_crcs(fixed, size))
        load_one(fixed, size);
    free(fixed);
    return 0;
}
