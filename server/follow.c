/*
 * follow.c — a follower's tail of its leader (repl.h, ember-server --replica-of).
 *
 * One thread, in rounds: every FOLLOW_LIST_MS it lists the leader's tables
 * (creating, with the leader's config on this server's own backend, those it
 * lacks, and dropping those the leader no longer has or made again: TableInfo.uid);
 * then, table by table, one Export of the rows written after the version it
 * holds (its progress request, which acknowledges that version), imported whole
 * (rows, optimizer state, scores and versions as the leader has them). A delta
 * of a table with nothing newer is a long poll (ExportRequest.wait_ms): the
 * leader holds it until a write on any of its tables (at once for a replicated
 * push, else within its replication thread's 2 ms tick) or FOLLOW_WAIT_MS, so
 * the follower neither sleeps nor spins, and a replicated push waits about one
 * round trip and one import. Removals carry no version: when the leader's count
 * of removed rows moved (at once when idle, at most every FOLLOW_RECONCILE_MS
 * under load), or when idle the sizes differ, the follower
 * reads the leader's keys (a keys-only export) and erases the rows it holds
 * that the leader no longer has, written at or before that export began; if it
 * finds it lacks rows while idle, it copies the table again from version 0.
 *
 * The follower's own TTL sweeper stands aside (expire.c): rows go when the
 * leader removes them, so the copy never runs ahead of the leader.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/rpc.h"
#include "ember/v1/ember.pb-c.h"
#include "server/ckpt.h"
#include "server/log.h"
#include "server/repl.h"
#include "server/server.h"

#define FOLLOW_LIST_MS 500
#define FOLLOW_WAIT_MS 200      /* a delta's long poll (ExportRequest.wait_ms) */
#define FOLLOW_RECONCILE_MS 1000
#define FOLLOW_ROWS_PER_MESSAGE 4096
#define FOLLOW_DELTA_TIMEOUT_MS 10000   /* a delta; a stopped leader holds it no longer */
#define FOLLOW_COPY_TIMEOUT_MS 600000   /* a whole table (version 0) or its keys */

typedef struct ftable {
    char name[EMBER_TABLE_NAME_MAX + 1];
    uint64_t uid;            /* the leader's entry this copies (0: none yet) */
    uint64_t applied;        /* every row the leader wrote at or below it is here */
    uint64_t leader_version; /* the leader's version at its last export's start */
    uint64_t leader_size;
    uint64_t caught_ms;      /* as of when the last complete delta holds everything */
    uint64_t polling_ms;     /* a delta in flight since then; 0: none */
    uint64_t reconciled_ms;
    uint64_t removed;        /* the leader's removals when it last reconciled */
    int listed;
} ftable;

static struct {
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int role;         /* SRV_REPL_* */
    _Atomic uint64_t term;   /* the leader term this server is at */
    /* Changes of role and the work of the follower's tail exclude each other:
     * a promotion waits for an import in progress, and nothing from the old
     * leader is written after it. */
    pthread_mutex_t apply_mu;
    char leader[256];        /* followed (under mu); "" on a leader */
    atomic_int retarget;     /* the leader changed (Follow): reopen, start over */
    char fence_addr[256], fence_advertise[256]; /* a new leader's Follow calls */
    _Atomic uint64_t leader_term; /* the followed leader's, from its exports */
    uint64_t dedup_next;     /* the leader's log of applied pairs: held up to here */
    uint64_t fence_until_ms;
    grpc_channel *ch;
    char ch_target[256];     /* what ch is open to */
    char id[64];
    char token[4096];
    pthread_mutex_t mu;      /* guards the tables' numbers for srv_follow_lag */
    ftable *t;
    size_t n, cap;
    uint64_t started_ms;
    _Atomic uint64_t listed_ms;   /* the last list of the leader's tables; 0: list now */
    int reachable;           /* the last call to the leader worked (logged on change) */
    /* scratch: one chunk's rows, aligned */
    uint64_t *keys, *scores, *versions;
    float *rows;
    size_t rows_cap, floats_cap;
} fo = {.mu = PTHREAD_MUTEX_INITIALIZER, .apply_mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int srv_follow_role_id(void) { return atomic_load(&fo.role); }

int srv_follow_active(void) { return atomic_load(&fo.role) == SRV_REPL_FOLLOWER; }

const char *srv_follow_role(void)
{
    switch (atomic_load(&fo.role)) {
    case SRV_REPL_FOLLOWER: return "follower";
    case SRV_REPL_FENCED: return "fenced";
    default: return "leader";
    }
}

uint64_t srv_follow_term(void) { return atomic_load(&fo.term); }

void srv_follow_leader(char *buf, size_t cap)
{
    pthread_mutex_lock(&fo.mu);
    snprintf(buf, cap, "%s", srv_follow_active() ? fo.leader : "");
    pthread_mutex_unlock(&fo.mu);
}

int srv_follow_refuse(const char *what, ember_error *err)
{
    char leader[256];
    switch (atomic_load(&fo.role)) {
    case SRV_REPL_FOLLOWER:
        srv_follow_leader(leader, sizeof leader);
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "not the leader: follower of %s at term %llu (%s goes to the "
                               "leader; this server serves pulls without insert)",
                               leader, (unsigned long long)srv_follow_term(), what);
    case SRV_REPL_FENCED:
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "not the leader: fenced, a newer leader took term %llu (%s goes "
                               "to the new leader; this server's rows may be stale)",
                               (unsigned long long)srv_follow_term(), what);
    default:
        return 0;
    }
}

