/* auth.c — TLS credentials and the per-call role check (auth.h). */
#include "server/auth.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/log.h"
#include "server/server.h"
#include "storage/status.h"

#define TOKEN_MAX 4096

/* Set once by srv_auth_setup before the workers start, read-only afterwards. */
static struct {
    char worker_token[TOKEN_MAX], admin_token[TOKEN_MAX], reader_token[TOKEN_MAX];
    size_t worker_len, admin_len, reader_len;
    const char *worker_ids, *admin_ids, *reader_ids; /* comma-separated; point into the config */
    int enabled;
    atomic_uint_fast64_t unauthenticated, denied;
} auth;

int srv_auth_equal(const void *a, size_t la, const void *b, size_t lb)
{
    const volatile unsigned char *x = a, *y = b;
    unsigned char d = (unsigned char)(la != lb);
    if (!la || !lb)
        return 0;
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(x[i] ^ y[i % lb]);
    return d == 0;
}

/* Reads a whole (small) file into buf, NUL-terminated. -1 with msg on failure. */
static int read_file(const char *path, char *buf, size_t cap, size_t *len, const char *what,
                     char *msg, size_t mcap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(msg, mcap, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    size_t n = fread(buf, 1, cap, f);
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        snprintf(msg, mcap, "%s %s: read error", what, path);
        return -1;
    }
    if (n >= cap) {
        snprintf(msg, mcap, "%s %s: larger than %zu bytes", what, path, cap - 1);
        return -1;
    }
    buf[n] = '\0';
    *len = n;
    return 0;
}

static int load_token(const char *file, const char *env, char *tok, size_t *len,
                      const char *what, char *msg, size_t cap)
{
    *len = 0;
    if (*file) {
        if (read_file(file, tok, TOKEN_MAX, len, what, msg, cap))
            return -1;
    } else {
        const char *v = getenv(env);
        if (!v)
            return 0;
        if (strlen(v) >= TOKEN_MAX) {
            snprintf(msg, cap, "%s: longer than %d bytes", env, TOKEN_MAX - 1);
            return -1;
        }
        strcpy(tok, v);
        *len = strlen(v);
    }
    /* a Secret's file usually ends in a newline that is not part of the token */
    while (*len && strchr(" \t\r\n", tok[*len - 1]))
        tok[--*len] = '\0';
    if (!*len) {
        snprintf(msg, cap, "%s %s is empty", what, *file ? file : env);
        return -1;
    }
    return 0;
}

int srv_auth_setup(const srv_config *cfg, char *msg, size_t cap)
{
    if (load_token(cfg->worker_token_file, "EMBER_WORKER_TOKEN", auth.worker_token,
                   &auth.worker_len, "worker token", msg, cap) ||
        load_token(cfg->admin_token_file, "EMBER_ADMIN_TOKEN", auth.admin_token,
                   &auth.admin_len, "admin token", msg, cap) ||
        load_token(cfg->reader_token_file, "EMBER_READER_TOKEN", auth.reader_token,
                   &auth.reader_len, "reader token", msg, cap))
        return -1;
    if (auth.reader_len &&
        (srv_auth_equal(auth.reader_token, auth.reader_len, auth.worker_token, auth.worker_len) ||
         srv_auth_equal(auth.reader_token, auth.reader_len, auth.admin_token, auth.admin_len))) {
        snprintf(msg, cap, "the reader token is the same as the worker or admin token: a "
                           "reader would be able to write");
        return -1;
    }
    if (auth.worker_len &&
        srv_auth_equal(auth.worker_token, auth.worker_len, auth.admin_token, auth.admin_len)) {
        snprintf(msg, cap, "the worker and admin tokens are the same: a worker could drop "
                           "tables");
        return -1;
    }
    auth.worker_ids = cfg->worker_identities;
    auth.admin_ids = cfg->admin_identities;
    auth.reader_ids = cfg->reader_identities;
    auth.enabled = auth.worker_len || auth.admin_len || auth.reader_len || *auth.worker_ids ||
                   *auth.admin_ids || *auth.reader_ids;
    return 0;
}

int srv_auth_enabled(void) { return auth.enabled; }

