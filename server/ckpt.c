/* ckpt.c — the checkpoint directory, restore, saves and the checkpointer (ckpt.h). */
#include "server/ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "server/backend.h"
#include "server/log.h"
#include "server/repl.h"
#include "server/server.h"
#include "storage/checkpoint.h"
#include "storage/crc32c.h"
#include "storage/durable.h"

#define HIST_DIR "history"
#define SETS_DIR "sets"
#define WINDOW_FILE "dedup.window"
#define WINDOW_EXT ".window"
#define WINDOW_MAGIC "EMBRWNDW"
#define WINDOW_FORMAT 1u
/* How long a save waits, after its tables are written, for the pushes pending
 * at its cut to end (dedup.h). */
#define WINDOW_SETTLE_MS 5000u
#define CKPT_EXT ".ckpt"
#define ACK_EXT ".ack"
/* YYYYMMDDTHHMMSS.nnnnnnnnnZ */
#define STAMP_LEN 26
#define STAMP_BUF 64
#define PATH_CAP (SRV_PATH_MAX + 160)

/* A queued save (Admin/Save) waiting for the checkpointer. */
typedef struct ck_job {
    srv_ckpt_done_fn done;
    void *arg;
    char table[EMBER_TABLE_NAME_MAX + 1];
    char dir[SRV_PATH_MAX];
    char set[SRV_CKPT_SET_NAME_MAX + 1]; /* "": into dir itself */
    struct ck_job *next;
} ck_job;

/* The checkpointer: its thread, its queue, and the lock that keeps a save of a
 * table and that table's retirement (a drop) apart. */
typedef struct srv_ckpt {
    pthread_mutex_t table_mu;  /* held while a table's files change */
    pthread_mutex_t mu;        /* guards the queue and stop; signals cv */
    pthread_cond_t cv;
    ck_job *head, *tail;
    int stop;
    int started;
    pthread_t thread;
    int lock_fd;               /* <dir>/.lock, held for the process's life */
} srv_ckpt;

