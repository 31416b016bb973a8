/*
 * test_durability_file.h — a checkpoint file's rows, read without the server
 * (test_durability_file.c).
 */
#ifndef EMBER_IT_DURABILITY_FILE_H
#define EMBER_IT_DURABILITY_FILE_H

#include <stddef.h>
#include <stdint.h>

typedef struct dur_ckpt {
    uint32_t dim, shard_index, shard_count;
    uint64_t version, created_ns;
    size_t n;          /* rows */
    uint64_t *keys;    /* n */
    float *rows;       /* n × dim, the embeddings */
} dur_ckpt;

/* Verifies and reads the whole checkpoint at `path`. Returns 0, or an ember
 * status code with the reason in msg. */
int dur_ckpt_read(const char *path, dur_ckpt *out, char *msg, size_t cap);
void dur_ckpt_free(dur_ckpt *c);

/* The placement the checkpoint at `path` carries: backend (cap bytes, "" for
 * none) and hbm_bytes. Returns 0, or an ember status code with msg. */
int dur_ckpt_placement(const char *path, char *backend, size_t cap, uint64_t *hbm_bytes,
                       char *msg, size_t msg_cap);
/* Rewrites the checkpoint at `path` in place with the same rows, name, shard and
 * version, and the placement (backend, hbm_bytes). Returns 0, or a status. */
int dur_ckpt_set_placement(const char *path, const char *backend, uint64_t hbm_bytes,
                           char *msg, size_t msg_cap);

#endif
