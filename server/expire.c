/* expire.c — the TTL sweeper (expire.h). */
#include "server/expire.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "server/log.h"
#include "server/repl.h"
#include "server/server.h"

static struct {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, stop;
} ex = {.mu = PTHREAD_MUTEX_INITIALIZER};

static uint64_t realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sweep(void)
{
    size_t n = 0;
    if (srv_follow_active())
        return; /* a follower's rows go when its leader's do (repl.h) */
    srv_table **list = srv_registry_list(srv.registry, &n);
    for (size_t i = 0; list && i < n && !atomic_load(&srv.stopping); i++) {
        if (!ember_table_ttl(list[i]->table))
            continue;
        uint64_t gone = 0;
        ember_error err;
        if (ember_table_expire(list[i]->table, realtime_ns(), &gone, &err)) {
            char q[600];
            srv_log(SRV_LOG_ERROR, "ttl_sweep_failed", "table=%s reason=%s", list[i]->name,
                    srv_log_q(q, sizeof q, err.message));
        } else if (gone) {
            srv_log(SRV_LOG_DEBUG, "ttl_expired", "table=%s rows=%llu", list[i]->name,
                    (unsigned long long)gone);
        }
    }
    srv_registry_list_free(list, n);
}

static void *ex_main(void *arg)
{
    (void)arg;
    ember_error err;
    if (srv_backend_thread_init(&srv.backend, &err)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "ttl_sweeper_device_failed", "gpu=%d reason=%s",
                srv.backend.gpu, srv_log_q(q, sizeof q, err.message));
    }
    pthread_mutex_lock(&ex.mu);
    while (!ex.stop) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += (time_t)(srv.cfg.ttl_sweep_ms / 1000);
        dl.tv_nsec += (long)(srv.cfg.ttl_sweep_ms % 1000) * 1000000L;
        if (dl.tv_nsec >= 1000000000L) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000L;
        }
        while (!ex.stop && pthread_cond_timedwait(&ex.cv, &ex.mu, &dl) != ETIMEDOUT)
            ;
        if (ex.stop)
            break;
        pthread_mutex_unlock(&ex.mu);
        sweep();
        pthread_mutex_lock(&ex.mu);
    }
    pthread_mutex_unlock(&ex.mu);
    return NULL;
}

int srv_expire_start(char *msg, size_t cap)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&ex.cv, &a);
    pthread_condattr_destroy(&a);
    int e = pthread_create(&ex.thread, NULL, ex_main, NULL);
    if (e) {
        snprintf(msg, cap, "cannot start the TTL sweeper thread: %s", strerror(e));
        return -1;
    }
    ex.started = 1;
    return 0;
}

void srv_expire_stop(void)
{
    if (!ex.started)
        return;
    pthread_mutex_lock(&ex.mu);
    ex.stop = 1;
    pthread_cond_signal(&ex.cv);
    pthread_mutex_unlock(&ex.mu);
    pthread_join(ex.thread, NULL);
    ex.started = 0;
}