void srv_auth_counts(uint64_t *unauthenticated, uint64_t *permission_denied)
{
    *unauthenticated = atomic_load_explicit(&auth.unauthenticated, memory_order_relaxed);
    *permission_denied = atomic_load_explicit(&auth.denied, memory_order_relaxed);
}

grpc_server_credentials *srv_auth_server_credentials(const srv_config *cfg, char *msg,
                                                     size_t cap)
{
    if (!*cfg->tls_cert)
        return grpc_insecure_server_credentials_create();
    enum { PEM_MAX = 1 << 20 };
    char *cert = malloc(PEM_MAX), *key = malloc(PEM_MAX), *ca = NULL;
    size_t n;
    grpc_server_credentials *creds = NULL;
    if (!cert || !key) {
        snprintf(msg, cap, "out of memory");
        goto out;
    }
    if (read_file(cfg->tls_cert, cert, PEM_MAX, &n, "--tls-cert", msg, cap) ||
        read_file(cfg->tls_key, key, PEM_MAX, &n, "--tls-key", msg, cap))
        goto out;
    if (*cfg->tls_client_ca) {
        ca = malloc(PEM_MAX);
        if (!ca) {
            snprintf(msg, cap, "out of memory");
            goto out;
        }
        if (read_file(cfg->tls_client_ca, ca, PEM_MAX, &n, "--tls-client-ca", msg, cap))
            goto out;
    }
    grpc_ssl_pem_key_cert_pair pair = {.private_key = key, .cert_chain = cert};
    creds = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
           : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    if (!creds)
        snprintf(msg, cap, "gRPC refused the TLS certificate, key or client CA");
out:
    if (key) /* the private key should not linger in freed memory */
        memset(key, 0, PEM_MAX);
    free(cert);
    free(key);
    free(ca);
    return creds;
}

int srv_auth_listed(const char *list, const char *name, size_t len)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',')
            e++;
        const char *t = e;
        while (t > p && t[-1] == ' ')
            t--;
        if ((size_t)(t - p) == len && len && !memcmp(p, name, len))
            return 1;
        p = e;
    }
    return 0;
}

/* The role the client certificate's CN or SANs name, and the first name seen
 * (for the log). */
static int cert_role(grpc_call *call, char *who, size_t wcap)
{
    int role = SRV_ROLE_NONE;
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (!ctx)
        return SRV_ROLE_NONE;
    static const char *const props[] = {GRPC_X509_CN_PROPERTY_NAME,
                                        GRPC_X509_SAN_PROPERTY_NAME};
    for (size_t k = 0; k < 2 && role != SRV_ROLE_ADMIN; k++) {
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, props[k]);
        const grpc_auth_property *p;
        while ((p = grpc_auth_property_iterator_next(&it)) && role != SRV_ROLE_ADMIN) {
            if (!*who)
                snprintf(who, wcap, "%.*s", (int)(p->value_length > 200 ? 200 : p->value_length),
                         p->value);
            if (srv_auth_listed(auth.admin_ids, p->value, p->value_length))
                role = SRV_ROLE_ADMIN;
            else if (srv_auth_listed(auth.worker_ids, p->value, p->value_length))
                role = SRV_ROLE_WORKER;
            else if (role < SRV_ROLE_READER &&
                     srv_auth_listed(auth.reader_ids, p->value, p->value_length))
                role = SRV_ROLE_READER;
        }
    }
    grpc_auth_context_release(ctx);
    return role;
}

static int refuse(int code, const char *method, const char *reason, const char *who, char *msg,
                  size_t cap)
{
    atomic_fetch_add_explicit(code == EMBER_UNAUTHENTICATED ? &auth.unauthenticated : &auth.denied,
                              1, memory_order_relaxed);
    snprintf(msg, cap, "%s", reason);
    if (srv_log_level() >= SRV_LOG_DEBUG) {
        char q1[300], q2[300];
        srv_log(SRV_LOG_DEBUG, "refused", "method=%s code=%s reason=%s identity=%s", method,
                ember_status_name(code), srv_log_q(q1, sizeof q1, reason),
                srv_log_q(q2, sizeof q2, who));
    }
    return code;
}

int srv_auth_required_role(const char *method)
{
    srv_method m = srv_method_of_path(method);
    if (m != SRV_M_UNKNOWN)
        return srv_methods[m].role;
    if (!strncmp(method, "/grpc.health.v1.Health/", 23))
        return SRV_ROLE_NONE;
    return !strncmp(method, "/ember.v1.Shard/", 16) ? SRV_ROLE_WORKER : SRV_ROLE_ADMIN;
}

