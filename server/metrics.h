/*
 * metrics.h — Prometheus metrics of ember-server, served over plain HTTP at
 * http://<--metrics-listen>/metrics (text exposition format 0.0.4).
 *
 * Two kinds of figures:
 *
 *   - counted as calls happen, by the hooks below: every finished call by method
 *     and status code, its latency (histogram), and the keys of each Shard call
 *     (histogram, and keys pulled/pushed). C11 atomics, relaxed: counts, not a
 *     synchronisation; no lock on the hot path;
 *   - read at scrape time: per table, what GetStats reports (rows, capacity, load
 *     factor, evictions, admission drops, bytes in host and device memory, the
 *     registry's request and coalescing counters, the last checkpoint), and the
 *     process's (uptime, live calls, build info, resident memory, free device
 *     memory).
 *
 * README.md ("Metrics") lists every family. The endpoint has no TLS and no
 * authentication: keep it off the public network (deploy/k8s admits only the
 * monitoring namespace to it).
 *
 * The HTTP server is libmicrohttpd, on a thread of its own (a scrape never holds
 * a gRPC worker), at most a few connections at once.
 *
 * Thread-safety: the hooks and srv_metrics_render may be called from any thread
 * at any time; start and stop from main only.
 */
#ifndef EMBER_SRV_METRICS_H
#define EMBER_SRV_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "server/server.h"

/* A call ended with gRPC status `code`; `started` is when it was matched
 * (CLOCK_MONOTONIC). Counts it by method and code, and its latency. */
void srv_metrics_call(srv_method m, int code, const struct timespec *started);

/* A Shard call (Pull, Push, PushPull) served: `keys` in the request (pull and push
 * keys together for PushPull), of which `pulled` were pulled and `pushed` applied
 * (0 for a duplicate push). */
void srv_metrics_keys(srv_method m, uint64_t keys, uint64_t pulled, uint64_t pushed);

/* The exposition text of every metric now, NUL-terminated, into *out (malloc'ed;
 * free it), its length in *len. Walks the registry (taking its read lock for the
 * list only, then a reference per table). Returns 0, or -1 on no memory. */
int srv_metrics_render(char **out, size_t *len);

/* With --metrics-listen set: binds HOST:PORT (port 0: any free port) and serves
 * GET /metrics on a thread of its own, logging event=metrics_listening with the
 * address bound. Nothing without the flag. Returns 0, or -1 with the reason in
 * msg (the address is in use, not a HOST:PORT, the host does not resolve). */
int srv_metrics_start(char *msg, size_t cap);

/* Stops the HTTP server (a scrape in progress ends first); a no-op when none. */
void srv_metrics_stop(void);

#endif