/* The term into <checkpoint-dir>/term (a temporary file renamed over it), so a
 * restarted server does not come back at an older term. */
static void term_save(uint64_t term)
{
    if (!*srv.cfg.checkpoint_dir)
        return;
    char path[SRV_PATH_MAX + 16], tmp[SRV_PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/term", srv.cfg.checkpoint_dir);
    snprintf(tmp, sizeof tmp, "%s/term.tmp", srv.cfg.checkpoint_dir);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%llu\n", (unsigned long long)term);
    int ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok &= fclose(f) == 0;
    if (!ok || rename(tmp, path))
        srv_log(SRV_LOG_WARN, "term_not_saved", "path=%s term=%llu", path,
                (unsigned long long)term);
}

/* Raises the term to at least `term`; 1 when it moved (saved). */
static int term_raise(uint64_t term)
{
    uint64_t cur = atomic_load(&fo.term);
    while (cur < term && !atomic_compare_exchange_weak(&fo.term, &cur, term))
        ;
    if (cur >= term)
        return 0;
    term_save(term);
    return 1;
}

int srv_follow_check_term(uint64_t term, const char *what, ember_error *err)
{
    if (term <= atomic_load(&fo.term))
        return 0;
    pthread_mutex_lock(&fo.apply_mu);
    int was = atomic_load(&fo.role);
    if (was == SRV_REPL_LEADER)
        atomic_store(&fo.role, SRV_REPL_FENCED);
    term_raise(term);
    pthread_mutex_unlock(&fo.apply_mu);
    if (was == SRV_REPL_LEADER)
        srv_log(SRV_LOG_WARN, "fenced", "term=%llu reason=a_push_carried_a_newer_term",
                (unsigned long long)term);
    return srv_follow_refuse(what, err);
}

void srv_follow_lag(uint64_t *versions, uint64_t *ms)
{
    *versions = *ms = 0;
    if (!srv_follow_active())
        return;
    uint64_t now = mono_ms(), oldest = now;
    pthread_mutex_lock(&fo.mu);
    if (!fo.n) /* no table yet: since the last list of the leader's tables */
        oldest = fo.listed_ms ? fo.listed_ms : fo.started_ms;
    for (size_t i = 0; i < fo.n; i++) {
        const ftable *f = &fo.t[i];
        *versions += f->leader_version > f->applied ? f->leader_version - f->applied : 0;
        /* a long poll the leader holds (its last delta left this table
         * current): the leader answers it within milliseconds of a write, so
         * the copy is current while it is no older than the poll's bound */
        if (f->caught_ms && f->polling_ms && f->applied >= f->leader_version &&
            now - f->polling_ms <= FOLLOW_WAIT_MS + 100)
            continue;
        uint64_t c = f->caught_ms ? f->caught_ms : fo.started_ms;
        if (c < oldest)
            oldest = c;
    }
    pthread_mutex_unlock(&fo.mu);
    *ms = now > oldest ? now - oldest : 0;
}

static void reachable(int ok, const ember_error *err)
{
    if (ok == fo.reachable)
        return;
    fo.reachable = ok;
    if (ok) {
        srv_log(SRV_LOG_INFO, "leader_reachable", "leader=%s", fo.ch_target);
    } else {
        char q[600];
        srv_log(SRV_LOG_WARN, "leader_unreachable", "leader=%s reason=%s", fo.ch_target,
                srv_log_q(q, sizeof q, err->message));
    }
}

static ftable *ftable_of(const char *name, int add)
{
    for (size_t i = 0; i < fo.n; i++)
        if (!strcmp(fo.t[i].name, name))
            return &fo.t[i];
    if (!add)
        return NULL;
    if (fo.n == fo.cap) {
        size_t cap = fo.cap ? 2 * fo.cap : 16;
        ftable *t = realloc(fo.t, cap * sizeof *t);
        if (!t)
            return NULL;
        fo.t = t;
        fo.cap = cap;
    }
    ftable *f = &fo.t[fo.n++];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    return f;
}

static int local_admin_locked(srv_unary_fn fn, const ProtobufCMessage *m, ember_error *err);

/* Runs an Admin handler of this server on `m`, as a call from the leader
 * would, while this server follows (not once it is promoted). */
static int local_admin(srv_unary_fn fn, const ProtobufCMessage *m, ember_error *err)
{
    pthread_mutex_lock(&fo.apply_mu);
    int rc = EMBER_ABORTED;
    if (srv_follow_active()) /* not after a promotion */
        rc = local_admin_locked(fn, m, err);
    else
        ember_error_set(err, rc, "no longer a follower");
    pthread_mutex_unlock(&fo.apply_mu);
    return rc;
}

static int local_admin_locked(srv_unary_fn fn, const ProtobufCMessage *m, ember_error *err)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    protobuf_c_message_pack(m, buf);
    grpc_slice resp;
    int rc = fn(NULL, buf, len, &resp, err);
    free(buf);
    if (!rc)
        grpc_slice_unref(resp);
    return rc;
}

