/*
 * tfconfig.c — cluster.ps from TF_CONFIG (tfconfig.h).
 *
 * A strict, small recursive-descent JSON reader: it validates the whole document
 * but keeps only the strings of cluster.ps. Hand-written rather than a JSON
 * library because libember links nothing but gRPC and protobuf-c, and the
 * document is a few hundred bytes read once per ember_client_open.
 */
#include "client/tfconfig.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TFC_MAX_DEPTH 64

typedef struct tfc {
    const char *start, *p;
    ember_error *err;
    int code;                /* first failure, 0 while none */
    char **ps;               /* cluster.ps so far (the last one seen wins) */
    unsigned nps;
} tfc;

static int tfc_fail(tfc *t, int code, const char *what)
{
    if (!t->code)
        t->code = ember_error_set(t->err, code, "TF_CONFIG: %s at byte %ld", what,
                                  (long)(t->p - t->start));
    return -1;
}

static void tfc_ws(tfc *t)
{
    while (*t->p == ' ' || *t->p == '\t' || *t->p == '\n' || *t->p == '\r')
        t->p++;
}

static void free_list(char **a, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        free(a[i]);
    free(a);
}

static int hex4(const char *p, unsigned *v)
{
    unsigned x = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        x <<= 4;
        if (c >= '0' && c <= '9')
            x |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            x |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            x |= (unsigned)(c - 'A' + 10);
        else
            return -1;
    }
    *v = x;
    return 0;
}

static char *put_utf8(char *w, unsigned cp)
{
    if (cp < 0x80) {
        *w++ = (char)cp;
    } else if (cp < 0x800) {
        *w++ = (char)(0xC0 | (cp >> 6));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *w++ = (char)(0xE0 | (cp >> 12));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    } else {
        *w++ = (char)(0xF0 | (cp >> 18));
        *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
        *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
        *w++ = (char)(0x80 | (cp & 0x3F));
    }
    return w;
}

/* The string at t->p, unescaped into a malloc'd *out (out NULL: checked and
 * skipped). An escape never decodes to more bytes than it takes, so the raw
 * length bounds the result. \u0000 is refused: it would cut an address short. */
static int tfc_string(tfc *t, char **out)
{
    if (*t->p != '"')
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "expected a string");
    const char *s = ++t->p, *end = s;
    while (*end != '"') {
        if (!*end) {
            t->p = end;
            return tfc_fail(t, EMBER_INVALID_ARGUMENT, "unterminated string");
        }
        if (*end == '\\' && end[1])
            end++;
        end++;
    }
    char *buf = NULL, *w = NULL;
    if (out) {
        buf = malloc((size_t)(end - s) + 1);
        if (!buf)
            return tfc_fail(t, EMBER_RESOURCE_EXHAUSTED, "out of memory");
        w = buf;
    }
    const char *p = s;
    while (p < end) {
        unsigned char ch = (unsigned char)*p;
        if (ch < 0x20) {
            t->p = p;
            free(buf);
            return tfc_fail(t, EMBER_INVALID_ARGUMENT, "control character in a string");
        }
        if (ch != '\\') {
            if (w)
                *w++ = (char)ch;
            p++;
            continue;
        }
        unsigned cp = 0;
        switch (p[1]) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = '\b'; break;
        case 'f': cp = '\f'; break;
        case 'n': cp = '\n'; break;
        case 'r': cp = '\r'; break;
        case 't': cp = '\t'; break;
        case 'u':
            if (end - p < 6 || hex4(p + 2, &cp) != 0)
                goto bad_escape;
            if (cp >= 0xD800 && cp < 0xDC00) {
                unsigned lo;
                if (end - p < 12 || p[6] != '\\' || p[7] != 'u' || hex4(p + 8, &lo) != 0 ||
                    lo < 0xDC00 || lo > 0xDFFF)
                    goto bad_escape;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            } else if ((cp >= 0xDC00 && cp <= 0xDFFF) || cp == 0) {
                goto bad_escape;
            }
            p += 4; /* the 4 hex digits; the 2 of "\u" below */
            break;
        default:
            goto bad_escape;
        }
        if (w)
            w = put_utf8(w, cp);
        p += 2;
        continue;
    bad_escape:
        t->p = p;
        free(buf);
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "bad escape in a string");
    }
    t->p = end + 1;
    if (out) {
        *w = '\0';
        *out = buf;
    }
    return 0;
}

static int tfc_literal(tfc *t, const char *word)
{
    size_t n = strlen(word);
    if (strncmp(t->p, word, n) != 0)
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "not JSON");
    t->p += n;
    return 0;
}

static int digits(tfc *t)
{
    if (*t->p < '0' || *t->p > '9')
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "malformed number");
    while (*t->p >= '0' && *t->p <= '9')
        t->p++;
    return 0;
}

static int tfc_number(tfc *t)
{
    if (*t->p == '-')
        t->p++;
    if (*t->p == '0')
        t->p++;
    else if (digits(t) != 0)
        return -1;
    if (*t->p == '.') {
        t->p++;
        if (digits(t) != 0)
            return -1;
    }
    if (*t->p == 'e' || *t->p == 'E') {
        t->p++;
        if (*t->p == '+' || *t->p == '-')
            t->p++;
        if (digits(t) != 0)
            return -1;
    }
    return 0;
}

/* What the value being read is: the document, its cluster, cluster.ps, or
 * anything else (checked and skipped). */
enum { IN_OTHER, IN_TOP, IN_CLUSTER, IN_PS };

static int tfc_value(tfc *t, int depth, int in);