/* One per process, like `srv`: the checkpoint dir and its lock are the process's. */
static srv_ckpt ck = {
    .table_mu = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .lock_fd = -1,
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double ms_since(uint64_t start) { return (double)(mono_ms() - start); }

/* snprintf into a path buffer: -1 if it did not fit (dirs are bounded by
 * config.c and ckpt_dir(), so only a bug gets there). */
__attribute__((format(printf, 3, 4))) static int pathf(char *out, size_t cap,
                                                       const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- layout -------------------------------------------------------------- */

static int cur_path(char *out, size_t cap, const char *dir, const char *table)
{
    return pathf(out, cap, "%s/%s" CKPT_EXT, dir, table);
}

/* <UTC> of a moment in ns since the epoch (STAMP_LEN characters). */
static void stamp(char out[STAMP_BUF], uint64_t ns)
{
    time_t s = (time_t)(ns / 1000000000u);
    struct tm tm;
    gmtime_r(&s, &tm);
    pathf(out, STAMP_BUF, "%04d%02d%02dT%02d%02d%02d.%09luZ", tm.tm_year + 1900,
          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
          (unsigned long)(ns % 1000000000u));
}

/* 1 if `name` is history/<table>.<UTC>.ckpt of `table`. */
static int is_hist_of(const char *name, const char *table)
{
    size_t tl = strlen(table), nl = strlen(name);
    if (nl != tl + 1 + STAMP_LEN + strlen(CKPT_EXT) || strncmp(name, table, tl) ||
        name[tl] != '.' || strcmp(name + nl - strlen(CKPT_EXT), CKPT_EXT))
        return 0;
    const char *s = name + tl + 1;
    for (int i = 0; i < STAMP_LEN; i++) {
        char c = s[i];
        int ok = i == 8 ? c == 'T' : i == 15 ? c == '.' : i == 25 ? c == 'Z'
                                                                   : c >= '0' && c <= '9';
        if (!ok)
            return 0;
    }
    return 1;
}

static int cmp_desc(const void *a, const void *b)
{
    return strcmp(*(char *const *)b, *(char *const *)a);
}

static int cmp_asc(const void *a, const void *b) { return cmp_desc(b, a); }

/* The history files of `table` in dir, newest first (malloc'ed names; *n). */
static char **hist_list(const char *dir, const char *table, size_t *n)
{
    char hd[PATH_CAP];
    char **names = NULL;
    size_t cap = 0;
    *n = 0;
    pathf(hd, sizeof hd, "%s/" HIST_DIR, dir);
    DIR *d = opendir(hd);
    if (!d)
        return NULL;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!is_hist_of(e->d_name, table))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            char **q = realloc(names, cap * sizeof *names);
            if (!q)
                break;
            names = q;
        }
        if ((names[*n] = strdup(e->d_name)) != NULL)
            (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(names, *n, sizeof *names, cmp_desc);
    return names;
}

static void names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Links the checkpoint at `path` (of `table`) into history/ under the moment its
 * save started (its header's; its mtime if the header is unreadable). Best
 * effort: history is a convenience, never a reason to fail a save. Returns 0 if
 * the file is now in history/ (or there is no file). */
static int hist_keep(const char *dir, const char *table, const char *path, char *hist,
                     size_t hist_cap)
{
    struct stat st;
    if (stat(path, &st))
        return errno == ENOENT ? 0 : -1;
    ember_ckpt_meta m;
    uint64_t ns = (uint64_t)st.st_mtim.tv_sec * 1000000000u + (uint64_t)st.st_mtim.tv_nsec;
    if (ember_ckpt_read_meta(path, &m, NULL) == 0 && m.created_ns)
        ns = m.created_ns;
    char hd[PATH_CAP], s[STAMP_BUF];
    stamp(s, ns);
    pathf(hd, sizeof hd, "%s/" HIST_DIR, dir);
    pathf(hist, hist_cap, "%s/%s.%s" CKPT_EXT, hd, table, s);
    if (mkdir(hd, 0755) && errno != EEXIST)
        goto fail;
    if (link(path, hist) && errno != EEXIST)
        goto fail;
    ember_durable_fsync_dir(hd, NULL);
    return 0;
fail:;
    char q[600];
    srv_log(SRV_LOG_WARN, "checkpoint_history_failed", "table=%s file=%s reason=%s", table,
            srv_log_q(q, sizeof q, hist), strerror(errno));
    return -1;
}

/* Keeps the newest keep − 1 history files of `table` that are not the current
 * file itself (a link left by a save that failed after hist_keep). */
static void hist_prune(const char *dir, const char *table, const char *cur, unsigned keep)
{
    size_t n;
    char **names = hist_list(dir, table, &n);
    struct stat cs;
    int have_cur = stat(cur, &cs) == 0;
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        char p[PATH_CAP];
        struct stat hs;
        pathf(p, sizeof p, "%s/" HIST_DIR "/%s", dir, names[i]);
        int same = have_cur && stat(p, &hs) == 0 && hs.st_ino == cs.st_ino &&
                   hs.st_dev == cs.st_dev;
        if (!same && kept + 1 < keep) {
            kept++;
            continue;
        }
        if (unlink(p) == 0)
            srv_log(SRV_LOG_DEBUG, "checkpoint_pruned", "table=%s file=%s", table, p);
    }
    names_free(names, n);
}

int srv_ckpt_resolve(const char *dir, const char *table, char *path, size_t cap,
                     ember_error *err)
{
    struct stat st;
    if (cur_path(path, cap, dir, table))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dir is too long");
    if (stat(path, &st) == 0)
        return 0;
    size_t n;
    char **names = hist_list(dir, table, &n);
    if (!n) {
        names_free(names, n);
        return ember_error_set(err, EMBER_NOT_FOUND,
                               "no checkpoint of table '%s' in %s (no %s." CKPT_EXT
                               " and none in %s/" HIST_DIR "/)",
                               table, dir, table, dir);
    }
    int r = snprintf(path, cap, "%s/" HIST_DIR "/%s", dir, names[0]);
    names_free(names, n);
    if (r < 0 || (size_t)r >= cap)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dir is too long");
    return 0;
}

/* ---- load ---------------------------------------------------------------- */

/* The backend and hbm_bytes for a table recreated from a checkpoint that asked
 * for `p`. A table that asked for the gpu, restored on a server serving the
 * cpu only (another machine, --backend cpu), is served from the cpu rather than
 * not at all: its rows load into either backend. Logged at warn. */
static int placement_backend(const char *name, const ember_ckpt_placement *p,
                             const ember_table_backend **be, uint64_t *hbm_bytes,
                             ember_error *err)
{
    int rc = srv_backend_for_table(&srv.backend, p->backend, p->hbm_bytes, be, hbm_bytes, err);
    if (rc != EMBER_FAILED_PRECONDITION)
        return rc;
    srv_log(SRV_LOG_WARN, "placement_unavailable",
            "table=%s asked_backend=%s serving_backend=%s", name, p->backend, srv.backend.name);
    return srv_backend_for_table(&srv.backend, NULL, 0, be, hbm_bytes, err);
}

/* ---- progress -------------------------------------------------------------- */

/* The operation shown by ServerInfo: the one that reported last. */
static struct {
    pthread_mutex_t mu;
    const void *owner; /* the op_progress that wrote it; NULL: none runs */
    char op[16], table[EMBER_TABLE_NAME_MAX + 1];
    uint64_t rows, total;
} shown = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* One save or load in progress: its log rhythm. */
typedef struct op_progress {
    const char *op, *table;
    uint64_t t0, last_log; /* mono_ms */
} op_progress;

static void progress_publish(const op_progress *p, uint64_t rows, uint64_t total, int end)
{
    pthread_mutex_lock(&shown.mu);
    if (end) {
        if (shown.owner == p)
            shown.owner = NULL;
    } else {
        shown.owner = p;
        snprintf(shown.op, sizeof shown.op, "%s", p->op);
        snprintf(shown.table, sizeof shown.table, "%s", p->table);
        shown.rows = rows;
        shown.total = total;
    }
    pthread_mutex_unlock(&shown.mu);
}

static void on_progress(void *arg, uint64_t rows, uint64_t total)
{
    op_progress *p = arg;
    progress_publish(p, rows, total, 0);
    uint64_t now = mono_ms();
    if (!rows || now - p->last_log < srv.cfg.progress_interval_ms)
        return;
    p->last_log = now;
    double s = (double)(now - p->t0) / 1e3, rate = s > 0 ? (double)rows / s : 0;
    char eta[32] = "unknown";
    if (rate > 0 && total >= rows)
        snprintf(eta, sizeof eta, "%.0f", (double)(total - rows) / rate);
    srv_log(SRV_LOG_INFO, "checkpoint_progress",
            "op=%s table=%s rows=%llu total=%llu pct=%.1f rows_per_s=%.0f eta_s=%s", p->op,
            p->table, (unsigned long long)rows, (unsigned long long)total,
            total ? 100.0 * (double)rows / (double)total : 100.0, rate, eta);
}

void srv_ckpt_progress_get(char *op, size_t op_cap, char *table, size_t table_cap,
                           uint64_t *rows, uint64_t *total)
{
    pthread_mutex_lock(&shown.mu);
    snprintf(op, op_cap, "%s", shown.owner ? shown.op : "");
    snprintf(table, table_cap, "%s", shown.owner ? shown.table : "");
    *rows = shown.owner ? shown.rows : 0;
    *total = shown.owner ? shown.total : 0;
    pthread_mutex_unlock(&shown.mu);
}

int srv_ckpt_load_file(const char *path, const char *name, int create, const char *op,
                       ember_ckpt_meta *out, int *created, ember_error *err)
{
    ember_ckpt_meta meta;
    ember_ckpt_expect ex = {srv.cfg.shard_index, srv.cfg.shard_count, name};
    ember_table *t = NULL;
    srv_table *old = srv_registry_get(srv.registry, name, strlen(name));
    int rc = ember_ckpt_read_meta(path, &meta, err);
    if (rc)
        goto out;
    if (!old && !create) {
        rc = ember_error_set(err, EMBER_NOT_FOUND,
                             "no table '%s' on shard %u (set create to make it from %s)", name,
                             srv.cfg.shard_index, path);
        goto out;
    }
    /* a loaded table keeps the backend (and device budget) of the one it replaces;
     * a created one is placed as the file's table asked (version-1 files: the
     * server's defaults) */
    ember_table_config c = old ? *ember_table_config_of(old->table) : meta.config;
    const ember_table_backend *be = old ? ember_table_backend_of(old->table) : NULL;
    if (!be && (rc = placement_backend(name, &meta.placement, &be, &c.hbm_bytes, err)))
        goto out;
    if ((rc = srv_table_within_caps(&c, be, srv.cfg.max_table_host_bytes,
                                    srv.cfg.max_table_hbm_bytes, err)) ||
        (rc = ember_table_create(&c, be, &t, err)))
        goto out;
    op_progress prog = {op, name, mono_ms(), mono_ms()};
    const ember_ckpt_progress report = {on_progress, &prog};
    rc = ember_ckpt_load_progress(t, path, &ex, &report, &meta, err);
    progress_publish(&prog, 0, 0, 1);
    if (rc)
        goto out;
    ember_table_raise_version(t, meta.version);
    rc = old ? srv_registry_replace(srv.registry, old, t, err)
             : srv_registry_add(srv.registry, name, t, &meta.placement, NULL, err);
    if (rc)
        goto out;
    t = NULL; /* the registry owns it */
    if (out)
        *out = meta;
    if (created)
        *created = !old;
out:
    ember_table_destroy(t);
    srv_table_unref(old);
    return rc;
}

/* ---- save ---------------------------------------------------------------- */

/* A save of t that began at t0 (mono_ms) ended with rc: counted in t's
 * counters for the metrics endpoint (metrics.h). */
static void save_counted(srv_table *t, int rc, uint64_t t0)
{
    srv_counters *c = &t->counters;
    if (rc) {
        atomic_fetch_add_explicit(&c->ckpt_failures, 1, memory_order_relaxed);
        return;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    atomic_store_explicit(&c->ckpt_save_ms, mono_ms() - t0, memory_order_relaxed);
    atomic_store_explicit(&c->ckpt_saved_ms,
                          (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u,
                          memory_order_relaxed);
    atomic_fetch_add_explicit(&c->ckpt_saves, 1, memory_order_relaxed);
}

/* Saves the table now registered as `name` into dir (see the layout in ckpt.h),
 * from `snap` when given (a snapshot of `snap_of`, begun with the other tables'
 * at one cut), else from a snapshot of its own. NOT_FOUND if there is none
 * (dropped since it was listed). */
static int save_table(const char *dir, const char *name, const char *why, char *path,
                      size_t path_cap, ember_ckpt_meta *meta, ember_table_snapshot *snap,
                      srv_table *snap_of, ember_error *err)
{
    uint64_t t0 = mono_ms();
    int rc;
    if (cur_path(path, path_cap, dir, name))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dir is too long");
    pthread_mutex_lock(&ck.table_mu);
    /* looked up under the lock: a drop retires the file under it too, so a table
     * dropped meanwhile is not written back */
    srv_table *t = srv_registry_get(srv.registry, name, strlen(name));
    if (!t) {
        pthread_mutex_unlock(&ck.table_mu);
        return ember_error_set(err, EMBER_NOT_FOUND, "table '%s' was dropped", name);
    }
    if (snap) { /* as it was at the cut, even if a Load replaced it since */
        srv_table_unref(t);
        t = snap_of;
        srv_table_ref(t);
    }
    char hist[PATH_CAP];
    if (srv.cfg.checkpoint_keep > 1)
        hist_keep(dir, name, path, hist, sizeof hist);
    op_progress prog = {"save", name, t0, t0};
    const ember_ckpt_progress report = {on_progress, &prog};
    const ember_ckpt_save_opts opts = {&report, NULL, NULL, snap};
    rc = ember_ckpt_save_opts_run(t->table, path, name, srv.cfg.shard_index,
                                  srv.cfg.shard_count, &t->placement, &opts, meta, err);
    progress_publish(&prog, 0, 0, 1);
    if (!rc || srv.cfg.checkpoint_keep > 1)
        hist_prune(dir, name, path, srv.cfg.checkpoint_keep);
    pthread_mutex_unlock(&ck.table_mu);
    save_counted(t, rc, t0);
    srv_table_unref(t);
    char q[600];
    if (!rc)
        srv_log(SRV_LOG_INFO, "checkpoint_saved",
                "table=%s rows=%llu version=%llu file=%s ms=%.0f why=%s", name,
                (unsigned long long)meta->rows, (unsigned long long)meta->version,
                srv_log_q(q, sizeof q, path), ms_since(t0), why);
    else
        srv_log(SRV_LOG_ERROR, "checkpoint_failed", "table=%s code=%s reason=%s why=%s", name,
                ember_status_name(rc), srv_log_q(q, sizeof q, err->message), why);
    return rc;
}

/* What a save of several tables did. */
typedef struct save_result {
    char **files;   /* one per table saved */
    char **tables;  /* their names, */
    uint64_t *cuts; /* and their cuts (the header's version) */
    size_t n, failed;
    uint64_t rows;
    int window;     /* the at-most-once window was saved beside them */
} save_result;

static void result_free(save_result *r)
{
    names_free(r->files, r->n);
    names_free(r->tables, r->n);
    free(r->cuts);
    memset(r, 0, sizeof *r);
}

/* ---- the at-most-once window saved beside the tables --------------------- */

static void put32(uint8_t **p, uint32_t v)
{
    memcpy(*p, &v, 4); /* little-endian hosts only, as the checkpoints */
    *p += 4;
}

static void put64(uint8_t **p, uint64_t v)
{
    memcpy(*p, &v, 8);
    *p += 8;
}

/* Reads n bytes at *p of a buffer ending at end, or fails. */
static int take(const uint8_t **p, const uint8_t *end, void *out, size_t n)
{
    if ((size_t)(end - *p) < n)
        return -1;
    memcpy(out, *p, n);
    *p += n;
    return 0;
}

/* <dir>/dedup.window: the window captured at the cut of the tables saved with
 * it, and their names and cuts (it is restored only beside exactly those).
 *   8 magic "EMBRWNDW", 4 format 1, 4 shard index, 4 shard count, 4 tables;
 *   per table: 4 name length, the name, 8 cut;
 *   8 window length, the window (dedup.c's), 4 CRC-32C of all before. */
static int window_write(const char *dir, const save_result *res, const uint8_t *body,
                        size_t len, ember_error *err)
{
    char path[PATH_CAP];
    if (pathf(path, sizeof path, "%s/" WINDOW_FILE, dir))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dir is too long");
    size_t cap = 24 + res->n * (12 + EMBER_TABLE_NAME_MAX) + 8 + len + 4;
    uint8_t *b = malloc(cap), *p = b;
    if (!b)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    memcpy(p, WINDOW_MAGIC, 8);
    p += 8;
    put32(&p, WINDOW_FORMAT);
    put32(&p, srv.cfg.shard_index);
    put32(&p, srv.cfg.shard_count);
    put32(&p, (uint32_t)res->n);
    for (size_t i = 0; i < res->n; i++) {
        size_t l = strlen(res->tables[i]);
        put32(&p, (uint32_t)l);
        memcpy(p, res->tables[i], l);
        p += l;
        put64(&p, res->cuts[i]);
    }
    put64(&p, len);
    memcpy(p, body, len);
    p += len;
    put32(&p, ember_crc32c(b, (size_t)(p - b)));
    ember_durable_file *f = NULL;
    ember_durable_fail fail;
    int e = ember_durable_create(path, &f, &fail);
    if (!e && (e = ember_durable_write(f, b, (size_t)(p - b), &fail)))
        ember_durable_abort(f);
    else if (!e)
        e = ember_durable_commit(f, &fail);
    free(b);
    if (e)
        return ember_error_set(err, EMBER_INTERNAL, "%s %s: %s", fail.df_step, fail.df_path,
                               strerror(e));
    return 0;
}

/* window_read's "no": the reason into why[cap], and 0. */
__attribute__((format(printf, 3, 4))) static int why_fail(char *why, size_t cap,
                                                          const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return 0;
}

/* The window of <dir>/dedup.window if it was saved with exactly the tables
 * `names` at `cuts` (n of them): 1 and *body[*len] (malloc'ed); 0 with the
 * reason in why when there is none or it does not match. */
static int window_read(const char *dir, char *const *names, const uint64_t *cuts, size_t n,
                       uint8_t **body, size_t *len, char *why, size_t why_cap)
{
    char path[PATH_CAP];
    *body = NULL;
    if (pathf(path, sizeof path, "%s/" WINDOW_FILE, dir))
        return why_fail(why, why_cap, "dir is too long");
    FILE *f = fopen(path, "rb");
    if (!f)
        return why_fail(why, why_cap, "none saved (%s)", strerror(errno));
    uint8_t *b = NULL;
    size_t size = 0, cap = 0, got;
    do {
        if (size == cap) {
            cap = cap ? 2 * cap : 65536;
            uint8_t *q = realloc(b, cap);
            if (!q)
                break;
            b = q;
        }
        got = fread(b + size, 1, cap - size, f);
        size += got;
    } while (got);
    fclose(f);
    const uint8_t *p = b, *end = b + size;
    char magic[8];
    uint32_t fmt, si, sc, nt, crc;
    int ok = b && size >= 28 && !take(&p, end, magic, 8) && !memcmp(magic, WINDOW_MAGIC, 8) &&
             !take(&p, end, &fmt, 4) && fmt == WINDOW_FORMAT && !take(&p, end, &si, 4) &&
             !take(&p, end, &sc, 4) && !take(&p, end, &nt, 4);
    if (ok) {
        memcpy(&crc, b + size - 4, 4);
        ok = crc == ember_crc32c(b, size - 4);
    }
    if (!ok) {
        free(b);
        return why_fail(why, why_cap, "%s is damaged", path);
    }
    end = b + size - 4;
    if (si != srv.cfg.shard_index || sc != srv.cfg.shard_count || nt != n) {
        free(b);
        return why_fail(why, why_cap, "saved with %u table(s) of shard %u of %u, not these %zu",
                        nt, si, sc, n);
    }
    for (uint32_t i = 0; i < nt; i++) {
        uint32_t l;
        char name[EMBER_TABLE_NAME_MAX + 1];
        uint64_t cut;
        size_t k;
        if (take(&p, end, &l, 4) || l > EMBER_TABLE_NAME_MAX || take(&p, end, name, l) ||
            take(&p, end, &cut, 8)) {
            free(b);
            return why_fail(why, why_cap, "%s is damaged", path);
        }
        name[l] = '\0';
        for (k = 0; k < n && strcmp(names[k], name); k++)
            ;
        if (k == n || cuts[k] != cut) {
            free(b);
            return why_fail(why, why_cap,
                            "saved with table '%s' at cut %llu, not with the files loaded", name,
                            (unsigned long long)cut);
        }
    }
    uint64_t bl;
    if (take(&p, end, &bl, 8) || bl != (uint64_t)(end - p)) {
        free(b);
        return why_fail(why, why_cap, "%s is damaged", path);
    }
    *len = (size_t)bl;
    *body = malloc(*len ? *len : 1);
    if (*body)
        memcpy(*body, p, *len);
    free(b);
    return *body ? 1 : why_fail(why, why_cap, "out of memory");
}

void srv_ckpt_window_apply(const char *dir, char *const *names, const uint64_t *cuts, size_t n,
                           const char *op)
{
    uint8_t *body;
    size_t len = 0, clients = 0;
    char why[PATH_CAP + 200], q[2 * PATH_CAP];
    if (!window_read(dir, names, cuts, n, &body, &len, why, sizeof why)) {
        srv_log(SRV_LOG_INFO, "dedup_window_not_restored", "op=%s dir=%s reason=%s", op, dir,
                srv_log_q(q, sizeof q, why));
        return;
    }
    if (srv_dedup_restore(srv.dedup, body, len, &clients))
        srv_log(SRV_LOG_WARN, "dedup_window_not_restored", "op=%s dir=%s reason=malformed", op,
                dir);
    else
        srv_log(SRV_LOG_INFO, "dedup_window_restored", "op=%s dir=%s clients=%zu", op, dir,
                clients);
    free(body);
}

/* ---- saving a set of tables ---------------------------------------------- */

static void window_cut(void *arg, uint64_t cut_epoch)
{
    *(srv_dedup_capture **)arg = srv_dedup_capture_begin(srv.dedup, cut_epoch);
}

/* A saved table into res. */
static void result_add(save_result *res, const char *path, const char *name,
                       const ember_ckpt_meta *meta)
{
    char *f = strdup(path), *t = strdup(name);
    if (!f || !t) {
        free(f);
        free(t);
        return;
    }
    res->files[res->n] = f;
    res->tables[res->n] = t;
    res->cuts[res->n] = meta->version;
    res->n++;
    res->rows += meta->rows;
}

/* Every table at one cut, and the at-most-once window at that cut beside them
 * (dedup.window) once they are all saved. */
static int save_every(const char *dir, const char *why, save_result *res, ember_error *first)
{
    size_t k;
    srv_table **list = srv_registry_list(srv.registry, &k);
    ember_table **ts = calloc(k ? k : 1, sizeof *ts);
    ember_table_snapshot **snaps = calloc(k ? k : 1, sizeof *snaps);
    res->files = calloc(k ? k : 1, sizeof *res->files);
    res->tables = calloc(k ? k : 1, sizeof *res->tables);
    res->cuts = calloc(k ? k : 1, sizeof *res->cuts);
    srv_dedup_capture *cap = NULL;
    int rc = (!list && k) || !ts || !snaps || !res->files || !res->tables || !res->cuts
                 ? ember_error_set(first, EMBER_RESOURCE_EXHAUSTED, "out of memory")
                 : 0;
    for (size_t i = 0; !rc && i < k; i++)
        ts[i] = list[i]->table;
    if (!rc && k)
        rc = ember_table_snapshot_begin_many(ts, k, window_cut, &cap, snaps, first);
    for (size_t i = 0; !rc && i < k; i++) {
        char path[PATH_CAP];
        ember_ckpt_meta meta;
        ember_error e;
        int r = save_table(dir, list[i]->name, why, path, sizeof path, &meta, snaps[i], list[i],
                           &e);
        ember_table_snapshot_end(snaps[i]);
        snaps[i] = NULL;
        if (r == EMBER_NOT_FOUND)
            continue; /* dropped since: not saved, not in the window's set */
        if (r) {
            res->failed++;
            if (!first->code)
                *first = e;
            continue;
        }
        result_add(res, path, list[i]->name, &meta);
    }
    for (size_t i = 0; i < k && snaps; i++)
        ember_table_snapshot_end(snaps[i]);
    if (cap && !rc && !res->failed) {
        uint8_t *body = NULL;
        size_t len = 0, left = 0;
        ember_error we;
        if (srv_dedup_capture_finish(srv.dedup, cap, WINDOW_SETTLE_MS, &body, &len, &left))
            ember_error_set(&we, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        else if (!window_write(dir, res, body, len, &we))
            res->window = 1;
        if (left)
            srv_log(SRV_LOG_WARN, "dedup_window_partial",
                    "dir=%s pending=%zu: pushes still running %u ms after the cut are left out "
                    "of the saved window (a retry of one after a restore applies again)",
                    dir, left, WINDOW_SETTLE_MS);
        if (!res->window) {
            char q[600];
            srv_log(SRV_LOG_WARN, "dedup_window_not_saved", "dir=%s reason=%s", dir,
                    srv_log_q(q, sizeof q, body ? we.message : "out of memory"));
        }
        free(body);
    } else {
        srv_dedup_capture_abort(srv.dedup, cap);
    }
    free(ts);
    free(snaps);
    srv_registry_list_free(list, k);
    return rc ? rc : first->code;
}

/* Saves `table` ("" = every table, at one cut, with the window) into dir. With
 * several tables, one that fails does not stop the others; the first error is
 * returned, saying how many were saved. A table dropped while the save runs is
 * skipped. */
static int save_set(const char *dir, const char *table, const char *why, save_result *res,
                    ember_error *err)
{
    memset(res, 0, sizeof *res);
    if (mkdir(dir, 0755) && errno != EEXIST)
        return ember_error_set(err, EMBER_INTERNAL, "cannot create %s: %s", dir,
                               strerror(errno));
    ember_error first = {0};
    int rc;
    if (*table) {
        char path[PATH_CAP];
        ember_ckpt_meta meta;
        res->files = calloc(1, sizeof *res->files);
        res->tables = calloc(1, sizeof *res->tables);
        res->cuts = calloc(1, sizeof *res->cuts);
        if (!res->files || !res->tables || !res->cuts)
            return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        rc = save_table(dir, table, why, path, sizeof path, &meta, NULL, NULL, &first);
        if (rc)
            return ember_error_set(err, first.code, "%s", first.message);
        result_add(res, path, table, &meta);
        return 0;
    }
    rc = save_every(dir, why, res, &first);
    if (!rc)
        return 0;
    if (!res->failed) /* before any table was saved */
        return ember_error_set(err, first.code, "%s", first.message);
    return ember_error_set(err, first.code, "%zu of %zu table(s) not saved: %s", res->failed,
                           res->failed + res->n, first.message);
}

/* ---- retire -------------------------------------------------------------- */

/* ---- acknowledgement settings: <dir>/<table>.ack ------------------------ */

static pthread_mutex_t ack_mu = PTHREAD_MUTEX_INITIALIZER;

static int ack_path(char *out, size_t cap, const char *dir, const char *table)
{
    return pathf(out, cap, "%s/%s" ACK_EXT, dir, table);
}

void srv_ckpt_ack_keep(srv_table *t)
{
    const char *dir = srv.cfg.checkpoint_dir;
    char path[PATH_CAP], b[64], q[600];
    if (!*dir || ack_path(path, sizeof path, dir, t->name))
        return;
    /* under the lock the file ends as the last setting stored, whichever call
     * writes last */
    pthread_mutex_lock(&ack_mu);
    int ack = atomic_load(&t->ack);
    unsigned replicas = atomic_load(&t->ack_replicas);
    int e = 0;
    ember_durable_fail fail = {0};
    if (!ack) {
        if (unlink(path) == 0)
            ember_durable_fsync_dir(dir, NULL);
        else if (errno != ENOENT) {
            e = errno;
            fail.df_step = "unlink";
            size_t l = strnlen(path, sizeof fail.df_path - 1);
            memcpy(fail.df_path, path, l);
            fail.df_path[l] = 0;
        }
    } else {
        int len = snprintf(b, sizeof b, "ack=%d replicas=%u\n", ack, replicas);
        ember_durable_file *f = NULL;
        if (!(e = ember_durable_create(path, &f, &fail)) &&
            (e = ember_durable_write(f, b, (size_t)len, &fail)))
            ember_durable_abort(f);
        else if (!e)
            e = ember_durable_commit(f, &fail);
    }
    pthread_mutex_unlock(&ack_mu);
    if (e)
        srv_log(SRV_LOG_WARN, "ack_setting_not_kept", "table=%s step=%s file=%s reason=%s",
                t->name, fail.df_step ? fail.df_step : "", srv_log_q(q, sizeof q, fail.df_path),
                strerror(e));
}

/* The restore's: table `name` takes the setting <dir>/<name>.ack keeps, if any;
 * a file that does not read as one is logged and left out (the table default). */
static void ack_restore(const char *dir, const char *name)
{
    char path[PATH_CAP], b[64] = {0}, q[600];
    if (ack_path(path, sizeof path, dir, name))
        return;
    FILE *fp = fopen(path, "r");
    if (!fp)
        return;
    int ack = -1;
    unsigned replicas = 0;
    int ok = fgets(b, sizeof b, fp) && sscanf(b, "ack=%d replicas=%u", &ack, &replicas) == 2 &&
             ack >= 0 && ack <= 2 && replicas <= SRV_REPL_MAX_FOLLOWERS;
    fclose(fp);
    srv_table *t = srv_registry_get(srv.registry, name, strlen(name));
    if (!ok || !t) {
        srv_log(SRV_LOG_WARN, "ack_setting_unreadable", "table=%s file=%s", name,
                srv_log_q(q, sizeof q, path));
    } else {
        atomic_store(&t->ack, ack);
        atomic_store(&t->ack_replicas, replicas);
        srv_log(SRV_LOG_INFO, "ack_setting_restored", "table=%s ack=%d ack_replicas=%u", name,
                ack, replicas);
    }
    if (t)
        srv_table_unref(t);
}

void srv_ckpt_retire(const char *table)
{
    const char *dir = srv.cfg.checkpoint_dir;
    char path[PATH_CAP], hist[PATH_CAP];
    struct stat st;
    if (!*dir || cur_path(path, sizeof path, dir, table))
        return;
    pthread_mutex_lock(&ack_mu); /* after any srv_ckpt_ack_keep under way */
    if (ack_path(hist, sizeof hist, dir, table) == 0 && unlink(hist) == 0)
        ember_durable_fsync_dir(dir, NULL);
    pthread_mutex_unlock(&ack_mu);
    pthread_mutex_lock(&ck.table_mu);
    if (stat(path, &st) == 0 && hist_keep(dir, table, path, hist, sizeof hist) == 0) {
        if (unlink(path) == 0) {
            ember_durable_fsync_dir(dir, NULL);
            char q[600];
            srv_log(SRV_LOG_INFO, "checkpoint_retired", "table=%s file=%s", table,
                    srv_log_q(q, sizeof q, hist));
        }
    }
    pthread_mutex_unlock(&ck.table_mu);
}

/* ---- open: lock, clean, restore ------------------------------------------ */

static int mkdir_p(const char *dir)
{
    char p[SRV_PATH_MAX];
    pathf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            if (mkdir(p, 0755) && errno != EEXIST)
                return -1;
            *s = '/';
        }
    return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

/* flock on <dir>/.lock: a second server on the same dir (two shards given one
 * volume) would overwrite the first's files. */
static int lock_dir(const char *dir, char *msg, size_t cap)
{
    char p[PATH_CAP];
    pathf(p, sizeof p, "%s/.lock", dir);
    int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(msg, cap, "cannot open %s: %s", p, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB)) {
        char pid[32] = "";
        ssize_t k = pread(fd, pid, sizeof pid - 1, 0);
        pid[k > 0 ? k : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        snprintf(msg, cap,
                 "checkpoint dir %s is in use by another ember-server (pid %s): give each "
                 "shard its own directory",
                 dir, *pid ? pid : "?");
        close(fd);
        return -1;
    }
    char pid[32];
    int k = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, pid, (size_t)k, 0) < 0) {
        /* the pid is only for the message above */
    }
    ck.lock_fd = fd;
    return 0;
}

static void temp_removed(const char *path, void *arg)
{
    (void)arg;
    srv_log(SRV_LOG_INFO, "checkpoint_temp_removed", "file=%s", path);
}

/* Removes temp files of saves that a crash interrupted. Under the dir's lock,
 * every one of them is stale. */
static void clean_temps(const char *dir)
{
    ember_durable_clean_temps(dir, CKPT_EXT, temp_removed, NULL, NULL, NULL);
    ember_durable_clean_temps(dir, WINDOW_EXT, temp_removed, NULL, NULL, NULL);
    ember_durable_clean_temps(dir, ACK_EXT, temp_removed, NULL, NULL, NULL);
}

/* The table names of <dir>/<name>.ckpt files, sorted (malloc'ed; *n). */
static char **current_tables(const char *dir, size_t *n, int *err_no)
{
    DIR *d = opendir(dir);
    char **names = NULL;
    size_t cap = 0;
    *n = 0;
    *err_no = 0;
    if (!d) {
        *err_no = errno;
        return NULL;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name), el = strlen(CKPT_EXT);
        if (l <= el || strcmp(e->d_name + l - el, CKPT_EXT) ||
            !ember_table_name_valid(e->d_name, l - el))
            continue;
        char p[PATH_CAP];
        struct stat st;
        pathf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) || !S_ISREG(st.st_mode))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **q = realloc(names, cap * sizeof *names);
            if (!q) {
                *err_no = ENOMEM;
                break;
            }
            names = q;
        }
        if ((names[*n] = strndup(e->d_name, l - el)) != NULL)
            (*n)++;
    }
    closedir(d);
    if (*n)
        qsort(names, *n, sizeof *names, cmp_asc);
    return names;
}