static void local_drop(const char *name)
{
    ember_error err;
    Ember__V1__DropTableRequest d = EMBER__V1__DROP_TABLE_REQUEST__INIT;
    d.name = (char *)name;
    d.if_exists = 1;
    if (!local_admin(srv_admin_drop, &d.base, &err))
        srv_log(SRV_LOG_INFO, "follower_table_dropped", "table=%s", name);
}

/* The leader's table `ti` here: created when missing, made again when the
 * leader's was (uid) or its rows differ; its settings that may change follow. */
static void follow_table(const Ember__V1__TableInfo *ti)
{
    ember_error err;
    if (!ti->name || !ti->config)
        return;
    pthread_mutex_lock(&fo.mu);
    ftable *f = ftable_of(ti->name, 1);
    pthread_mutex_unlock(&fo.mu);
    if (!f)
        return;
    f->listed = 1;
    srv_table *local = srv_registry_get(srv.registry, ti->name, strlen(ti->name));
    if (f->uid != ti->uid) {
        /* a table this follower copied from another entry (made again on the
         * leader), or one restored here whose rows are not the leader's shape */
        const ember_table_config *c = local ? ember_table_config_of(local->table) : NULL;
        if (local && (f->uid || c->dim != ti->config->dim ||
                      !ti->config->optimizer ||
                      (int)c->optim.kind != (int)ti->config->optimizer->kind)) {
            srv_table_unref(local);
            local = NULL;
            local_drop(ti->name);
        }
        pthread_mutex_lock(&fo.mu);
        f->uid = ti->uid;
        f->applied = 0;
        f->caught_ms = 0;
        pthread_mutex_unlock(&fo.mu);
    }
    if (!local) {
        Ember__V1__CreateTableRequest cr = EMBER__V1__CREATE_TABLE_REQUEST__INIT;
        Ember__V1__TableConfig cfg = *ti->config;
        cfg.backend = (char *)""; /* this server's own backend and --hbm-bytes */
        cfg.hbm_bytes = 0;
        cr.name = ti->name;
        cr.config = &cfg;
        cr.if_not_exists = 1;
        if (local_admin(srv_admin_create, &cr.base, &err)) {
            char q[600];
            srv_log(SRV_LOG_ERROR, "follower_create_failed", "table=%s reason=%s", ti->name,
                    srv_log_q(q, sizeof q, err.message));
            return;
        }
        srv_log(SRV_LOG_INFO, "follower_table_created", "table=%s leader_uid=%llu", ti->name,
                (unsigned long long)ti->uid);
        local = srv_registry_get(srv.registry, ti->name, strlen(ti->name));
        if (!local)
            return;
    }
    if (atomic_load(&local->ack) != (int)ti->config->ack ||
        atomic_load(&local->ack_replicas) != ti->config->ack_replicas) {
        /* kept with the copy: a follower promoted and restarted keeps it */
        atomic_store(&local->ack, (int)ti->config->ack);
        atomic_store(&local->ack_replicas, ti->config->ack_replicas);
        srv_ckpt_ack_keep(local);
    }
    if (ember_table_ttl(local->table) != ti->config->ttl_seconds)
        ember_table_set_ttl(local->table, ti->config->ttl_seconds, &err);
    srv_table_unref(local);
}

/* Lists the leader's tables and follows them; drops what it no longer has. */
static int sync_tables(void)
{
    ember_error err;
    uint8_t *resp = NULL;
    size_t len = 0;
    static const uint8_t empty[1];
    int rc = ember_rpc_unary(fo.ch, "/ember.v1.Admin/ListTables", empty, 0, 5000, &resp, &len,
                             &err);
    reachable(!rc, &err);
    if (rc)
        return rc;
    Ember__V1__ListTablesResponse *l = ember__v1__list_tables_response__unpack(NULL, len, resp);
    free(resp);
    if (!l)
        return EMBER_INTERNAL;
    for (size_t i = 0; i < fo.n; i++)
        fo.t[i].listed = 0;
    for (size_t i = 0; i < l->n_tables; i++)
        follow_table(l->tables[i]);
    ember__v1__list_tables_response__free_unpacked(l, NULL);
    pthread_mutex_lock(&fo.mu);
    for (size_t i = 0; i < fo.n;) {
        if (fo.t[i].listed) {
            i++;
            continue;
        }
        char name[EMBER_TABLE_NAME_MAX + 1];
        snprintf(name, sizeof name, "%s", fo.t[i].name);
        fo.t[i] = fo.t[--fo.n];
        pthread_mutex_unlock(&fo.mu);
        local_drop(name);
        pthread_mutex_lock(&fo.mu);
    }
    pthread_mutex_unlock(&fo.mu);
    /* tables here the leader never had (a checkpoint of another time) */
    size_t n;
    srv_table **mine = srv_registry_list(srv.registry, &n);
    for (size_t i = 0; mine && i < n; i++)
        if (!ftable_of(mine[i]->name, 0))
            local_drop(mine[i]->name);
    srv_registry_list_free(mine, n);
    fo.listed_ms = mono_ms();
    return 0;
}

