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
    grpc_channel *ch;
    char id[64];
    char token[4096];
    pthread_mutex_t mu;      /* guards the tables' numbers for srv_follow_lag */
    ftable *t;
    size_t n, cap;
    uint64_t started_ms, listed_ms;
    int reachable;           /* the last call to the leader worked (logged on change) */
    /* scratch: one chunk's rows, aligned */
    uint64_t *keys, *scores, *versions;
    float *rows;
    size_t rows_cap, floats_cap;
} fo = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int srv_follow_active(void) { return srv.cfg.replica_of[0] != 0; }

const char *srv_follow_role(void) { return srv_follow_active() ? "follower" : "leader"; }

int srv_follow_refuse(const char *what, ember_error *err)
{
    return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                           "not the leader: follower of %s (%s goes to the leader; this "
                           "server serves pulls without insert)",
                           srv.cfg.replica_of, what);
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
        srv_log(SRV_LOG_INFO, "leader_reachable", "leader=%s", srv.cfg.replica_of);
    } else {
        char q[600];
        srv_log(SRV_LOG_WARN, "leader_unreachable", "leader=%s reason=%s", srv.cfg.replica_of,
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

/* Runs an Admin handler of this server on `m`, as a call from the leader would. */
static int local_admin(srv_unary_fn fn, const ProtobufCMessage *m, ember_error *err)
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
    atomic_store(&local->ack, (int)ti->config->ack);
    atomic_store(&local->ack_replicas, ti->config->ack_replicas);
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
    int rc = ember_table_import(t, fo.keys, n, fo.rows, fo.scores, fo.versions, a->err);
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
    return bsearch(&k, s->k, s->n, 8, cmp_u64) != NULL;
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
        if (g && !ember_table_erase(t, gone, g, &e, &err))
            erased += e;
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
        if (!fo.listed_ms || mono_ms() - fo.listed_ms >= FOLLOW_LIST_MS) {
            if (sync_tables()) {
                usleep(200000);
                continue;
            }
        }
        int failed = 0;
        /* an idle table's delta is a long poll that any write on the leader
         * ends: no sleeping here, and no spinning */
        for (size_t i = 0; i < fo.n && !atomic_load(&fo.stop); i++)
            failed |= tail(&fo.t[i]) < 0;
        if (failed || !fo.n)
            usleep(failed ? 100000 : 50000);
    }
    return NULL;
}

int srv_follow_start(char *msg, size_t cap)
{
    if (!srv_follow_active())
        return 0;
    ember_error err;
    ember_rpc_channel_options o;
    ember_rpc_channel_options_init(&o);
    o.max_receive_bytes = (int)srv.cfg.max_message_bytes;
    o.max_reconnect_backoff_ms = 500;
    /* the leader's Admin needs the admin token where it checks one: a leader
     * and its followers share it (the same Secret) */
    const char *env = getenv("EMBER_ADMIN_TOKEN");
    if (*srv.cfg.admin_token_file) {
        if (ember_rpc_read_token(srv.cfg.admin_token_file, fo.token, sizeof fo.token, &err)) {
            snprintf(msg, cap, "--replica-of: %s", err.message);
            return -1;
        }
        o.token = fo.token;
    } else if (env && *env) {
        snprintf(fo.token, sizeof fo.token, "%s", env);
        o.token = fo.token;
    }
    fo.ch = ember_rpc_channel_open(srv.cfg.replica_of, &o, &err);
    if (!fo.ch) {
        snprintf(msg, cap, "--replica-of %s: %s", srv.cfg.replica_of, err.message);
        return -1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(fo.id, sizeof fo.id, "%08lx%08lx-%d", (unsigned long)ts.tv_sec,
             (unsigned long)ts.tv_nsec, (int)getpid());
    fo.started_ms = mono_ms();
    fo.reachable = -1;
    int e = pthread_create(&fo.thread, NULL, follow_main, NULL);
    if (e) {
        snprintf(msg, cap, "cannot start the follower thread: %s", strerror(e));
        return -1;
    }
    fo.started = 1;
    srv_log(SRV_LOG_INFO, "follower_started", "leader=%s follower_id=%s", srv.cfg.replica_of,
            fo.id);
    return 0;
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