/* history/ as --checkpoint-keep wants it, also after a crash between a save's
 * link into history/ and its rename (which leaves one link too many). */
static void prune_all(const char *dir)
{
    int err_no;
    size_t n;
    char **names = current_tables(dir, &n, &err_no);
    for (size_t i = 0; i < n; i++) {
        char p[PATH_CAP];
        if (!cur_path(p, sizeof p, dir, names[i]))
            hist_prune(dir, names[i], p, srv.cfg.checkpoint_keep);
    }
    names_free(names, n);
}

/* Checks the header of `path` for table `name` against this server. */
static int restore_check(const char *path, const char *name, ember_ckpt_meta *m,
                         ember_error *err)
{
    int rc = ember_ckpt_read_meta(path, m, err);
    if (rc)
        return rc;
    if (m->shard_index != srv.cfg.shard_index || m->shard_count != srv.cfg.shard_count)
        return ember_error_set(
            err, EMBER_FAILED_PRECONDITION,
            "%s: checkpoint of shard %u of %u, but this server is shard %u of %u "
            "(--shard-index/--shard-count): a volume of another shard, or another shard "
            "count (emberctl reshard converts checkpoints between counts)",
            path, m->shard_index, m->shard_count, srv.cfg.shard_index, srv.cfg.shard_count);
    if (strcmp(m->table_name, name))
        return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                               "%s: checkpoint of table '%s', not of '%s' as its name says",
                               path, m->table_name, name);
    return 0;
}