static int scratch(size_t rows, size_t row_floats)
{
    if (rows > fo.rows_cap) {
        free(fo.keys);
        free(fo.scores);
        free(fo.versions);
        fo.keys = malloc(rows * 8);
        fo.scores = malloc(rows * 8);
        fo.versions = malloc(rows * 8);
        fo.rows_cap = fo.keys && fo.scores && fo.versions ? rows : 0;
        if (!fo.rows_cap)
            return -1;
    }
    if (rows * row_floats > fo.floats_cap) {
        free(fo.rows);
        fo.rows = malloc(rows * row_floats * 4);
        fo.floats_cap = fo.rows ? rows * row_floats : 0;
        if (!fo.rows)
            return -1;
    }
    return 0;
}

/* The leader's applied (client_id, sequence) pairs, into this server's window,
 * so that once promoted it answers their retries as duplicates. */
static void dedup_apply(const Ember__V1__ExportChunk *ch)
{
    size_t n = ch->dedup_clients.len / 8;
    if (ch->dedup_next < fo.dedup_next) { /* the leader's log started over (a restart) */
        fo.dedup_next = 0;
        return;
    }
    if (ch->dedup_sequences.len != n * 8)
        return;
    pthread_mutex_lock(&fo.apply_mu);
    if (srv_follow_active()) {
        for (size_t i = 0; i < n; i++) {
            uint64_t client, seq;
            memcpy(&client, ch->dedup_clients.data + 8 * i, 8);
            memcpy(&seq, ch->dedup_sequences.data + 8 * i, 8);
            if (client && srv_dedup_begin(srv.dedup, client, seq))
                srv_dedup_end(srv.dedup, client, seq);
        }
        fo.dedup_next = ch->dedup_next;
        if (ch->dedup_lost)
            srv_log(SRV_LOG_WARN, "follower_dedup_behind", "lost_pairs=%llu",
                    (unsigned long long)ch->dedup_lost);
    }
    pthread_mutex_unlock(&fo.apply_mu);
}

typedef struct export_head {
    uint64_t stable, version, size, uid, removed;
    uint64_t begun_ms; /* when its first chunk came: the copy is complete as of then */
} export_head;

/* One Export of `table` from the leader; each chunk goes to on_chunk. */
static int leader_export(const char *table, uint64_t after, int keys_only, export_head *h,
                         int (*on_chunk)(void *ud, const Ember__V1__ExportChunk *ch),
                         void *ud, ember_error *err)
{
    Ember__V1__ExportRequest r = EMBER__V1__EXPORT_REQUEST__INIT;
    r.table = (char *)table;
    r.after_version = after;
    r.full_rows = !keys_only;
    r.keys_only = keys_only;
    r.rows_per_message = FOLLOW_ROWS_PER_MESSAGE;
    r.follower_id = keys_only ? (char *)"" : fo.id; /* only a delta acknowledges */
    r.follower_addr = srv.cfg.listen;
    r.wait_ms = after && !keys_only ? FOLLOW_WAIT_MS : 0;
    r.dedup_after = fo.dedup_next;
    size_t len = protobuf_c_message_get_packed_size(&r.base);
    uint8_t buf[1024];
    if (len > sizeof buf)
        return ember_error_set(err, EMBER_INTERNAL, "export request too large");
    protobuf_c_message_pack(&r.base, buf);
    ember_rpc_stream *s = ember_rpc_stream_open(
        fo.ch, "/ember.v1.Admin/Export", buf, len,
        after && !keys_only ? FOLLOW_DELTA_TIMEOUT_MS : FOLLOW_COPY_TIMEOUT_MS, err);
    if (!s)
        return err->code;
    int rc = 0, first = 1;
    for (;;) {
        uint8_t *msg = NULL;
        size_t mlen = 0;
        if ((rc = ember_rpc_stream_read(s, &msg, &mlen, err)) || !msg)
            break;
        Ember__V1__ExportChunk *ch = ember__v1__export_chunk__unpack(NULL, mlen, msg);
        free(msg);
        if (!ch) {
            rc = ember_error_set(err, EMBER_INTERNAL, "a malformed ExportChunk from the leader");
            break;
        }
        if (first) {
            h->begun_ms = mono_ms();
            h->stable = ch->stable_version;
            h->version = ch->table_version;
            h->size = ch->table_size;
            h->uid = ch->table_uid;
            h->removed = ch->table_removed;
            if (!keys_only)
                dedup_apply(ch);
            if (ch->term > atomic_load(&fo.leader_term)) {
                atomic_store(&fo.leader_term, ch->term);
                term_raise(ch->term);
            }
            first = 0;
        }
        rc = on_chunk(ud, ch);
        ember__v1__export_chunk__free_unpacked(ch, NULL);
        if (rc)
            break;
    }
    ember_rpc_stream_close(s);
    if (!rc && first)
        rc = ember_error_set(err, EMBER_INTERNAL, "an Export from the leader with no chunk");
    return rc;
}

