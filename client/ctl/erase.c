/*
 * erase.c — `emberctl erase` (Shard.Erase: each key to the shard the key→shard
 * function picks) and `emberctl epoch` (Admin.SetEpoch on every shard).
 */
#include "ctl.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/v1/ember.pb-c.h"

/* Most keys `erase` reads from a file (and sends to one shard at once). */
#define ERASE_MAX_KEYS (1u << 20)

/* A key: decimal, or hex with 0x. */
static int parse_key(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end || *s == '-')
        return -1;
    *out = v;
    return 0;
}

/* Keys from a file: one per line (blank lines and lines starting with # skipped). */
static int read_keys(const ctl_args *a, const char *path, uint64_t **keys, size_t *n,
                     size_t *cap)
{
    FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!f)
        return ctl_usage_error(a, "--file %s: %s", path, strerror(errno));
    char line[128];
    unsigned long lineno = 0;
    int rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        s[strcspn(s, " \t\r\n")] = '\0';
        if (!*s || *s == '#')
            continue;
        uint64_t k;
        if (parse_key(s, &k)) {
            rc = ctl_usage_error(a, "--file %s line %lu: '%s' is not a key", path, lineno, s);
            break;
        }
        if (*n >= ERASE_MAX_KEYS) {
            rc = ctl_usage_error(a, "--file %s: more than %u keys", path, ERASE_MAX_KEYS);
            break;
        }
        if (*n == *cap) {
            size_t c2 = *cap ? 2 * *cap : 1024;
            uint64_t *p = realloc(*keys, c2 * sizeof *p);
            if (!p) {
                rc = ctl_usage_error(a, "out of memory");
                break;
            }
            *keys = p;
            *cap = c2;
        }
        (*keys)[(*n)++] = k;
    }
    if (f != stdin)
        fclose(f);
    return rc;
}

int ctl_cmd_erase(ctl *c, const ctl_args *a)
{
    const char *file = ctl_opt(a, "--file");
    uint64_t *keys = NULL;
    size_t n = 0, cap = 0;
    if (file && a->n_pos > 1)
        return ctl_usage_error(a, "give keys or --file, not both");
    if (!file && a->n_pos < 2)
        return ctl_usage_error(a, "give the keys to erase, or --file PATH");
    if (file) {
        int rc = read_keys(a, file, &keys, &n, &cap);
        if (rc) {
            free(keys);
            return rc;
        }
    } else {
        keys = calloc(a->n_pos, sizeof *keys);
        if (!keys)
            return ctl_usage_error(a, "out of memory");
        for (unsigned i = 1; i < a->n_pos; i++)
            if (parse_key(a->pos[i], &keys[n++])) {
                free(keys);
                return ctl_usage_error(a, "'%s' is not a key (decimal, or hex with 0x)",
                                       a->pos[i]);
            }
    }
    for (size_t i = 0; i < n; i++)
        if (keys[i] >= EMBER_KEY_RESERVED_MIN) {
            uint64_t k = keys[i];
            free(keys);
            return ctl_usage_error(a, "key 0x%016" PRIx64 " is reserved (0x%016" PRIx64
                                   " and up): nothing was erased",
                                   k, (uint64_t)EMBER_KEY_RESERVED_MIN);
        }

    /* Each selected shard gets its own keys, one call at a time: the same
     * ctl_call with a one-shard view of the list. */
    ctl_reply *r = ctl_replies_new(c);
    uint64_t *mine = malloc((n ? n : 1) * sizeof *mine);
    if (!r || !mine) {
        free(r);
        free(mine);
        free(keys);
        return CTL_EXIT_RPC;
    }
    for (unsigned i = 0; i < c->n; i++) {
        size_t m = 0;
        for (size_t k = 0; k < n; k++)
            if (ember_shard_of(keys[k], c->count) == c->shards[i].index)
                mine[m++] = keys[k];
        Ember__V1__EraseRequest req = EMBER__V1__ERASE_REQUEST__INIT;
        req.table = (char *)a->pos[0];
        req.keys.data = (uint8_t *)mine;
        req.keys.len = m * 8;
        ctl one = *c;
        one.shards = &c->shards[i];
        one.n = 1;
        ctl_call(&one, "/ember.v1.Shard/Erase", &req.base, &ember__v1__erase_response__descriptor,
                 0, &r[i]);
    }
    free(mine);
    free(keys);

    ctl_json j;
    uint64_t total = 0;
    unsigned ok = 0;
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", a->pos[0]);
        ctl_json_array(&j, "shards");
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        uint64_t e = ((const Ember__V1__EraseResponse *)r[i].msg)->erased;
        total += e;
        ok++;
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_u64(&j, "erased", e);
            ctl_json_end_object(&j);
        } else {
            printf("shard %u (%s): %" PRIu64 " keys erased\n", r[i].shard->index,
                   r[i].shard->address, e);
        }
    }
    if (c->json) {
        ctl_json_end_array(&j);
        ctl_json_u64(&j, "erased", total);
        ctl_json_u64(&j, "keys", n);
    } else if (ok > 1) {
        printf("all: %" PRIu64 " of %zu keys erased from %s\n", total, n, a->pos[0]);
    }
    return ctl_finish(c, &j, r);
}

int ctl_cmd_epoch(ctl *c, const ctl_args *a)
{
    uint64_t e;
    if (ctl_parse_u64(a, "EPOCH", a->pos[1], 0, UINT32_MAX, &e) != 0)
        return CTL_EXIT_USAGE;
    Ember__V1__SetEpochRequest req = EMBER__V1__SET_EPOCH_REQUEST__INIT;
    req.table = (char *)a->pos[0];
    req.epoch = (uint32_t)e;
    ctl_reply *r = ctl_replies_new(c);
    if (!r)
        return CTL_EXIT_RPC;
    ctl_call(c, "/ember.v1.Admin/SetEpoch", &req.base, &ember__v1__set_epoch_response__descriptor,
             0, r);
    ctl_json j;
    if (c->json) {
        ctl_json_init(&j, stdout);
        ctl_json_object(&j, NULL);
        ctl_json_str(&j, "table", req.table);
        ctl_json_u64(&j, "epoch", req.epoch);
        ctl_json_array(&j, "shards");
    }
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        uint32_t prev = ((const Ember__V1__SetEpochResponse *)r[i].msg)->previous;
        if (c->json) {
            ctl_json_object(&j, NULL);
            ctl_json_shard(&j, r[i].shard);
            ctl_json_u64(&j, "previous", prev);
            ctl_json_end_object(&j);
        } else {
            printf("shard %u (%s): epoch %u (was %u)\n", r[i].shard->index,
                   r[i].shard->address, (unsigned)req.epoch, (unsigned)prev);
        }
    }
    if (c->json)
        ctl_json_end_array(&j);
    return ctl_finish(c, &j, r);
}
