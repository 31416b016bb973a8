/*
 * manifest.c — the manifest of a cluster-wide save (ctl.h): written whole or
 * not at all (storage/durable.h), read back with a small JSON reader that knows
 * this one document's shape.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"
#include "storage/durable.h"

#define MANIFEST_FORMAT "ember-save-manifest"
#define MANIFEST_VERSION 1

void ctl_manifest_free(ctl_manifest *m)
{
    for (size_t i = 0; m->shards && i < m->n; i++) {
        ctl_manifest_shard *s = &m->shards[i];
        free(s->address);
        free(s->dir);
        for (size_t t = 0; t < s->n; t++)
            free(s->tables[t].name);
        free(s->tables);
    }
    free(m->shards);
    free(m->set);
    memset(m, 0, sizeof *m);
}

/* ---- writing ------------------------------------------------------------------------ */

int ctl_manifest_write(const char *path, const ctl_manifest *m, char *err, size_t cap)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    ctl_json j;
    ctl_json_init(&j, f);
    ctl_json_object(&j, NULL);
    ctl_json_str(&j, "format", MANIFEST_FORMAT);
    ctl_json_u64(&j, "version", MANIFEST_VERSION);
    ctl_json_str(&j, "set", m->set);
    ctl_json_u64(&j, "created_unix_ns", m->created_ns);
    ctl_json_u64(&j, "shard_count", m->shard_count);
    ctl_json_array(&j, "shards");
    for (size_t i = 0; i < m->n; i++) {
        const ctl_manifest_shard *s = &m->shards[i];
        ctl_json_object(&j, NULL);
        ctl_json_u64(&j, "shard", s->index);
        ctl_json_str(&j, "address", s->address);
        ctl_json_str(&j, "dir", s->dir);
        ctl_json_bool(&j, "window", s->window);
        ctl_json_array(&j, "tables");
        for (size_t t = 0; t < s->n; t++) {
            ctl_json_object(&j, NULL);
            ctl_json_str(&j, "name", s->tables[t].name);
            ctl_json_u64(&j, "cut", s->tables[t].cut);
            ctl_json_end_object(&j);
        }
        ctl_json_end_array(&j);
        ctl_json_end_object(&j);
    }
    ctl_json_end_array(&j);
    ctl_json_end_object(&j);
    ctl_json_finish(&j);
    fclose(f);
    ember_durable_file *df = NULL;
    ember_durable_fail fail;
    int e = ember_durable_create(path, &df, &fail);
    if (!e && (e = ember_durable_write(df, buf, len, &fail)))
        ember_durable_abort(df);
    else if (!e)
        e = ember_durable_commit(df, &fail); /* fsync, rename over path, fsync the dir */
    free(buf);
    if (e) {
        snprintf(err, cap, "%s (%s): %s", fail.df_path, fail.df_step, strerror(e));
        return -1;
    }
    return 0;
}

/* ---- reading: a JSON reader for this document --------------------------------------- */

typedef struct jr {
    const char *p, *start, *end;
    char *err;
    size_t cap;
} jr;

__attribute__((format(printf, 2, 3))) static int jr_fail(jr *r, const char *fmt, ...)
{
    if (r->err[0])
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->cap, fmt, ap);
    va_end(ap);
    return -1;
}

static void jr_ws(jr *r)
{
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\t' || *r->p == '\r'))
        r->p++;
}

static int jr_peek(jr *r, char c)
{
    jr_ws(r);
    return r->p < r->end && *r->p == c;
}

static int jr_expect(jr *r, char c)
{
    if (!jr_peek(r, c))
        return jr_fail(r, "expected '%c' at byte %td", c, r->p - r->start);
    r->p++;
    return 0;
}

