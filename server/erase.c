/*
 * erase.c — ember.v1.Shard/Erase: removes keys from a table, all or nothing,
 * at most once per (client_id, sequence) like a push.
 *
 * Not a hot path, so the request goes through protobuf-c rather than the
 * hand-written codec of proto/wire.h. Everything is checked before the table is
 * touched — table name, key count against --max-keys-per-request, the keys'
 * length, reserved keys (the table checks them again before erasing) — so a
 * refused erase removes nothing and its at-most-once mark is given up (a
 * corrected retry goes through).
 *
 * Ordering with pushes: an erase never joins a coalescing queue (coalesce.h).
 * It runs on the worker that received it and is answered once the keys are
 * gone. So a push that was answered before the erase was sent is erased (a
 * queued push is answered only after its batch ran), and a push sent after the
 * erase's answer lands after it; calls in flight at the same time are
 * unordered, as any two concurrent calls are.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ember/v1/ember.pb-c.h"
#include "server/dedup.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/repl.h"
#include "server/rpc.h"
#include "server/server.h"
#include "storage/hash.h"

/* Checks an erase before anything changes; on success *keys (malloc'd, the
 * caller frees) holds the n keys, aligned. */
static int erase_check(const Ember__V1__EraseRequest *r, uint64_t **keys, size_t *n,
                       ember_error *err)
{
    *keys = NULL;
    *n = 0;
    if (r->keys.len % 8)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "keys are %zu bytes, not a multiple of 8", r->keys.len);
    size_t cnt = r->keys.len / 8;
    if (cnt > srv.cfg.max_keys_per_request)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "%zu keys in one request, over this server's "
                               "--max-keys-per-request of %llu",
                               cnt, (unsigned long long)srv.cfg.max_keys_per_request);
    uint64_t *k = malloc(cnt ? cnt * 8 : 8);
    if (!k)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory for %zu keys",
                               cnt);
    if (cnt)
        memcpy(k, r->keys.data, cnt * 8);
    for (size_t i = 0; i < cnt; i++)
        if (ember_key_is_reserved(k[i])) {
            uint64_t bad = k[i];
            free(k);
            return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                                   "key index %zu is 0x%016llx, a reserved key (0x%016llx "
                                   "and up); nothing was erased",
                                   i, (unsigned long long)bad,
                                   (unsigned long long)EMBER_KEY_RESERVED_MIN);
        }
    int rc = srv_check_owner(r->keys.data, cnt, "erase: ", err);
    if (rc) {
        free(k);
        return rc;
    }
    *keys = k;
    *n = cnt;
    return 0;
}

void srv_shard_erase(srv_worker *w, srv_call *c, const uint8_t *req, size_t len)
{
    (void)w;
    ember_error err;
    ember_error_clear(&err);
    Ember__V1__EraseRequest *r = ember__v1__erase_request__unpack(NULL, len, req);
    if (!r) {
        ember_error_set(&err, EMBER_INVALID_ARGUMENT, "malformed ember.v1.EraseRequest (%zu bytes)",
                        len);
        srv_call_finish(c, err.code, err.message, NULL);
        return;
    }
    srv_table *t = NULL;
    uint64_t *keys = NULL, erased = 0;
    size_t n = 0;
    int dup = 0;
    int rc = srv_table_by_name(r->table, &t, &err);
    if (!rc)
        rc = erase_check(r, &keys, &n, &err);
    if (!rc && r->client_id && !srv_dedup_begin(srv.dedup, r->client_id, r->sequence)) {
        dup = 1;
        atomic_fetch_add_explicit(&t->counters.duplicate_erases, 1, memory_order_relaxed);
        srv_log(SRV_LOG_DEBUG, "duplicate_erase", "table=%s client_id=%llu sequence=%llu",
                t->name, (unsigned long long)r->client_id, (unsigned long long)r->sequence);
    } else if (!rc) {
        rc = ember_table_erase(t->table, keys, n, &erased, &err);
        if (r->client_id) { /* the table refuses before it erases: nothing to keep */
            if (rc) {
                srv_dedup_abort(srv.dedup, r->client_id, r->sequence);
            } else {
                srv_dedup_end(srv.dedup, r->client_id, r->sequence);
                srv_repl_dedup_record(r->client_id, r->sequence); /* followers: repl.h */
            }
        }
        if (!rc)
            atomic_fetch_add_explicit(&t->counters.erased, erased, memory_order_relaxed);
    }
    if (rc) {
        srv_call_finish(c, rc, err.message, NULL);
    } else {
        srv_metrics_keys(SRV_M_ERASE, n, 0, 0);
        Ember__V1__EraseResponse out = EMBER__V1__ERASE_RESPONSE__INIT;
        out.erased = erased;
        out.duplicate = dup;
        grpc_slice s = grpc_slice_malloc(ember__v1__erase_response__get_packed_size(&out));
        ember__v1__erase_response__pack(&out, GRPC_SLICE_START_PTR(s));
        srv_call_finish(c, EMBER_OK, NULL, &s);
    }
    free(keys);
    srv_table_unref(t);
    ember__v1__erase_request__free_unpacked(r, NULL);
}