typedef struct apply_ctx {
    ftable *f;
    srv_table *local;
    uint64_t uid;  /* the entry copied: a chunk of another is not imported */
    uint64_t rows;
    ember_error *err;
} apply_ctx;

static int apply_chunk(void *ud, const Ember__V1__ExportChunk *ch)
{
    apply_ctx *a = ud;
    ember_table *t = a->local->table;
    size_t n = ch->keys.len / 8;
    uint32_t rf = ember_table_row_floats(t);
    if (ch->table_uid != a->uid)
        return ember_error_set(a->err, EMBER_ABORTED, "the leader's table '%s' was made again",
                               a->local->name);
    if (ch->table_version > a->f->leader_version) { /* a long copy shows its lag */
        pthread_mutex_lock(&fo.mu);
        a->f->leader_version = ch->table_version;
        pthread_mutex_unlock(&fo.mu);
    }
    if (!n)
        return 0;
    if (ch->row_floats != rf || ch->values.len != n * rf * 4 || ch->scores.len != n * 8 ||
        ch->versions.len != n * 8)
        return ember_error_set(a->err, EMBER_FAILED_PRECONDITION,
                               "rows of %u floats from the leader for '%s' whose rows have %u",
                               ch->row_floats, a->local->name, rf);
    if (scratch(n, rf))
        return ember_error_set(a->err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(fo.keys, ch->keys.data, n * 8);
    memcpy(fo.scores, ch->scores.data, n * 8);
    memcpy(fo.versions, ch->versions.data, n * 8);
    memcpy(fo.rows, ch->values.data, n * rf * 4);
    pthread_mutex_lock(&fo.apply_mu);
    int rc = srv_follow_active()
                 ? ember_table_import(t, fo.keys, n, fo.rows, fo.scores, fo.versions, a->err)
                 : ember_error_set(a->err, EMBER_ABORTED, "no longer a follower");
    pthread_mutex_unlock(&fo.apply_mu);
    if (!rc)
        a->rows += n;
    return rc;
}

/* The leader's keys (a keys-only export), sorted. */
typedef struct keyset {
    uint64_t *k;
    size_t n, cap;
} keyset;

static int collect_keys(void *ud, const Ember__V1__ExportChunk *ch)
{
    keyset *s = ud;
    size_t n = ch->keys.len / 8;
    if (!n)
        return 0;
    if (s->n + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->n + n)
            cap *= 2;
        uint64_t *k = realloc(s->k, cap * 8);
        if (!k)
            return EMBER_RESOURCE_EXHAUSTED;
        s->k = k;
        s->cap = cap;
    }
    memcpy(s->k + s->n, ch->keys.data, n * 8);
    s->n += n;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int has_key(const keyset *s, uint64_t k)
{
    return s->n && bsearch(&k, s->k, s->n, 8, cmp_u64) != NULL;
}

/* Erases the rows here that the leader no longer has (written at or before
 * its keys-only export began); when idle and rows are missing here, copies
 * the table again from version 0. */
static void reconcile(ftable *f, srv_table *local, int idle)
{
    ember_error err;
    keyset ks = {0};
    export_head h = {0};
    int rc = leader_export(f->name, 0, 1, &h, collect_keys, &ks, &err);
    if (rc || h.uid != f->uid) {
        free(ks.k);
        return;
    }
    if (ks.n)
        qsort(ks.k, ks.n, 8, cmp_u64);
    ember_table *t = local->table;
    uint64_t cursor = 0, end = ember_table_export_end(t), have = 0, erased = 0;
    size_t cap = 1024;
    uint32_t dim = ember_table_dim(t);
    uint64_t *keys = malloc(cap * 8), *vers = malloc(cap * 8), *gone = malloc(cap * 8);
    float *rows = malloc(cap * dim * 4);
    ember_export_filter all = {0, 0, 0};
    while (keys && vers && gone && rows && cursor != end) {
        size_t n = 0, g = 0;
        if (ember_table_export(t, &all, &cursor, cap, keys, rows, NULL, vers, &n, &err))
            break;
        for (size_t i = 0; i < n; i++) {
            if (has_key(&ks, keys[i]))
                have++;
            else if (vers[i] <= h.version)
                gone[g++] = keys[i];
        }
        uint64_t e = 0;
        pthread_mutex_lock(&fo.apply_mu);
        if (g && srv_follow_active() && !ember_table_erase(t, gone, g, &e, &err))
            erased += e;
        pthread_mutex_unlock(&fo.apply_mu);
    }
    if (idle && have < ks.n) {
        srv_log(SRV_LOG_INFO, "follower_recopy", "table=%s missing_rows=%llu", f->name,
                (unsigned long long)(ks.n - have));
        pthread_mutex_lock(&fo.mu);
        f->applied = 0;
        pthread_mutex_unlock(&fo.mu);
    }
    if (erased)
        srv_log(SRV_LOG_DEBUG, "follower_reconciled", "table=%s erased=%llu", f->name,
                (unsigned long long)erased);
    f->reconciled_ms = mono_ms();
    free(keys);
    free(vers);
    free(gone);
    free(rows);
    free(ks.k);
}

/* One delta of table f: 1 when it brought rows, 0 when none, -1 on an error. */
static int tail(ftable *f)
{
    ember_error err;
    srv_table *local = srv_registry_get(srv.registry, f->name, strlen(f->name));
    if (!local)
        return 0;
    export_head h = {0};
    apply_ctx a = {f, local, f->uid, 0, &err};
    pthread_mutex_lock(&fo.mu);
    f->polling_ms = mono_ms();
    pthread_mutex_unlock(&fo.mu);
    int rc = leader_export(f->name, f->applied, 0, &h, apply_chunk, &a, &err);
    pthread_mutex_lock(&fo.mu);
    f->polling_ms = 0;
    pthread_mutex_unlock(&fo.mu);
    if (rc) {
        if (rc == EMBER_ABORTED || rc == EMBER_NOT_FOUND)
            fo.listed_ms = 0; /* list again at once */
        else if (rc != EMBER_UNAVAILABLE && rc != EMBER_DEADLINE_EXCEEDED) {
            char q[600];
            srv_log(SRV_LOG_WARN, "follower_tail_failed", "table=%s code=%d reason=%s",
                    f->name, rc, srv_log_q(q, sizeof q, err.message));
        }
        srv_table_unref(local);
        reachable(rc != EMBER_UNAVAILABLE, &err);
        return -1;
    }
    pthread_mutex_lock(&fo.mu);
    f->applied = h.stable;
    f->leader_version = h.version;
    f->leader_size = h.size;
    f->caught_ms = h.begun_ms;
    pthread_mutex_unlock(&fo.mu);
    uint64_t mine = ember_table_size(local->table);
    int idle = a.rows == 0;
    /* rows went on the leader since the last reconciliation: at once when
     * idle, at most every FOLLOW_RECONCILE_MS under load; and when idle, any
     * difference in size */
    if ((h.removed != f->removed &&
         (idle || mono_ms() - f->reconciled_ms >= FOLLOW_RECONCILE_MS)) ||
        (idle && mine != h.size)) {
        reconcile(f, local, idle);
        f->removed = h.removed;
    }
    srv_table_unref(local);
    return a.rows > 0;
}

/* Drops every table here (fo.apply_mu held): a server that follows a new
 * leader copies its tables whole, keeping nothing of its own. */
static void drop_all_locked(void)
{
    size_t n;
    srv_table **mine = srv_registry_list(srv.registry, &n);
    for (size_t i = 0; mine && i < n; i++) {
        ember_error e;
        Ember__V1__DropTableRequest d = EMBER__V1__DROP_TABLE_REQUEST__INIT;
        d.name = mine[i]->name;
        d.if_exists = 1;
        local_admin_locked(srv_admin_drop, &d.base, &e);
    }
    srv_registry_list_free(mine, n);
}

static void drop_all(void)
{
    pthread_mutex_lock(&fo.apply_mu);
    if (srv_follow_active())
        drop_all_locked();
    pthread_mutex_unlock(&fo.apply_mu);
}

/* (Re)opens the channel to `target`. */
static int channel_to(const char *target, ember_error *err)
{
    if (fo.ch && !strcmp(fo.ch_target, target))
        return 0;
    if (fo.ch)
        ember_rpc_channel_close(fo.ch);
    ember_rpc_channel_options o;
    ember_rpc_channel_options_init(&o);
    o.max_receive_bytes = (int)srv.cfg.max_message_bytes;
    o.max_reconnect_backoff_ms = 500;
    o.token = fo.token[0] ? fo.token : NULL;
    if (*srv.cfg.replica_tls_ca) { /* TLS to the leader; this server's certificate too */
        o.tls_ca = srv.cfg.replica_tls_ca;
        o.tls_cert = *srv.cfg.tls_cert ? srv.cfg.tls_cert : NULL;
        o.tls_key = *srv.cfg.tls_key ? srv.cfg.tls_key : NULL;
    }
    fo.ch = ember_rpc_channel_open(target, &o, err);
    snprintf(fo.ch_target, sizeof fo.ch_target, "%s", fo.ch ? target : "");
    fo.reachable = -1;
    return fo.ch ? 0 : err->code;
}

/* Stops telling `addr` (unless a newer promotion asked to tell another). */
static void fence_done(const char *addr)
{
    pthread_mutex_lock(&fo.mu);
    if (!strcmp(fo.fence_addr, addr))
        fo.fence_addr[0] = '\0';
    pthread_mutex_unlock(&fo.mu);
}

/* A new leader tells the one it replaced to follow it (Admin/Follow), once a
 * second until it answers: the old leader, frozen or cut off when this one was
 * promoted, hears it when it comes back. */
static void fence_step(void)
{
    ember_error err;
    char addr[256], advertise[256];
    pthread_mutex_lock(&fo.mu);
    snprintf(addr, sizeof addr, "%s", fo.fence_addr);
    snprintf(advertise, sizeof advertise, "%s", fo.fence_advertise);
    uint64_t until = fo.fence_until_ms;
    pthread_mutex_unlock(&fo.mu);
    if (!addr[0] || mono_ms() > until || channel_to(addr, &err)) {
        fence_done(addr);
        return;
    }
    Ember__V1__FollowRequest r = EMBER__V1__FOLLOW_REQUEST__INIT;
    r.leader = advertise;
    r.term = srv_follow_term();
    uint8_t buf[600], *resp = NULL;
    size_t len = ember__v1__follow_request__pack(&r, buf), rlen = 0;
    int rc = ember_rpc_unary(fo.ch, "/ember.v1.Admin/Follow", buf, len, 2000, &resp, &rlen, &err);
    free(resp);
    if (rc == 0 || rc == EMBER_FAILED_PRECONDITION) {
        char q[600];
        srv_log(SRV_LOG_INFO, "old_leader_told", "old_leader=%s term=%llu code=%d reason=%s",
                addr, (unsigned long long)r.term, rc,
                srv_log_q(q, sizeof q, rc ? err.message : "following"));
        fence_done(addr);
    }
}

static void *follow_main(void *arg)
{
    (void)arg;
    ember_error err;
    if (srv_backend_thread_init(&srv.backend, &err)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "follower_device_failed", "gpu=%d reason=%s", srv.backend.gpu,
                srv_log_q(q, sizeof q, err.message));
    }
    while (!atomic_load(&fo.stop)) {
        if (!srv_follow_active()) {
            pthread_mutex_lock(&fo.mu);
            int fence = fo.fence_addr[0] && srv_follow_role_id() == SRV_REPL_LEADER;
            pthread_mutex_unlock(&fo.mu);
            if (fence)
                fence_step();
            usleep(fence ? 1000000 : 50000);
            continue;
        }
        if (atomic_exchange(&fo.retarget, 0) || !fo.ch) { /* a new leader: start over */
            char target[256];
            srv_follow_leader(target, sizeof target);
            pthread_mutex_lock(&fo.mu);
            fo.n = 0;
            fo.listed_ms = 0;
            fo.dedup_next = 0; /* another leader's log */
            pthread_mutex_unlock(&fo.mu);
            drop_all(); /* what a round for the old leader may have made meanwhile */
            if (channel_to(target, &err)) {
                usleep(200000);
                continue;
            }
        }
        if (!fo.listed_ms || mono_ms() - fo.listed_ms >= FOLLOW_LIST_MS) {
            if (sync_tables()) {
                usleep(200000);
                continue;
            }
        }
        int failed = 0;
        /* an idle table's delta is a long poll that any write on the leader
         * ends: no sleeping here, and no spinning */
        for (size_t i = 0; i < fo.n && !atomic_load(&fo.stop) && srv_follow_active(); i++)
            failed |= tail(&fo.t[i]) < 0;
        if (failed || !fo.n)
            usleep(failed ? 100000 : 50000);
    }
    return NULL;
}

