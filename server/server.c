/* server.c — the server's state and its method table (server.h). */
#include "server/server.h"

#include <stdio.h>
#include <string.h>

#include "proto/shard_map.h"
#include "storage/hash.h"

srv_state srv;

/* A Shard method: a worker's, payload read with the call, 4 or 2 requests kept
 * outstanding per worker, capped, with its row of the keys histograms, and the
 * field its handler reads in place (ember.proto: a Pull's keys, a Push's values,
 * a PushPull's push's values). */
#define SHARD(method, role_, reqs, keys_row, fn, ...)                                   \
    {.path = "/ember.v1.Shard/" method, .name = method, .role = (role_),                 \
     .payload = 1, .requests = (reqs), .capped = 1, .keys_metric = (keys_row), .shard = (fn), \
     .align = {__VA_ARGS__}}
/* An Admin method answered by a unary handler, or by a call handler (`call`)
 * that finishes the call itself later (Save, Export, Import); `payload` 0: a
 * client stream whose messages the handler reads one by one (Import). */
#define ADMIN(method, fn)                                                               \
    {.path = "/ember.v1.Admin/" method, .name = method, .role = SRV_ROLE_ADMIN,          \
     .payload = 1, .requests = 1, .capped = 1, .keys_metric = -1, .unary = (fn)}
#define ADMIN_CALL(method, has_payload, fn)                                             \
    {.path = "/ember.v1.Admin/" method, .name = method, .role = SRV_ROLE_ADMIN,          \
     .payload = (has_payload), .requests = 1, .capped = 1, .keys_metric = -1, .call = (fn)}

/* Roles: Health open to everyone, Pull to readers (its handler refuses a
 * reader's insert_missing), Push and PushPull to workers, Admin to admins (auth.h).
 * Health is not capped, so an overloaded shard is not also declared dead. */
const srv_method_desc srv_methods[SRV_M_COUNT] = {
    [SRV_M_PULL] = SHARD("Pull", SRV_ROLE_READER, 4, 0, srv_shard_pull, 2),
    [SRV_M_PUSH] = SHARD("Push", SRV_ROLE_WORKER, 4, 1, srv_shard_push, 3),
    [SRV_M_PUSHPULL] = SHARD("PushPull", SRV_ROLE_WORKER, 2, 2, srv_shard_pushpull, 1, 3),
    [SRV_M_ERASE] = SHARD("Erase", SRV_ROLE_WORKER, 1, 3, srv_shard_erase, 0),
    [SRV_M_CREATE] = ADMIN("CreateTable", srv_admin_create),
    [SRV_M_DROP] = ADMIN("DropTable", srv_admin_drop),
    [SRV_M_LIST] = ADMIN("ListTables", srv_admin_list),
    [SRV_M_DESCRIBE] = ADMIN("DescribeTable", srv_admin_describe),
    [SRV_M_STATS] = ADMIN("GetStats", srv_admin_stats),
    [SRV_M_SAVE] = ADMIN_CALL("Save", 1, srv_admin_save_start),
    [SRV_M_LOAD] = ADMIN("Load", srv_admin_load),
    [SRV_M_EVICT] = ADMIN("Evict", srv_admin_evict),
    [SRV_M_CLEAR] = ADMIN("Clear", srv_admin_clear),
    [SRV_M_ALTER] = ADMIN("AlterTable", srv_admin_alter),
    [SRV_M_SET_EPOCH] = ADMIN("SetEpoch", srv_admin_set_epoch),
    [SRV_M_INFO] = ADMIN("ServerInfo", srv_admin_info),
    [SRV_M_EXPORT] = ADMIN_CALL("Export", 1, srv_admin_export_start),
    [SRV_M_IMPORT] = ADMIN_CALL("Import", 0, srv_admin_import_start),
    [SRV_M_PROMOTE] = ADMIN("Promote", srv_admin_promote),
    [SRV_M_FOLLOW] = ADMIN("Follow", srv_admin_follow),
    [SRV_M_HEALTH] = {.path = "/grpc.health.v1.Health/Check", .name = "Health.Check",
                      .role = SRV_ROLE_NONE, .payload = 1, .requests = 2, .capped = 0,
                      .keys_metric = -1, .unary = srv_admin_health},
};

#undef SHARD
#undef ADMIN
#undef ADMIN_CALL

const char *srv_role_name(int role)
{
    switch (role) {
    case SRV_ROLE_READER: return "reader";
    case SRV_ROLE_WORKER: return "worker";
    case SRV_ROLE_ADMIN: return "admin";
    default: return "none";
    }
}

int srv_method_writes(srv_method m)
{
    switch (m) {
    case SRV_M_PUSH: case SRV_M_PUSHPULL: case SRV_M_ERASE: case SRV_M_CREATE:
    case SRV_M_DROP: case SRV_M_LOAD: case SRV_M_EVICT: case SRV_M_CLEAR: case SRV_M_ALTER:
    case SRV_M_SET_EPOCH: case SRV_M_IMPORT:
        return 1;
    default:
        return 0;
    }
}

const char *srv_method_name(srv_method m)
{
    return (unsigned)m < SRV_M_COUNT ? srv_methods[m].name : "unknown";
}

srv_method srv_method_of_path(const char *path)
{
    for (int m = 0; m < SRV_M_COUNT; m++)
        if (!strcmp(srv_methods[m].path, path))
            return (srv_method)m;
    return SRV_M_UNKNOWN;
}

uint64_t srv_uptime_s(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (uint64_t)(now.tv_sec - srv.started.tv_sec);
}

int srv_check_owner(const uint8_t *keys, size_t n, const char *what, ember_error *err)
{
    uint32_t count = srv.cfg.shard_count, self = srv.cfg.shard_index;
    if (count <= 1 || srv.cfg.key_ownership_off)
        return 0;
    size_t i = 0;
    while ((i += ember_shard_first_other(keys + 8 * i, n - i, count, self)) < n) {
        uint64_t k;
        memcpy(&k, keys + 8 * i, 8);
        if (!ember_key_is_reserved(k))
            return ember_error_set(err, EMBER_FAILED_PRECONDITION,
                                   "%skey %llu " EMBER_NOT_OWNER_MARK " %u, not to this shard %u "
                                   "of %u (--shard-index/--shard-count): the client's shard "
                                   "list is out of order or of another length; nothing was "
                                   "applied",
                                   what, (unsigned long long)k, ember_shard_of(k, count), self,
                                   count);
        i++; /* a reserved key: refused as reserved, later */
    }
    return 0;
}

