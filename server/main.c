/*
 * main.c — ember-server: settings, start, wait for SIGTERM/SIGINT, graceful stop.
 *
 * Exit status: 0 after a clean stop (a signal) or --help; 2 for a bad setting;
 * 1 when the server cannot start (e.g. the port is taken: gRPC's SO_REUSEPORT is
 * turned off so a second server on a port fails instead of sharing it; or
 * --backend gpu where this build or machine has no GPU to serve on).
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "server/log.h"
#include "server/rpc.h"

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
    srv_rpc_stop(srv.cfg.shutdown_grace_ms);
    srv_registry_destroy(srv.registry);
    srv_dedup_destroy(srv.dedup);
    srv_log(SRV_LOG_INFO, "stopped", "requests=%llu errors=%llu",
            (unsigned long long)atomic_load(&srv.requests),
            (unsigned long long)atomic_load(&srv.errors));
    return 0;
}