static int restore(const char *dir, char *msg, size_t cap)
{
    uint64_t t0 = mono_ms();
    int err_no;
    size_t n;
    char **names = current_tables(dir, &n, &err_no);
    if (err_no) {
        names_free(names, n);
        snprintf(msg, cap, "cannot read checkpoint dir %s: %s", dir, strerror(err_no));
        return -1;
    }
    ember_error err = {0}, first = {0};
    size_t bad = 0;
    char path[PATH_CAP], q[700];
    /* every header first: a foreign or damaged file refuses the whole start
     * before any table is loaded, and every such file is named in the log */
    for (size_t i = 0; i < n; i++) {
        ember_ckpt_meta m;
        cur_path(path, sizeof path, dir, names[i]);
        if (restore_check(path, names[i], &m, &err)) {
            srv_log(SRV_LOG_ERROR, "restore_refused", "table=%s file=%s code=%s reason=%s",
                    names[i], path, ember_status_name(err.code),
                    srv_log_q(q, sizeof q, err.message));
            if (!bad++)
                first = err;
        }
    }
    uint64_t rows = 0, *cuts = calloc(n ? n : 1, sizeof *cuts);
    for (size_t i = 0; i < n && !bad; i++) {
        uint64_t t1 = mono_ms();
        ember_ckpt_meta m;
        cur_path(path, sizeof path, dir, names[i]);
        if (srv_ckpt_load_file(path, names[i], 1, "restore", &m, NULL, &err)) {
            srv_log(SRV_LOG_ERROR, "restore_refused", "table=%s file=%s code=%s reason=%s",
                    names[i], path, ember_status_name(err.code),
                    srv_log_q(q, sizeof q, err.message));
            bad++;
            first = err;
            break;
        }
        char s[STAMP_BUF];
        stamp(s, m.created_ns);
        rows += m.rows;
        ack_restore(dir, names[i]);
        if (cuts)
            cuts[i] = m.version;
        srv_log(SRV_LOG_INFO, "restored",
                "table=%s rows=%llu version=%llu file=%s saved_at=%s ms=%.0f", names[i],
                (unsigned long long)m.rows, (unsigned long long)m.version, path, s, ms_since(t1));
    }
    if (bad) {
        snprintf(msg, cap,
                 "cannot restore checkpoints from %s: %s: %s%s; not starting with a table "
                 "missing. Move the file away to start without that table (older "
                 "checkpoints are in %s/" HIST_DIR "/), or fix --shard-index/--shard-count",
                 dir, ember_status_name(first.code), first.message,
                 bad > 1 ? " (and more: see the log)" : "", dir);
    } else {
        if (cuts)
            srv_ckpt_window_apply(dir, names, cuts, n, "restore");
        srv_log(SRV_LOG_INFO, "restore_done", "dir=%s tables=%zu rows=%llu ms=%.0f", dir, n,
                (unsigned long long)rows, ms_since(t0));
    }
    free(cuts);
    names_free(names, n);
    return bad ? -1 : 0;
}