int srv_auth_check_role(grpc_call *call, const grpc_metadata_array *md, const char *method,
                        int need, char *msg, size_t cap)
{
    return srv_auth_check_call(call, md, method, need, NULL, msg, cap);
}

static int refuse_role(const char *method, int need, int have, const char *what,
                       const char *who, char *msg, size_t cap)
{
    char reason[400];
    snprintf(reason, sizeof reason, "%s needs the %s role; this call has the %s role%s", what,
             srv_role_name(need), srv_role_name(have),
             have == SRV_ROLE_READER ? " (a reader may Pull with insert_missing=false only)"
             : have == SRV_ROLE_WORKER ? " (a worker may call ember.v1.Shard only)"
                                       : "");
    return refuse(EMBER_PERMISSION_DENIED, method, reason, who, msg, cap);
}

int srv_auth_refuse_role(const char *method, int need, int have, const char *what, char *msg,
                         size_t cap)
{
    return refuse_role(method, need, have, what, srv_role_name(have), msg, cap);
}

int srv_auth_check_call(grpc_call *call, const grpc_metadata_array *md, const char *method,
                        int need, int *role_out, char *msg, size_t cap)
{
    if (role_out) /* no authentication: every call may do everything */
        *role_out = SRV_ROLE_ADMIN;
    if (!auth.enabled || need == SRV_ROLE_NONE)
        return 0;
    const char *tok = NULL;
    size_t tlen = 0;
    int have_header = 0;
    for (size_t i = 0; i < md->count; i++) {
        /* through pointers: a small slice holds its bytes inline, so a copy's
         * bytes would die with the copy */
        const grpc_slice *k = &md->metadata[i].key, *v = &md->metadata[i].value;
        if (GRPC_SLICE_LENGTH(*k) != 13 ||
            memcmp(GRPC_SLICE_START_PTR(*k), "authorization", 13))
            continue;
        have_header = 1;
        size_t vl = GRPC_SLICE_LENGTH(*v);
        const char *vp = (const char *)GRPC_SLICE_START_PTR(*v);
        if (vl > 7 && !strncasecmp(vp, "Bearer ", 7)) {
            tok = vp + 7;
            tlen = vl - 7;
        }
        break;
    }
    int role = SRV_ROLE_NONE;
    char who[256] = "";
    if (have_header) {
        if (!tok)
            return refuse(EMBER_UNAUTHENTICATED, method,
                          "the authorization metadata is not 'Bearer <token>'", "", msg, cap);
        /* all compared, always: the time does not tell which role matched */
        int admin = srv_auth_equal(tok, tlen, auth.admin_token, auth.admin_len);
        int worker = srv_auth_equal(tok, tlen, auth.worker_token, auth.worker_len);
        int reader = srv_auth_equal(tok, tlen, auth.reader_token, auth.reader_len);
        role = admin    ? SRV_ROLE_ADMIN
               : worker ? SRV_ROLE_WORKER
               : reader ? SRV_ROLE_READER
                        : SRV_ROLE_NONE;
        snprintf(who, sizeof who, "%s",
                 admin    ? "admin-token"
                 : worker ? "worker-token"
                 : reader ? "reader-token"
                          : "token");
        if (role == SRV_ROLE_NONE)
            return refuse(EMBER_UNAUTHENTICATED, method, "the bearer token is not valid", who,
                          msg, cap);
    } else {
        if (*auth.worker_ids || *auth.admin_ids || *auth.reader_ids)
            role = cert_role(call, who, sizeof who);
        if (role == SRV_ROLE_NONE)
            return refuse(EMBER_UNAUTHENTICATED, method,
                          *who ? "the client certificate's identity is not listed in "
                                 "--worker-identities, --admin-identities or "
                                 "--reader-identities"
                               : "credentials required: an 'authorization: Bearer <token>' "
                                 "metadata or a listed client certificate",
                          who, msg, cap);
    }
    if (role < need)
        return refuse_role(method, need, role, "this method", who, msg, cap);
    if (role_out)
        *role_out = role;
    return 0;
}