/* An object at t->p; `in` says whether it is the document or its cluster. */
static int tfc_object(tfc *t, int depth, int in)
{
    t->p++; /* { */
    tfc_ws(t);
    if (*t->p == '}') {
        t->p++;
        return 0;
    }
    for (;;) {
        tfc_ws(t);
        char *key = NULL;
        if (tfc_string(t, in == IN_OTHER ? NULL : &key) != 0)
            return -1;
        tfc_ws(t);
        if (*t->p != ':') {
            free(key);
            return tfc_fail(t, EMBER_INVALID_ARGUMENT, "expected ':'");
        }
        t->p++;
        tfc_ws(t);
        int rv;
        if (in == IN_TOP && strcmp(key, "cluster") == 0) {
            /* A later "cluster" replaces an earlier one, ps list and all. */
            free_list(t->ps, t->nps);
            t->ps = NULL;
            t->nps = 0;
            rv = *t->p == '{' ? tfc_value(t, depth + 1, IN_CLUSTER)
                              : tfc_fail(t, EMBER_INVALID_ARGUMENT, "cluster is not an object");
        } else if (in == IN_CLUSTER && strcmp(key, "ps") == 0) {
            rv = tfc_value(t, depth + 1, IN_PS);
        } else {
            rv = tfc_value(t, depth + 1, IN_OTHER);
        }
        free(key);
        if (rv != 0)
            return -1;
        tfc_ws(t);
        if (*t->p == ',') {
            t->p++;
            continue;
        }
        if (*t->p == '}') {
            t->p++;
            return 0;
        }
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "expected ',' or '}'");
    }
}

/* cluster.ps: a list of non-empty strings, which replaces any earlier one. */
static int tfc_ps(tfc *t)
{
    if (*t->p == '{')
        return tfc_fail(t, EMBER_INVALID_ARGUMENT,
                        "cluster.ps is a map of task indices; give a list of every ps "
                        "address, in task order");
    if (*t->p != '[')
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "cluster.ps is not a list");
    free_list(t->ps, t->nps);
    t->ps = NULL;
    t->nps = 0;
    unsigned cap = 0;
    t->p++;
    tfc_ws(t);
    if (*t->p == ']') {
        t->p++;
        return 0;
    }
    for (;;) {
        tfc_ws(t);
        if (*t->p != '"')
            return tfc_fail(t, EMBER_INVALID_ARGUMENT, "cluster.ps holds a non-string");
        if (t->nps == cap) {
            unsigned nc = cap ? 2 * cap : 8;
            char **a = realloc(t->ps, nc * sizeof *a);
            if (!a)
                return tfc_fail(t, EMBER_RESOURCE_EXHAUSTED, "out of memory");
            t->ps = a;
            cap = nc;
        }
        const char *at = t->p;
        if (tfc_string(t, &t->ps[t->nps]) != 0)
            return -1;
        if (!*t->ps[t->nps]) {
            free(t->ps[t->nps]);
            t->p = at;
            return tfc_fail(t, EMBER_INVALID_ARGUMENT, "cluster.ps holds an empty address");
        }
        t->nps++;
        tfc_ws(t);
        if (*t->p == ',') {
            t->p++;
            continue;
        }
        if (*t->p == ']') {
            t->p++;
            return 0;
        }
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "expected ',' or ']'");
    }
}

static int tfc_value(tfc *t, int depth, int in)
{
    if (depth > TFC_MAX_DEPTH)
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, "nested too deep");
    tfc_ws(t);
    if (in == IN_PS)
        return tfc_ps(t);
    switch (*t->p) {
    case '{':
        return tfc_object(t, depth, in);
    case '[':
        t->p++;
        tfc_ws(t);
        if (*t->p == ']') {
            t->p++;
            return 0;
        }
        for (;;) {
            if (tfc_value(t, depth + 1, IN_OTHER) != 0)
                return -1;
            tfc_ws(t);
            if (*t->p == ',') {
                t->p++;
                continue;
            }
            if (*t->p == ']') {
                t->p++;
                return 0;
            }
            return tfc_fail(t, EMBER_INVALID_ARGUMENT, "expected ',' or ']'");
        }
    case '"':
        return tfc_string(t, NULL);
    case 't':
        return tfc_literal(t, "true");
    case 'f':
        return tfc_literal(t, "false");
    case 'n':
        return tfc_literal(t, "null");
    default:
        if (*t->p == '-' || (*t->p >= '0' && *t->p <= '9'))
            return tfc_number(t);
        return tfc_fail(t, EMBER_INVALID_ARGUMENT, *t->p ? "not JSON" : "unexpected end");
    }
}

int ember_tfconfig_ps(const char *json, char ***addrs, unsigned *n, ember_error *err)
{
    *addrs = NULL;
    *n = 0;
    if (!json)
        return ember_error_set(err, EMBER_INVALID_ARGUMENT, "TF_CONFIG: no document");
    tfc t = {.start = json, .p = json, .err = err};
    tfc_ws(&t);
    if (*t.p != '{')
        tfc_fail(&t, EMBER_INVALID_ARGUMENT, "not a JSON object");
    else if (tfc_object(&t, 1, IN_TOP) == 0) {
        tfc_ws(&t);
        if (*t.p)
            tfc_fail(&t, EMBER_INVALID_ARGUMENT, "trailing characters after the object");
    }
    if (t.code) {
        free_list(t.ps, t.nps);
        return t.code;
    }
    if (t.nps == 0) {
        free(t.ps);
        return 0;
    }
    *addrs = t.ps;
    *n = t.nps;
    return 0;
}