/* A string (escapes \" \\ \/ \b \f \n \r \t; \u of ASCII only): malloc'ed. */
static char *jr_string(jr *r)
{
    if (jr_expect(r, '"'))
        return NULL;
    char *out = malloc((size_t)(r->end - r->p) + 1);
    size_t n = 0;
    while (out && r->p < r->end && *r->p != '"') {
        char c = *r->p++;
        if (c == '\\' && r->p < r->end) {
            char e = *r->p++;
            const char *map = "\"\"\\\\//b\bf\fn\nr\rt\t";
            const char *m = strchr(map, e);
            if (e == 'u' && r->end - r->p >= 4) {
                unsigned v;
                if (sscanf(r->p, "%4x", &v) != 1 || v > 0x7f) {
                    free(out);
                    jr_fail(r, "unsupported \\u escape");
                    return NULL;
                }
                c = (char)v;
                r->p += 4;
            } else if (e && m && (m - map) % 2 == 0) {
                c = m[1];
            } else {
                free(out);
                jr_fail(r, "bad escape \\%c", e);
                return NULL;
            }
        }
        out[n++] = c;
    }
    if (!out || r->p >= r->end) {
        free(out);
        jr_fail(r, "unterminated string");
        return NULL;
    }
    r->p++;
    out[n] = '\0';
    return out;
}

