/* log.c — logfmt or JSON lines on stderr (log.h). */
#include "server/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The one process-wide setting of the server: written once before threads start. */
static atomic_int log_level = SRV_LOG_INFO;
static atomic_int log_json;

void srv_log_set_level(int level) { atomic_store(&log_level, level); }
int srv_log_level(void) { return atomic_load(&log_level); }
void srv_log_set_json(int on) { atomic_store(&log_json, on); }

/* A bare logfmt value that JSON can carry as a number: an optional minus, digits,
 * at most one point, no leading zero before another digit (JSON forbids "012"). */
static int json_number(const char *v, size_t n)
{
    size_t i = 0, digits = 0, points = 0;
    if (i < n && v[i] == '-')
        i++;
    if (i + 1 < n && v[i] == '0' && v[i + 1] >= '0' && v[i + 1] <= '9')
        return 0;
    for (; i < n; i++) {
        if (v[i] >= '0' && v[i] <= '9')
            digits++;
        else if (v[i] == '.' && digits && !points)
            points++;
        else
            return 0;
    }
    return digits && v[n - 1] != '.';
}

/* Appends s[0..n) as the body of a JSON string: quotes, backslashes and control
 * bytes escaped. Returns the new length (stops short of cap). */
static size_t json_put(char *out, size_t len, size_t cap, const char *s, size_t n)
{
    for (size_t i = 0; i < n && len + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[len++] = '\\';
            out[len++] = (char)c;
        } else if (c < 0x20) {
            len += (size_t)snprintf(out + len, cap - len, "\\u%04x", c);
        } else {
            out[len++] = (char)c;
        }
    }
    return len;
}

/* logfmt fields (`k=v k="quoted \"v\""`) → `,"k":v,...` appended to out. A bare
 * value stays a number when it is one, else becomes a string; a token without
 * '=' is kept as a key with the value true. Returns the new length. */
static size_t json_fields(char *out, size_t len, size_t cap, const char *f)
{
    while (*f && len + 16 < cap) {
        while (*f == ' ')
            f++;
        if (!*f)
            break;
        const char *k = f;
        while (*f && *f != '=' && *f != ' ')
            f++;
        size_t kn = (size_t)(f - k);
        out[len++] = ',';
        out[len++] = '"';
        len = json_put(out, len, cap, k, kn);
        out[len++] = '"';
        out[len++] = ':';
        if (*f != '=') {
            len += (size_t)snprintf(out + len, cap - len, "true");
            continue;
        }
        f++;
        if (*f == '"') {
            /* a srv_log_q value: \" and \\ are escapes, the rest is literal */
            f++;
            out[len++] = '"';
            while (*f && *f != '"' && len + 8 < cap) {
                if (*f == '\\' && f[1])
                    f++;
                len = json_put(out, len, cap, f, 1);
                f++;
            }
            if (*f == '"')
                f++;
            out[len++] = '"';
        } else {
            const char *v = f;
            while (*f && *f != ' ')
                f++;
            size_t vn = (size_t)(f - v);
            if (json_number(v, vn)) {
                if (len + vn + 2 < cap) {
                    memcpy(out + len, v, vn);
                    len += vn;
                }
            } else {
                out[len++] = '"';
                len = json_put(out, len, cap, v, vn);
                out[len++] = '"';
            }
        }
    }
    return len;
}

int srv_log_parse_level(const char *s)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

void srv_log(int level, const char *event, const char *fields_fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (level > atomic_load(&log_level))
        return;
    char line[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line,
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, names[level], event);
    if (fields_fmt && fields_fmt[0] && n > 0 && (size_t)n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fields_fmt);
        int k = vsnprintf(line + n, sizeof line - (size_t)n - 1, fields_fmt, ap);
        va_end(ap);
        if (k > 0)
            n += k;
    }
    if (n < 0)
        return;
    if ((size_t)n > sizeof line - 2)
        n = (int)sizeof line - 2;
    if (atomic_load(&log_json)) {
        /* the same line, re-shaped: {"ts":…,"level":…,"event":…,<fields>} */
        char js[4096];
        line[n] = '\0';
        size_t j = 0;
        js[j++] = '{';
        js[j++] = '"';
        js[j++] = 't';
        js[j++] = 's';
        js[j++] = '"';
        js[j++] = ':';
        js[j++] = '"';
        memcpy(js + j, line + 3, 24); /* ts=YYYY-MM-DDTHH:MM:SS.mmmZ */
        j += 24;
        js[j++] = '"';
        j = json_fields(js, j, sizeof js - 2, line + 28);
        js[j++] = '}';
        js[j++] = '\n';
        ssize_t w = write(STDERR_FILENO, js, j);
        (void)w;
        return;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

const char *srv_log_q(char *buf, unsigned cap, const char *s)
{
    unsigned j = 0;
    if (cap < 3) {
        if (cap)
            buf[0] = '\0';
        return buf;
    }
    buf[j++] = '"';
    for (; *s && j + 3 < cap; s++) {
        char c = *s;
        if (c == '"' || c == '\\')
            buf[j++] = '\\';
        buf[j++] = (c == '\n') ? ' ' : c;
    }
    buf[j++] = '"';
    buf[j] = '\0';
    return buf;
}