int srv_ckpt_open(char *msg, size_t cap)
{
    const char *dir = srv.cfg.checkpoint_dir;
    if (!*dir)
        return 0;
    if (mkdir_p(dir)) {
        snprintf(msg, cap, "cannot create checkpoint dir %s: %s", dir, strerror(errno));
        return -1;
    }
    if (lock_dir(dir, msg, cap))
        return -1;
    clean_temps(dir);
    prune_all(dir);
    if (!srv.cfg.checkpoint_restore) {
        srv_log(SRV_LOG_INFO, "restore_skipped", "dir=%s reason=--checkpoint-restore=off", dir);
        return 0;
    }
    return restore(dir, msg, cap);
}

/* ---- the checkpointer thread --------------------------------------------- */

/* <base>/sets/<set>: a fresh directory, never one a save already used. */
static int set_dir(const char *base, const char *set, char *out, size_t cap, ember_error *err)
{
    char sets[PATH_CAP];
    if (pathf(sets, sizeof sets, "%s/" SETS_DIR, base) ||
        pathf(out, cap, "%s/" SETS_DIR "/%s", base, set))
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "dir is too long");
    if ((mkdir(base, 0755) && errno != EEXIST) || (mkdir(sets, 0755) && errno != EEXIST))
        return ember_error_set(err, EMBER_INTERNAL, "cannot create %s: %s", sets,
                               strerror(errno));
    if (mkdir(out, 0755))
        return ember_error_set(err, errno == EEXIST ? EMBER_ALREADY_EXISTS : EMBER_INTERNAL,
                               "cannot create %s: %s%s", out, strerror(errno),
                               errno == EEXIST ? " (a save set of that name exists: name "
                                                 "each cluster-wide save anew)"
                                               : "");
    ember_durable_fsync_dir(sets, NULL);
    return 0;
}

