/*
 * main.c — ember-server: settings, start, wait for SIGTERM/SIGINT, graceful stop.
 *
 * Start: settings, backend, then the checkpoint dir (lock, restore: ckpt.h)
 * before the port opens, so no call ever sees a table half restored.
 * Stop (SIGTERM/SIGINT): stop accepting, let in-flight calls finish (up to
 * --shutdown-grace-ms), let a periodic save in progress end, then save every
 * table (--checkpoint-on-exit) and exit. A second signal during that save
 * abandons it (the previous checkpoints are intact) and exits 1 at once.
 *
 * Exit status: 0 after a clean stop (a signal) or --help; 2 for a bad setting;
 * 1 when the server cannot start (e.g. the port is taken: gRPC's SO_REUSEPORT is
 * turned off so a second server on a port fails instead of sharing it;
 * --backend gpu where this build or machine has no GPU to serve on; the
 * checkpoint dir is locked by another server, or holds a damaged checkpoint or
 * one of another shard; the --metrics-listen address is taken), or when the
 * shutdown save failed or was abandoned.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "server/auth.h"
#include "server/ckpt.h"
#include "server/expire.h"
#include "server/log.h"
#include "server/metrics.h"
#include "server/repl.h"
#include "server/rpc.h"
#include "server/server.h"

/* After the first signal: a second one (an impatient operator's Ctrl-C) ends the
 * process at once, a shutdown save in progress included. */
static void *second_signal(void *arg)
{
    int sig = 0;
    sigwait((const sigset_t *)arg, &sig);
    srv_log(SRV_LOG_WARN, "second_signal", "signal=%s exiting_now=1",
            sig == SIGTERM ? "SIGTERM" : "SIGINT");
    _exit(1);
    return NULL;
}

int main(int argc, char **argv)
{
    char msg[512];
    int rc = srv_config_parse(&srv.cfg, argc, argv, msg, sizeof msg);
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "ember-server: %s\n", msg);
        return 2;
    }
    srv_log_set_level(srv.cfg.log_level);
    srv_log_set_json(srv.cfg.log_json);
    if (srv_auth_setup(&srv.cfg, msg, sizeof msg)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "start_failed", "reason=%s", srv_log_q(q, sizeof q, msg));
        fprintf(stderr, "ember-server: %s\n", msg);
        return 1;
    }

    /* before any thread starts: the gpu backend sets this thread's device, and
     * the worker threads set theirs from srv.backend */
    if (srv_backend_select(&srv.cfg, &srv.backend, msg, sizeof msg)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "start_failed", "reason=%s", srv_log_q(q, sizeof q, msg));
        fprintf(stderr, "ember-server: %s\n", msg);
        return 1;
    }
    if (srv.backend.gpu >= 0) {
        char q[300];
        srv_log(SRV_LOG_INFO, "backend", "backend=gpu asked=%s gpu=%d device=%s "
                "device_memory_bytes=%llu hbm_bytes=%llu",
                srv.cfg.backend, srv.backend.gpu,
                srv_log_q(q, sizeof q, srv.backend.device),
                (unsigned long long)srv.backend.device_memory,
                (unsigned long long)srv.backend.hbm_bytes);
    } else {
        srv_log(SRV_LOG_INFO, "backend", "backend=cpu asked=%s cuda=%s", srv.cfg.backend,
                srv_backend_have_cuda() ? "built" : "not_built");
    }

    /* Signals are taken synchronously by this thread (sigwait); every thread
     * started from here on, gRPC's included, inherits the blocked mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv.registry = srv_registry_create(srv.cfg.max_tables);
    srv.dedup = srv_dedup_create(0);
    if (!srv.registry || !srv.dedup) {
        fprintf(stderr, "ember-server: out of memory\n");
        return 1;
    }
    if (srv_ckpt_open(msg, sizeof msg) || srv_ckpt_start(msg, sizeof msg) ||
        srv_expire_start(msg, sizeof msg)) {
        char q[1200];
        srv_log(SRV_LOG_ERROR, "start_failed", "reason=%s", srv_log_q(q, sizeof q, msg));
        fprintf(stderr, "ember-server: %s\n", msg);
        return 1;
    }
    /* before the gRPC port opens, so a bad --metrics-listen fails the start
     * before any client is served */
    if (srv_metrics_start(msg, sizeof msg)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "start_failed", "reason=%s", srv_log_q(q, sizeof q, msg));
        fprintf(stderr, "ember-server: %s\n", msg);
        return 1;
    }
    /* the role before the port opens: a follower never takes a write */
    if (srv_repl_start(msg, sizeof msg) || srv_follow_start(msg, sizeof msg)) {
        fprintf(stderr, "ember-server: %s\n", msg);
        return 1;
    }
    if (srv_rpc_start(msg, sizeof msg)) {
        char q[600];
        srv_log(SRV_LOG_ERROR, "start_failed", "reason=%s", srv_log_q(q, sizeof q, msg));
        fprintf(stderr, "ember-server: %s\n", msg);
        return 1;
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    srv_log(SRV_LOG_INFO, "stopping", "signal=%s live_calls=%ld",
            sig == SIGTERM ? "SIGTERM" : "SIGINT", atomic_load(&srv.live_calls));
    pthread_t second;
    pthread_create(&second, NULL, second_signal, &sigs);
    srv_follow_stop();
    srv_rpc_stop(srv.cfg.shutdown_grace_ms);
    srv_repl_stop(); /* replicated pushes still parked are answered UNAVAILABLE */
    srv_expire_stop();
    srv_ckpt_stop();
    int saved = srv_ckpt_exit_save();
    srv_metrics_stop(); /* it reads the registry: before that is freed */
    srv_registry_destroy(srv.registry);
    srv_dedup_destroy(srv.dedup);
    srv_log(SRV_LOG_INFO, "stopped", "requests=%llu errors=%llu exit=%d",
            (unsigned long long)atomic_load(&srv.requests),
            (unsigned long long)atomic_load(&srv.errors), saved ? 1 : 0);
    return saved ? 1 : 0;
}
