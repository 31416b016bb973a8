/* server.c — the server's state and its method table (server.h). */
#include "server/server.h"

#include <string.h>

srv_state srv;

/* Payload 0 (Import): a client stream, its messages read one by one by the
 * handler. Health is uncapped, so an overloaded shard is not also declared dead.
 * Roles: Health open to everyone, Shard to workers, Admin to admins (auth.h). */
const srv_method_desc srv_methods[SRV_M_COUNT] = {
    [SRV_M_PULL] = {"/ember.v1.Shard/Pull", "Pull", SRV_ROLE_WORKER, 1, 4, 1, 0,
                    .shard = srv_shard_pull},
    [SRV_M_PUSH] = {"/ember.v1.Shard/Push", "Push", SRV_ROLE_WORKER, 1, 4, 1, 1,
                    .shard = srv_shard_push},
    [SRV_M_PUSHPULL] = {"/ember.v1.Shard/PushPull", "PushPull", SRV_ROLE_WORKER, 1, 2, 1, 2,
                        .shard = srv_shard_pushpull},
    [SRV_M_CREATE] = {"/ember.v1.Admin/CreateTable", "CreateTable", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                      .unary = srv_admin_create},
    [SRV_M_DROP] = {"/ember.v1.Admin/DropTable", "DropTable", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                    .unary = srv_admin_drop},
    [SRV_M_LIST] = {"/ember.v1.Admin/ListTables", "ListTables", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                    .unary = srv_admin_list},
    [SRV_M_DESCRIBE] = {"/ember.v1.Admin/DescribeTable", "DescribeTable", SRV_ROLE_ADMIN, 1, 1,
                        1, -1, .unary = srv_admin_describe},
    [SRV_M_STATS] = {"/ember.v1.Admin/GetStats", "GetStats", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                     .unary = srv_admin_stats},
    [SRV_M_SAVE] = {"/ember.v1.Admin/Save", "Save", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                    .call = srv_admin_save_start},
    [SRV_M_LOAD] = {"/ember.v1.Admin/Load", "Load", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                    .unary = srv_admin_load},
    [SRV_M_EVICT] = {"/ember.v1.Admin/Evict", "Evict", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                     .unary = srv_admin_evict},
    [SRV_M_CLEAR] = {"/ember.v1.Admin/Clear", "Clear", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                     .unary = srv_admin_clear},
    [SRV_M_INFO] = {"/ember.v1.Admin/ServerInfo", "ServerInfo", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                    .unary = srv_admin_info},
    [SRV_M_EXPORT] = {"/ember.v1.Admin/Export", "Export", SRV_ROLE_ADMIN, 1, 1, 1, -1,
                      .call = srv_admin_export_start},
    [SRV_M_IMPORT] = {"/ember.v1.Admin/Import", "Import", SRV_ROLE_ADMIN, 0, 1, 1, -1,
                      .call = srv_admin_import_start},
    [SRV_M_HEALTH] = {"/grpc.health.v1.Health/Check", "Health.Check", SRV_ROLE_NONE, 1, 2, 0,
                      -1, .unary = srv_admin_health},
};

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