static void run_job(ck_job *j)
{
    const char *dir = *j->dir ? j->dir : srv.cfg.checkpoint_dir;
    char sdir[PATH_CAP];
    save_result res;
    ember_error err = {0};
    int rc = 0;
    memset(&res, 0, sizeof res);
    if (*j->set && !(rc = set_dir(dir, j->set, sdir, sizeof sdir, &err)))
        dir = sdir;
    if (!rc)
        rc = save_set(dir, j->table, "save", &res, &err);
    srv_ckpt_saved saved = {res.files, res.n, res.rows, dir, res.tables, res.cuts, res.window};
    j->done(j->arg, rc, &err, &saved);
    result_free(&res);
}

static void timed_save(const char *why)
{
    uint64_t t0 = mono_ms();
    save_result res;
    ember_error err = {0};
    int rc = save_set(srv.cfg.checkpoint_dir, "", why, &res, &err);
    srv_log(rc ? SRV_LOG_ERROR : SRV_LOG_INFO, "checkpoint_done",
            "why=%s tables=%zu failed=%zu rows=%llu ms=%.0f", why, res.n, res.failed,
            (unsigned long long)res.rows, ms_since(t0));
    result_free(&res);
}

static void *ck_main(void *arg)
{
    (void)arg;
    ember_error err;
    if (srv_backend_thread_init(&srv.backend, &err)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "checkpointer_device_failed", "gpu=%d reason=%s",
                srv.backend.gpu, srv_log_q(q, sizeof q, err.message));
    }
    uint64_t every = *srv.cfg.checkpoint_dir ? srv.cfg.checkpoint_interval_ms : 0;
    uint64_t due = mono_ms() + every;
    pthread_mutex_lock(&ck.mu);
    for (;;) {
        if (ck.head) {
            ck_job *j = ck.head;
            ck.head = j->next;
            if (!ck.head)
                ck.tail = NULL;
            pthread_mutex_unlock(&ck.mu);
            run_job(j);
            free(j);
            pthread_mutex_lock(&ck.mu);
            continue;
        }
        if (ck.stop)
            break;
        uint64_t now = mono_ms();
        if (every && now >= due) {
            pthread_mutex_unlock(&ck.mu);
            /* none once shutdown has begun: the exit save follows */
            if (!atomic_load(&srv.stopping))
                timed_save("interval");
            /* period from start to start; a save longer than the period is
             * followed by the next one at once, never by a backlog */
            due += every;
            if (due < mono_ms())
                due = mono_ms();
            pthread_mutex_lock(&ck.mu);
            continue;
        }
        if (every) {
            struct timespec dl;
            clock_gettime(CLOCK_MONOTONIC, &dl);
            uint64_t wait = due - now;
            dl.tv_sec += (time_t)(wait / 1000);
            dl.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (dl.tv_nsec >= 1000000000L) {
                dl.tv_sec++;
                dl.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&ck.cv, &ck.mu, &dl);
        } else {
            pthread_cond_wait(&ck.cv, &ck.mu);
        }
    }
    pthread_mutex_unlock(&ck.mu);
    return NULL;
}