static int jr_u64(jr *r, uint64_t *v)
{
    jr_ws(r);
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return jr_fail(r, "expected a number");
    uint64_t x = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        unsigned d = (unsigned)(*r->p++ - '0');
        if (x > (UINT64_MAX - d) / 10)
            return jr_fail(r, "number too large");
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

static int jr_bool(jr *r, int *v)
{
    jr_ws(r);
    if (r->end - r->p >= 4 && !strncmp(r->p, "true", 4)) {
        r->p += 4;
        *v = 1;
        return 0;
    }
    if (r->end - r->p >= 5 && !strncmp(r->p, "false", 5)) {
        r->p += 5;
        *v = 0;
        return 0;
    }
    return jr_fail(r, "expected true or false");
}

/* Walks an object: for each key, fn(r, key, arg) reads its value. */
static int jr_object(jr *r, int (*fn)(jr *, const char *, void *), void *arg)
{
    if (jr_expect(r, '{'))
        return -1;
    if (jr_peek(r, '}'))
        return r->p++, 0;
    for (;;) {
        char *key = jr_string(r);
        int rc = !key || jr_expect(r, ':') || fn(r, key, arg);
        free(key);
        if (rc)
            return -1;
        if (jr_peek(r, ','))
            r->p++;
        else
            return jr_expect(r, '}');
    }
}

/* Walks an array: fn(r, index, arg) reads each element. */
static int jr_array(jr *r, int (*fn)(jr *, size_t, void *), void *arg)
{
    if (jr_expect(r, '['))
        return -1;
    if (jr_peek(r, ']'))
        return r->p++, 0;
    for (size_t i = 0;; i++) {
        if (fn(r, i, arg))
            return -1;
        if (jr_peek(r, ','))
            r->p++;
        else
            return jr_expect(r, ']');
    }
}

static int grow(void **v, size_t i, size_t size)
{
    void *q = realloc(*v, (i + 1) * size);
    if (!q)
        return -1;
    memset((char *)q + i * size, 0, size);
    *v = q;
    return 0;
}

static int table_key(jr *r, const char *key, void *arg)
{
    ctl_manifest_table *t = arg;
    if (!strcmp(key, "name"))
        return (t->name = jr_string(r)) ? 0 : -1;
    if (!strcmp(key, "cut"))
        return jr_u64(r, &t->cut);
    return jr_fail(r, "unknown key '%s' in a table", key);
}

static int table_elem(jr *r, size_t i, void *arg)
{
    ctl_manifest_shard *s = arg;
    if (grow((void **)&s->tables, i, sizeof *s->tables))
        return jr_fail(r, "out of memory");
    s->n = i + 1;
    if (jr_object(r, table_key, &s->tables[i]))
        return -1;
    return s->tables[i].name ? 0 : jr_fail(r, "a table without a name");
}

static int shard_key(jr *r, const char *key, void *arg)
{
    ctl_manifest_shard *s = arg;
    uint64_t v;
    if (!strcmp(key, "shard")) {
        if (jr_u64(r, &v) || v > UINT32_MAX)
            return jr_fail(r, "bad shard index");
        s->index = (unsigned)v;
        return 0;
    }
    if (!strcmp(key, "address"))
        return (s->address = jr_string(r)) ? 0 : -1;
    if (!strcmp(key, "dir"))
        return (s->dir = jr_string(r)) ? 0 : -1;
    if (!strcmp(key, "window"))
        return jr_bool(r, &s->window);
    if (!strcmp(key, "tables"))
        return jr_array(r, table_elem, s);
    return jr_fail(r, "unknown key '%s' in a shard", key);
}

static int shard_elem(jr *r, size_t i, void *arg)
{
    ctl_manifest *m = arg;
    if (grow((void **)&m->shards, i, sizeof *m->shards))
        return jr_fail(r, "out of memory");
    m->n = i + 1;
    if (jr_object(r, shard_key, &m->shards[i]))
        return -1;
    return m->shards[i].dir ? 0 : jr_fail(r, "a shard without a dir");
}

typedef struct top {
    ctl_manifest *m;
    int format_ok;
    uint64_t version;
} top;

static int top_key(jr *r, const char *key, void *arg)
{
    top *t = arg;
    uint64_t v;
    if (!strcmp(key, "format")) {
        char *f = jr_string(r);
        t->format_ok = f && !strcmp(f, MANIFEST_FORMAT);
        free(f);
        return f ? 0 : -1;
    }
    if (!strcmp(key, "version"))
        return jr_u64(r, &t->version);
    if (!strcmp(key, "set"))
        return (t->m->set = jr_string(r)) ? 0 : -1;
    if (!strcmp(key, "created_unix_ns"))
        return jr_u64(r, &t->m->created_ns);
    if (!strcmp(key, "shard_count")) {
        if (jr_u64(r, &v) || v < 1 || v > UINT32_MAX)
            return jr_fail(r, "bad shard_count");
        t->m->shard_count = (unsigned)v;
        return 0;
    }
    if (!strcmp(key, "shards"))
        return jr_array(r, shard_elem, t->m);
    return jr_fail(r, "unknown key '%s'", key);
}

int ctl_manifest_read(const char *path, ctl_manifest *m, char *err, size_t cap)
{
    memset(m, 0, sizeof *m);
    err[0] = '\0';
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, cap, "%s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = NULL;
    size_t len = 0, got;
    char chunk[65536];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        char *q = realloc(buf, len + got);
        if (!q) {
            free(buf);
            fclose(f);
            snprintf(err, cap, "%s: out of memory", path);
            return -1;
        }
        buf = q;
        memcpy(buf + len, chunk, got);
        len += got;
    }
    fclose(f);
    char msg[300] = "";
    jr r = {buf, buf, buf + len, msg, sizeof msg};
    top t = {m, 0, 0};
    int rc = buf ? jr_object(&r, top_key, &t) : jr_fail(&r, "empty file");
    if (!rc) {
        jr_ws(&r);
        if (r.p != r.end)
            rc = jr_fail(&r, "bytes after the document");
    }
    if (!rc && (!t.format_ok || t.version != MANIFEST_VERSION))
        rc = jr_fail(&r, "not an %s version %d", MANIFEST_FORMAT, MANIFEST_VERSION);
    if (!rc && (!m->set || !m->shard_count || m->n != m->shard_count))
        rc = jr_fail(&r, "it names %zu shard(s) of a cluster of %u", m->n, m->shard_count);
    for (size_t i = 0; !rc && i < m->n; i++)
        if (m->shards[i].index != i)
            rc = jr_fail(&r, "shard %zu is listed as shard %u", i, m->shards[i].index);
    free(buf);
    if (rc) {
        snprintf(err, cap, "%s: %s", path, msg);
        ctl_manifest_free(m);
        return -1;
    }
    return 0;
}
