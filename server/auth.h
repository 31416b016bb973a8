/*
 * auth.h — who may call what: TLS credentials for the listener and the role
 * check every call passes before it runs.
 *
 * Roles: a reader may call ember.v1.Shard/Pull with insert_missing=false (the
 * serving pull: inference clients), nothing else; a worker may call
 * ember.v1.Shard; an admin may call ember.v1.Admin and ember.v1.Shard (an
 * operator's tools pull and push too). grpc.health.v1.Health
 * is open to everyone, for probes. Authentication is on when any token or
 * identity list is set; then every other call must prove a role:
 *   - `authorization: Bearer <token>` metadata equal to the admin, the worker or
 *     the reader token (compared in constant time), or, with no such metadata,
 *   - under mutual TLS, the client certificate's common name or any of its
 *     subject alternative names listed in --admin-identities (admin),
 *     --worker-identities (worker) or --reader-identities (reader).
 * A call that proves no role (missing, malformed or wrong token, unlisted
 * certificate) is UNAUTHENTICATED; a worker calling Admin, a reader pushing or
 * pulling with insert_missing is PERMISSION_DENIED, the message naming the role
 * needed.
 * Either way the handler does not run; each refusal is counted (srv_auth_counts,
 * shown by Admin/ServerInfo) and logged at debug level.
 *
 * Thread-safety: srv_auth_setup runs once before the workers start; the rest may
 * be called from any thread.
 */
#ifndef EMBER_SRV_AUTH_H
#define EMBER_SRV_AUTH_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stddef.h>
#include <stdint.h>

#include "server/config.h"
#include "server/server.h"

/* Reads the token files (or EMBER_WORKER_TOKEN / EMBER_ADMIN_TOKEN) and the
 * identity lists of `cfg`. Returns 0, or -1 with the reason in msg (an
 * unreadable or empty token file, the same token for both roles). */
int srv_auth_setup(const srv_config *cfg, char *msg, size_t cap);

/* The listener's credentials: TLS (mutual with --tls-client-ca) when
 * --tls-cert is set, else insecure. NULL with the reason in msg when a PEM file
 * cannot be read. The caller releases them. */
grpc_server_credentials *srv_auth_server_credentials(const srv_config *cfg, char *msg,
                                                     size_t cap);

/* Whether authentication is on (any token or identity list set). */
int srv_auth_enabled(void);

/* Checks a matched call to `method` (its full gRPC path, for the log), which
 * needs role `need` (SRV_ROLE_*, the method table's), with its initial metadata
 * `md`. Returns 0 (run it), UNAUTHENTICATED or PERMISSION_DENIED with the reason
 * in msg; refusals are counted and logged. */
int srv_auth_check_role(grpc_call *call, const grpc_metadata_array *md, const char *method,
                        int need, char *msg, size_t cap);

/* srv_auth_check_role, also telling the caller's role in *role_out (when not
 * NULL): the role proved, or SRV_ROLE_ADMIN when authentication is off or the
 * method needs none (no check: everything is allowed). For handlers that allow
 * a role part of a method (a reader's Pull without insert). */
int srv_auth_check_call(grpc_call *call, const grpc_metadata_array *md, const char *method,
                        int need, int *role_out, char *msg, size_t cap);

/* A refusal a handler decides: `what` ("a pull with insert_missing") needs
 * role `need`, the call has `have`. Counts it (as permission denied), logs it at
 * debug level, fills msg ("... needs the worker role; this call has the reader
 * role ...") and returns PERMISSION_DENIED. */
int srv_auth_refuse_role(const char *method, int need, int have, const char *what, char *msg,
                         size_t cap);

/* Refusals since start. */
void srv_auth_counts(uint64_t *unauthenticated, uint64_t *permission_denied);

/* The role (SRV_ROLE_*, server.h) a call to `method` (its full gRPC path,
 * "/pkg.Service/Method") needs when authentication is on: the method table's for
 * a method in it; for any other path its service's: SRV_ROLE_NONE for
 * grpc.health.v1.Health, SRV_ROLE_WORKER for ember.v1.Shard, SRV_ROLE_ADMIN for
 * ember.v1.Admin and anything else. */
int srv_auth_required_role(const char *method);

/* 1 when `name` (len bytes, not NUL-terminated) is an entry of the
 * comma-separated identity list `list` (--worker-identities), entries trimmed of
 * spaces, empty entries skipped; an empty name is never listed. */
int srv_auth_listed(const char *list, const char *name, size_t len);

/* 1 when a and b (of lengths la, lb) are equal; the time taken depends on la
 * and lb only, not on where they differ. */
int srv_auth_equal(const void *a, size_t la, const void *b, size_t lb);

#endif