int srv_ckpt_start(char *msg, size_t cap)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&ck.cv, &a);
    pthread_condattr_destroy(&a);
    int e = pthread_create(&ck.thread, NULL, ck_main, NULL);
    if (e) {
        snprintf(msg, cap, "cannot start the checkpointer thread: %s", strerror(e));
        return -1;
    }
    ck.started = 1;
    if (*srv.cfg.checkpoint_dir)
        srv_log(SRV_LOG_INFO, "checkpointer", "dir=%s interval_ms=%llu keep=%u on_exit=%d",
                srv.cfg.checkpoint_dir, (unsigned long long)srv.cfg.checkpoint_interval_ms,
                srv.cfg.checkpoint_keep, srv.cfg.checkpoint_on_exit);
    return 0;
}

int srv_ckpt_queue_save(const char *table, const char *dir, const char *set,
                        srv_ckpt_done_fn done, void *arg, ember_error *err)
{
    ck_job *j = calloc(1, sizeof *j);
    if (!j)
        return ember_error_set(err, EMBER_RESOURCE_EXHAUSTED, "out of memory");
    j->done = done;
    j->arg = arg;
    snprintf(j->table, sizeof j->table, "%s", table);
    snprintf(j->dir, sizeof j->dir, "%s", dir);
    snprintf(j->set, sizeof j->set, "%s", set ? set : "");
    pthread_mutex_lock(&ck.mu);
    if (ck.tail)
        ck.tail->next = j;
    else
        ck.head = j;
    ck.tail = j;
    pthread_cond_signal(&ck.cv);
    pthread_mutex_unlock(&ck.mu);
    return 0;
}