int srv_follow_start(char *msg, size_t cap)
{
    ember_error err;
    /* the term this server reached before (a restart must not go back) */
    if (*srv.cfg.checkpoint_dir) {
        char path[SRV_PATH_MAX + 16];
        snprintf(path, sizeof path, "%s/term", srv.cfg.checkpoint_dir);
        FILE *f = fopen(path, "r");
        unsigned long long t = 0;
        if (f && fscanf(f, "%llu", &t) == 1)
            atomic_store(&fo.term, t);
        if (f)
            fclose(f);
    }
    if (!atomic_load(&fo.term))
        atomic_store(&fo.term, srv.cfg.replica_of[0] ? 0 : 1);
    snprintf(fo.leader, sizeof fo.leader, "%s", srv.cfg.replica_of);
    atomic_store(&fo.role, srv.cfg.replica_of[0] ? SRV_REPL_FOLLOWER : SRV_REPL_LEADER);
    /* the leader's Admin needs the admin token where it checks one: a leader
     * and its followers share it (the same Secret) */
    const char *env = getenv("EMBER_ADMIN_TOKEN");
    if (*srv.cfg.admin_token_file) {
        if (ember_rpc_read_token(srv.cfg.admin_token_file, fo.token, sizeof fo.token, &err)) {
            snprintf(msg, cap, "replication: %s", err.message);
            return -1;
        }
    } else if (env && *env) {
        snprintf(fo.token, sizeof fo.token, "%s", env);
    }
    if (srv.cfg.replica_of[0] && channel_to(srv.cfg.replica_of, &err)) {
        snprintf(msg, cap, "--replica-of %s: %s", srv.cfg.replica_of, err.message);
        return -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(fo.id, sizeof fo.id, "%08lx%08lx-%d", (unsigned long)ts.tv_sec,
             (unsigned long)ts.tv_nsec, (int)getpid());
    fo.started_ms = mono_ms();
    int e = pthread_create(&fo.thread, NULL, follow_main, NULL);
    if (e) {
        snprintf(msg, cap, "cannot start the replication thread: %s", strerror(e));
        return -1;
    }
    fo.started = 1;
    if (srv.cfg.replica_of[0])
        srv_log(SRV_LOG_INFO, "follower_started", "leader=%s follower_id=%s term=%llu",
                srv.cfg.replica_of, fo.id, (unsigned long long)srv_follow_term());
    return 0;
}

/* ---- Promote and Follow ----------------------------------------------------- */

int srv_follow_promote(int force, uint64_t max_lag_versions, const char *advertise,
                       uint64_t *term, uint64_t *lag, char *previous, size_t cap,
                       ember_error *err)
{
    uint64_t lag_ms;
    if (advertise && *advertise && !strrchr(advertise, ':'))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT,
                               "advertise '%.80s' is not HOST:PORT", advertise);
    pthread_mutex_lock(&fo.apply_mu); /* no import of the old leader's after this */
    int role = srv_follow_role_id();
    srv_follow_lag(lag, &lag_ms);
    uint64_t bound = max_lag_versions ? max_lag_versions : 1000;
    int rc = 0;
    if (role != SRV_REPL_FOLLOWER)
        rc = ember_error_set(err, EMBER_FAILED_PRECONDITION,
                             role == SRV_REPL_LEADER
                                 ? "this server is the leader already (term %llu)"
                                 : "this server is fenced (term %llu): it follows a leader "
                                   "again (Follow) before it can be promoted",
                             (unsigned long long)srv_follow_term());
    else if (*lag > bound && !force)
        rc = ember_error_set(err, EMBER_FAILED_PRECONDITION,
                             "this follower knows itself %llu versions behind its leader "
                             "(bound %llu; %llu ms since its copy was complete): promote with "
                             "force to take it as it is (the writes it lacks are lost)",
                             (unsigned long long)*lag, (unsigned long long)bound,
                             (unsigned long long)lag_ms);
    if (!rc) {
        uint64_t lt = atomic_load(&fo.leader_term);
        uint64_t t = srv_follow_term() > lt ? srv_follow_term() : lt;
        term_raise(t + 1);
        *term = srv_follow_term();
        pthread_mutex_lock(&fo.mu);
        snprintf(previous, cap, "%s", fo.leader);
        if (advertise && *advertise) {
            snprintf(fo.fence_addr, sizeof fo.fence_addr, "%s", fo.leader);
            snprintf(fo.fence_advertise, sizeof fo.fence_advertise, "%s", advertise);
            fo.fence_until_ms = mono_ms() + 600000;
        }
        fo.leader[0] = '\0';
        pthread_mutex_unlock(&fo.mu);
        atomic_store(&fo.role, SRV_REPL_LEADER);
    }
    pthread_mutex_unlock(&fo.apply_mu);
    if (!rc)
        srv_log(SRV_LOG_WARN, "promoted", "term=%llu previous_leader=%s lag_versions=%llu "
                "forced=%d advertise=%s", (unsigned long long)*term, previous,
                (unsigned long long)*lag, force, advertise ? advertise : "");
    return rc;
}

