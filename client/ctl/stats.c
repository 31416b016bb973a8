/*
 * stats.c — what `stats` (commands.c) and `stats --watch` (watch.c) share: the
 * per-table counters summed over shards, and their JSON (see ctl.h).
 */
#include "ctl.h"

#include <stddef.h>

#include "ember/v1/ember.pb-c.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* ---- per-table statistics, summed over shards ------------------------------------ */

#define STAT(f) {#f, offsetof(Ember__V1__TableStats, f)}
static const struct stat_field {
    const char *name;
    size_t off;
} stat_fields[] = {
    STAT(size), STAT(capacity), STAT(version), STAT(evictions), STAT(evicted),
    STAT(insert_refused), STAT(admission_drops), STAT(nonfinite_zeroed), STAT(bytes_host),
    STAT(bytes_device), STAT(pulls), STAT(pushes), STAT(keys_pulled), STAT(keys_pushed),
    STAT(duplicate_pushes), STAT(coalesced_batches), STAT(coalesced_calls),
    STAT(coalesced_keys), STAT(coalesced_split_calls), STAT(slots_device), STAT(slots_host),
    STAT(grows), STAT(grow_failures), STAT(expired), STAT(erased),
};

static uint64_t *stat_at(Ember__V1__TableStats *s, size_t off)
{
    return (uint64_t *)((char *)s + off);
}

void ctl_stats_add(Ember__V1__TableStats *total, const Ember__V1__TableStats *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < COUNT(stat_fields); i++) {
        uint64_t *t = stat_at(total, stat_fields[i].off);
        uint64_t v = *stat_at((Ember__V1__TableStats *)s, stat_fields[i].off);
        if (stat_fields[i].off == offsetof(Ember__V1__TableStats, version))
            *t = v > *t ? v : *t;
        else
            *t += v;
    }
    total->epoch = s->epoch > total->epoch ? s->epoch : total->epoch;
    total->load_factor = total->capacity ? (double)total->size / (double)total->capacity : 0;
}

void ctl_json_stats(ctl_json *j, const char *key, const Ember__V1__TableStats *s)
{
    static const Ember__V1__TableStats zero = EMBER__V1__TABLE_STATS__INIT;
    if (!s)
        s = &zero;
    ctl_json_object(j, key);
    for (size_t i = 0; i < COUNT(stat_fields); i++)
        ctl_json_u64(j, stat_fields[i].name,
                     *stat_at((Ember__V1__TableStats *)s, stat_fields[i].off));
    ctl_json_double(j, "load_factor", s->load_factor);
    ctl_json_u64(j, "epoch", s->epoch); /* a shard's; in a sum, the highest */
    ctl_json_end_object(j);
}

void ctl_json_stats_servers(ctl_json *j, const ctl *c, const ctl_reply *r,
                            const double *req_rate)
{
    uint64_t requests = 0, errors = 0;
    for (unsigned i = 0; i < c->n; i++)
        if (r[i].code == 0) {
            requests += ((const Ember__V1__GetStatsResponse *)r[i].msg)->requests;
            errors += ((const Ember__V1__GetStatsResponse *)r[i].msg)->errors;
        }
    ctl_json_object(j, "servers");
    ctl_json_u64(j, "requests", requests);
    ctl_json_u64(j, "errors", errors);
    ctl_json_array(j, "shards");
    for (unsigned i = 0; i < c->n; i++) {
        if (r[i].code != 0)
            continue;
        const Ember__V1__GetStatsResponse *s = (const Ember__V1__GetStatsResponse *)r[i].msg;
        ctl_json_object(j, NULL);
        ctl_json_shard(j, r[i].shard);
        ctl_json_u64(j, "requests", s->requests);
        ctl_json_u64(j, "errors", s->errors);
        ctl_json_u64(j, "uptime_seconds", s->uptime_seconds);
        if (req_rate)
            ctl_json_double(j, "requests_per_second", req_rate[i]);
        ctl_json_end_object(j);
    }
    ctl_json_end_array(j);
    ctl_json_end_object(j);
}