void srv_ckpt_stop(void)
{
    if (!ck.started)
        return;
    pthread_mutex_lock(&ck.mu);
    ck.stop = 1;
    pthread_cond_signal(&ck.cv);
    pthread_mutex_unlock(&ck.mu);
    pthread_join(ck.thread, NULL);
    ck.started = 0;
}

/* ---- the exit save ------------------------------------------------------- */

static pthread_mutex_t exit_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t exit_cv = PTHREAD_COND_INITIALIZER;
static int exit_done;

/* --checkpoint-exit-timeout-ms: a save still running then is abandoned. */
static void *exit_watchdog(void *arg)
{
    unsigned ms = *(unsigned *)arg;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += ms / 1000;
    dl.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&exit_mu);
    while (!exit_done)
        if (pthread_cond_timedwait(&exit_cv, &exit_mu, &dl) == ETIMEDOUT && !exit_done) {
            srv_log(SRV_LOG_ERROR, "shutdown_checkpoint_timeout",
                    "timeout_ms=%u saved=partial: exiting without finishing the save; the "
                    "previous checkpoints are intact",
                    ms);
            _exit(1);
        }
    pthread_mutex_unlock(&exit_mu);
    return NULL;
}

int srv_ckpt_exit_save(void)
{
    if (!*srv.cfg.checkpoint_dir || !srv.cfg.checkpoint_on_exit)
        return 0;
    static unsigned timeout;
    pthread_t wd;
    int have_wd = 0;
    timeout = srv.cfg.checkpoint_exit_timeout_ms;
    if (timeout)
        have_wd = pthread_create(&wd, NULL, exit_watchdog, &timeout) == 0;
    uint64_t t0 = mono_ms();
    save_result res;
    ember_error err = {0};
    int rc = save_set(srv.cfg.checkpoint_dir, "", "exit", &res, &err);
    char q[600];
    srv_log(rc ? SRV_LOG_ERROR : SRV_LOG_INFO, "shutdown_checkpoint",
            "dir=%s tables=%zu failed=%zu rows=%llu ms=%.0f%s%s", srv.cfg.checkpoint_dir, res.n,
            res.failed, (unsigned long long)res.rows, ms_since(t0), rc ? " reason=" : "",
            rc ? srv_log_q(q, sizeof q, err.message) : "");
    result_free(&res);
    if (have_wd) {
        pthread_mutex_lock(&exit_mu);
        exit_done = 1;
        pthread_cond_signal(&exit_cv);
        pthread_mutex_unlock(&exit_mu);
        pthread_join(wd, NULL);
    }
    return rc ? -1 : 0;
}
