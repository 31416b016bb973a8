/*
 * make_fixtures.c — writes the checkpoint fixtures that test_checkpoint.c reads.
 *
 * The committed .ckpt files are what the tests use; this program documents how
 * they were made and remakes them after a deliberate format change (bump
 * EMBER_CKPT_FORMAT_VERSION then, and keep a reader for the old version).
 * Build and run from the repository root, after building ember_storage:
 *
 *   cc -std=c11 -I. -Iinclude tests/assets/ckpt/make_fixtures.c \
 *      build/storage/libember_storage.a build/storage/libember_durable.a \
 *      $(pkg-config --libs jemalloc) -lpthread -lm -o /tmp/make_fixtures
 *   /tmp/make_fixtures tests/assets/ckpt
 *
 * Files (the test expects exactly these contents), format version 3:
 *   valid.ckpt            table "fixture", shard 1 of 4, dim 4, Adagrad (8 floats
 *                         per row), the 4 rows of fixture_row() below, placed
 *                         backend "gpu", hbm_bytes 1 MiB; growth to 4096 keys at
 *                         load factor 0.5, TTL 3600 s, epoch 5
 *   empty.ckpt            the same table with no rows
 *   wrong_dim.ckpt        a sound checkpoint of the same rows at dim 8
 *   flipped_byte.ckpt     valid.ckpt with one byte of a row's floats flipped
 *   truncated.ckpt        valid.ckpt cut to 300 bytes (inside its chunk)
 *   wrong_magic.ckpt      valid.ckpt starting "XMBRCKPT"
 *   wrong_version.ckpt    valid.ckpt claiming format version 4 (header CRC redone)
 *   bad_header_crc.ckpt   valid.ckpt with its dim changed and the CRC not redone
 *   trailing_garbage.ckpt valid.ckpt followed by 16 bytes
 * Not made here: valid_v1.ckpt and valid_v2.ckpt, the valid.ckpt of format
 * versions 1 (no placement; a 220-byte header) and 2 (no growth or TTL; 244
 * bytes), which every later reader must still load.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage/checkpoint.h"
#include "storage/crc32c.h"

#define FIX_ROWS 4

static const uint64_t fix_keys[FIX_ROWS] = {1, 2, 1000003, UINT64_C(0xFFFFFFFFFFFFFFFB)};

/* Row i, element j of a table of `dim`: embedding then Adagrad accumulator. */
static float fixture_value(uint32_t i, uint32_t j, uint32_t dim)
{
    return j < dim ? (float)(i + 1) + (float)j / 8.0f : 0.5f * (float)(i + 1) + (float)(j - dim);
}

static void die(const char *what, const ember_error *err)
{
    fprintf(stderr, "make_fixtures: %s: %s\n", what, err ? err->message : "");
    exit(1);
}

static ember_table *fixture_table(uint32_t dim, int with_rows)
{
    ember_table_config c;
    ember_table_config_init(&c);
    c.dim = dim;
    c.capacity = 1024;
    c.score_policy = EMBER_SCORE_CUSTOM;
    c.seed = 7;
    c.optim.kind = EMBER_OPTIM_ADAGRAD;
    c.optim.lr = 0.05f;
    c.init.kind = EMBER_INIT_NORMAL;
    c.init.a = 0.0f;
    c.init.b = 0.02f;
    c.nonfinite = EMBER_NONFINITE_ZERO;
    c.max_capacity = 4096;
    c.max_load_factor = 0.5f;
    c.ttl_seconds = 3600;
    ember_table *t;
    ember_error err;
    if (ember_table_create(&c, NULL, &t, &err))
        die("create", &err);
    uint32_t rf = ember_table_row_floats(t);
    float rows[FIX_ROWS * 2 * 8];
    uint64_t scores[FIX_ROWS] = {100, 200, 300, 400}, versions[FIX_ROWS] = {11, 12, 13, 14};
    for (uint32_t i = 0; i < FIX_ROWS; i++)
        for (uint32_t j = 0; j < rf; j++)
            rows[i * rf + j] = fixture_value(i, j, dim);
    if (with_rows && ember_table_import(t, fix_keys, FIX_ROWS, rows, scores, versions, &err))
        die("import", &err);
    ember_table_set_epoch(t, 5);
    return t;
}

static void save(uint32_t dim, int with_rows, const char *dir, const char *name)
{
    char path[4096];
    ember_error err;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    ember_table *t = fixture_table(dim, with_rows);
    static const ember_ckpt_placement placed = {"gpu", UINT64_C(1) << 20};
    if (ember_ckpt_save(t, path, "fixture", 1, 4, &placed, NULL, &err))
        die("save", &err);
    ember_table_destroy(t);
}

static size_t slurp(const char *path, uint8_t *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die(path, NULL);
    size_t n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void spit(const char *dir, const char *name, const uint8_t *buf, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n || fclose(f))
        die(path, NULL);
}

static void put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    char path[4096];
    uint8_t valid[4096], b[4096];
    save(4, 1, dir, "valid.ckpt");
    save(4, 0, dir, "empty.ckpt");
    save(8, 1, dir, "wrong_dim.ckpt");
    snprintf(path, sizeof path, "%s/valid.ckpt", dir);
    size_t n = slurp(path, valid, sizeof valid);

    memcpy(b, valid, n);
    b[268 + 8 + 3 * 8 * FIX_ROWS + 5] ^= 0x10; /* a byte of row 0's floats */
    spit(dir, "flipped_byte.ckpt", b, n);
    spit(dir, "truncated.ckpt", valid, 300);
    memcpy(b, valid, n);
    b[0] = 'X';
    spit(dir, "wrong_magic.ckpt", b, n);
    memcpy(b, valid, n);
    put_le32(b + 8, 4);
    put_le32(b + 264, ember_crc32c(b, 264));
    spit(dir, "wrong_version.ckpt", b, n);
    memcpy(b, valid, n);
    b[16] = 5; /* dim 4 → 5, CRC left as it was */
    spit(dir, "bad_header_crc.ckpt", b, n);
    memcpy(b, valid, n);
    memset(b + n, 0xAB, 16);
    spit(dir, "trailing_garbage.ckpt", b, n + 16);
    return 0;
}