int srv_follow_follow(const char *leader, uint64_t term, uint64_t *now_term, ember_error *err)
{
    if (!leader || !*leader || strlen(leader) >= sizeof fo.leader || !strrchr(leader, ':'))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "leader '%.80s' is not HOST:PORT",
                               leader ? leader : "");
    pthread_mutex_lock(&fo.apply_mu);
    int rc = 0;
    if (term < srv_follow_term()) {
        rc = ember_error_set(err, EMBER_FAILED_PRECONDITION,
                             "term %llu is older than this server's %llu: a stale request",
                             (unsigned long long)term, (unsigned long long)srv_follow_term());
    } else {
        term_raise(term);
        pthread_mutex_lock(&fo.mu);
        snprintf(fo.leader, sizeof fo.leader, "%s", leader);
        fo.fence_addr[0] = '\0';
        pthread_mutex_unlock(&fo.mu);
        atomic_store(&fo.role, SRV_REPL_FOLLOWER);
        atomic_store(&fo.retarget, 1);
        /* what this server holds is not its new leader's: copied again whole */
        drop_all_locked();
    }
    *now_term = srv_follow_term();
    pthread_mutex_unlock(&fo.apply_mu);
    if (!rc)
        srv_log(SRV_LOG_WARN, "following", "leader=%s term=%llu", leader,
                (unsigned long long)*now_term);
    return rc;
}

void srv_follow_stop(void)
{
    if (!fo.started)
        return;
    atomic_store(&fo.stop, 1);
    pthread_join(fo.thread, NULL);
    fo.started = 0;
    ember_rpc_channel_close(fo.ch);
    fo.ch = NULL;
    free(fo.t);
    free(fo.keys);
    free(fo.scores);
    free(fo.versions);
    free(fo.rows);
}
