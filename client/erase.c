/*
 * erase.c — ember_erase (the Shard service's Erase, protoc-c messages) and
 * ember_set_epoch (Admin.SetEpoch, fanned out to every shard).
 *
 * An erase is grouped like a pull (batch.h: reserved keys refused before
 * anything is sent, equal keys once, keys grouped by shard) and each shard's
 * part goes as one or more requests carrying (client_id, the shard's next
 * sequence number), the numbering pushes use, so the call machinery's retries
 * after UNAVAILABLE are applied at most once on the server.
 */
#include <stdlib.h>
#include <string.h>

#include "client/internal.h"
#include "ember/v1/ember.pb-c.h"

enum { EMBER_CALL_ERASE = 3 };

/* Most keys in one Erase request: far under the servers' default
 * --max-keys-per-request. */
#define EMBER_ERASE_CHUNK 262144u

int ember_erase(ember_client *c, const char *table, const uint64_t *keys, size_t n,
                uint64_t *erased, ember_error *err)
{
    if (erased)
        *erased = 0;
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    int rv = ember_table_name_check(table, err);
    if (rv)
        return rv;
    if (n && !keys)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "NULL keys with n > 0");
    if (!n)
        return 0;
    ember_call *op = ember_call_acquire(c, EMBER_CALL_ERASE);
    if (!op)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    ember_batch *b = &op->pull_b;
    if ((rv = ember_batch_build(b, keys, n, c->nshards, err)) != 0)
        goto out;
    for (unsigned s = 0; s < c->nshards; s++)
        for (size_t at = b->shard_off[s]; at < b->shard_off[s + 1];) {
            size_t cnt = b->shard_off[s + 1] - at;
            if (cnt > EMBER_ERASE_CHUNK)
                cnt = EMBER_ERASE_CHUNK;
            Ember__V1__EraseRequest req = EMBER__V1__ERASE_REQUEST__INIT;
            req.table = (char *)table;
            req.keys.data = (uint8_t *)(b->gkeys + at);
            req.keys.len = cnt * 8;
            req.client_id = c->client_id;
            req.sequence = atomic_fetch_add(&c->shards[s].seq, 1);
            ember_shard_call *sc =
                ember_call_add(op, s, EMBER_M_ERASE, ember__v1__erase_request__get_packed_size(&req));
            if (!sc) {
                rv = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            ember__v1__erase_request__pack(&req, sc->req_data);
            at += cnt;
        }
    ember_call_start(op);
    if ((rv = ember_call_finish(op, err)) != 0)
        goto out;
    uint64_t total = 0;
    for (size_t i = 0; i < op->ncalls; i++) {
        ember_shard_call *sc = &op->calls[i];
        Ember__V1__EraseResponse *r =
            ember__v1__erase_response__unpack(NULL, sc->resp_len, sc->resp);
        if (!r) {
            rv = ember_call_shard_error(op, sc->shard, EMBER_INTERNAL, err,
                                        "malformed Erase reply");
            goto out;
        }
        total += r->erased;
        if (r->duplicate)
            atomic_fetch_add(&c->debug_duplicate_acks, 1);
        ember__v1__erase_response__free_unpacked(r, NULL);
    }
    if (erased)
        *erased = total;
out:
    ember_call_release(op);
    return rv;
}

int ember_set_epoch(ember_client *c, const char *table, uint32_t epoch, ember_error *err)
{
    if (!c)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "no client");
    int rv = ember_table_name_check(table, err);
    if (rv)
        return rv;
    Ember__V1__SetEpochRequest req = EMBER__V1__SET_EPOCH_REQUEST__INIT;
    req.table = (char *)table;
    req.epoch = epoch;
    ember_call *op = ember_call_acquire(c, EMBER_CALL_ERASE);
    if (!op)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    size_t len = ember__v1__set_epoch_request__get_packed_size(&req);
    for (unsigned s = 0; s < c->nshards; s++) {
        ember_shard_call *sc = ember_call_add(op, s, EMBER_M_SET_EPOCH, len);
        if (!sc) {
            rv = ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        ember__v1__set_epoch_request__pack(&req, sc->req_data);
    }
    ember_call_start(op);
    rv = ember_call_finish(op, err);
out:
    ember_call_release(op);
    return rv;
}
