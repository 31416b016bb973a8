/* registry.c — tables by name, rwlock + refcounts (registry.h). */
#include "server/registry.h"

#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

struct srv_registry {
    pthread_rwlock_t lock;
    srv_table **tables; /* unsorted, `count` used */
    unsigned count, max;
};

srv_registry *srv_registry_create(unsigned max_tables)
{
    srv_registry *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->tables = calloc(max_tables ? max_tables : 1, sizeof *r->tables);
    if (!r->tables) {
        free(r);
        return NULL;
    }
    r->max = max_tables;
    pthread_rwlock_init(&r->lock, NULL);
    return r;
}

void srv_registry_destroy(srv_registry *r)
{
    if (!r)
        return;
    for (unsigned i = 0; i < r->count; i++)
        srv_table_unref(r->tables[i]);
    free(r->tables);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

void srv_table_ref(srv_table *t) { atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed); }

void srv_table_unref(srv_table *t)
{
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        for (int k = 0; k < SRV_CO_KINDS; k++)
            srv_co_queue_destroy(&t->co[k]);
        ember_table_destroy(t->table);
        free(t);
    }
}

static int find_locked(const srv_registry *r, const char *name, size_t len)
{
    for (unsigned i = 0; i < r->count; i++)
        if (strlen(r->tables[i]->name) == len && memcmp(r->tables[i]->name, name, len) == 0)
            return (int)i;
    return -1;
}

srv_table *srv_registry_get(srv_registry *r, const char *name, size_t len)
{
    srv_table *t = NULL;
    pthread_rwlock_rdlock(&r->lock);
    int i = find_locked(r, name, len);
    if (i >= 0) {
        t = r->tables[i];
        srv_table_ref(t);
    }
    pthread_rwlock_unlock(&r->lock);
    return t;
}

/* Entry identities: from the clock at the first one, so that another process
 * (a restarted leader) does not hand out the same ones. */
static uint64_t next_uid(void)
{
    static _Atomic uint64_t next;
    uint64_t v = atomic_load(&next);
    if (!v) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t first = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        atomic_compare_exchange_strong(&next, &v, first);
    }
    return atomic_fetch_add(&next, 1);
}

static srv_table *entry_new(const char *name, ember_table *table)
{
    srv_table *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->table = table;
    t->uid = next_uid();
    for (int k = 0; k < SRV_CO_KINDS; k++)
        srv_co_queue_init(&t->co[k]);
    atomic_init(&t->refs, 1);
    return t;
}

int srv_registry_add(srv_registry *r, const char *name, ember_table *table,
                     const ember_ckpt_placement *placement, srv_table **existing,
                     ember_error *err)
{
    size_t len = strlen(name);
    if (existing)
        *existing = NULL;
    if (!ember_table_name_valid(name, len))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "table name '%.80s' is not [a-z0-9_.-]{1,64}", name);
    pthread_rwlock_wrlock(&r->lock);
    int i = find_locked(r, name, len);
    if (i >= 0) {
        if (existing) {
            *existing = r->tables[i];
            srv_table_ref(*existing);
        }
        pthread_rwlock_unlock(&r->lock);
        return ember_error_set(err, EMBER_ALREADY_EXISTS, "table '%s' already exists", name);
    }
    if (r->count >= r->max) {
        pthread_rwlock_unlock(&r->lock);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED,
                               "this shard already holds %u tables (--max-tables)", r->max);
    }
    srv_table *t = entry_new(name, table);
    if (!t) {
        pthread_rwlock_unlock(&r->lock);
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (placement)
        t->placement = *placement;
    r->tables[r->count++] = t;
    pthread_rwlock_unlock(&r->lock);
    return 0;
}

int srv_registry_drop(srv_registry *r, const char *name, ember_error *err)
{
    pthread_rwlock_wrlock(&r->lock);
    int i = find_locked(r, name, strlen(name));
    if (i < 0) {
        pthread_rwlock_unlock(&r->lock);
        return ember_error_set(err, EMBER_NOT_FOUND, "no table '%.80s'", name);
    }
    srv_table *t = r->tables[i];
    r->tables[i] = r->tables[--r->count];
    pthread_rwlock_unlock(&r->lock);
    srv_table_unref(t);
    return 0;
}

int srv_registry_replace(srv_registry *r, srv_table *old, ember_table *table,
                         ember_error *err)
{
    srv_table *t = entry_new(old->name, table);
    if (!t)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    t->placement = old->placement;
    atomic_store(&t->ack, atomic_load(&old->ack));
    atomic_store(&t->ack_replicas, atomic_load(&old->ack_replicas));
    pthread_rwlock_wrlock(&r->lock);
    unsigned i;
    for (i = 0; i < r->count && r->tables[i] != old; i++)
        ;
    if (i == r->count) {
        pthread_rwlock_unlock(&r->lock);
        for (int k = 0; k < SRV_CO_KINDS; k++)
            srv_co_queue_destroy(&t->co[k]);
        free(t);
        return ember_error_set(err, EMBER_NOT_FOUND, "table '%s' was dropped meanwhile",
                               old->name);
    }
#define CARRY(f) atomic_store(&t->counters.f, atomic_load(&old->counters.f))
    CARRY(pulls);
    CARRY(pushes);
    CARRY(keys_pulled);
    CARRY(keys_pushed);
    CARRY(duplicate_pushes);
    CARRY(co_batches);
    CARRY(co_calls);
    CARRY(co_keys);
    CARRY(co_max_keys);
    CARRY(co_max_calls);
    CARRY(co_split_calls);
    CARRY(ckpt_saves);
    CARRY(ckpt_failures);
    CARRY(ckpt_saved_ms);
    CARRY(ckpt_save_ms);
#undef CARRY
    r->tables[i] = t;
    pthread_rwlock_unlock(&r->lock);
    srv_table_unref(old); /* the registry's reference */
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(srv_table *const *)a)->name, (*(srv_table *const *)b)->name);
}

srv_table **srv_registry_list(srv_registry *r, size_t *n)
{
    pthread_rwlock_rdlock(&r->lock);
    srv_table **list = malloc((r->count ? r->count : 1) * sizeof *list);
    *n = 0;
    if (list) {
        for (unsigned i = 0; i < r->count; i++) {
            list[i] = r->tables[i];
            srv_table_ref(list[i]);
        }
        *n = r->count;
    }
    pthread_rwlock_unlock(&r->lock);
    if (list)
        qsort(list, *n, sizeof *list, by_name);
    return list;
}

void srv_registry_list_free(srv_table **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        srv_table_unref(list[i]);
    free(list);
}
