/*
 * format.c — emberctl's output: aligned tables for people, JSON for scripts,
 * human renderings of counts, bytes and durations, and the progress line of
 * long transfers (see ctl.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "ctl.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- tables -------------------------------------------------------------------- */

void ctl_table_init(ctl_table *t, unsigned cols, const char *const *head)
{
    memset(t, 0, sizeof *t);
    t->cols = cols < 24 ? cols : 24;
    for (unsigned i = 0; i < t->cols; i++)
        t->head[i] = head[i];
}

void ctl_table_add(ctl_table *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        char **cells = realloc(t->cells, cap * sizeof *cells);
        if (!cells)
            return;  /* out of memory: the cell is left out, the table stays whole */
        t->cells = cells;
        t->cap = cap;
    }
    t->cells[t->n] = strdup(buf);
    if (t->cells[t->n])
        t->n++;
}

/* Display width of UTF-8 text: code points, not bytes (names and units may
 * carry "×" or "—"). */
static size_t text_width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        w += ((unsigned char)*s & 0xC0) != 0x80;
    return w;
}

static void pad(FILE *f, size_t n)
{
    while (n--)
        fputc(' ', f);
}

void ctl_table_print(ctl_table *t, FILE *f, int indent)
{
    size_t width[24] = {0};
    size_t rows = (t->n + t->cols - 1) / t->cols;

    for (unsigned c = 0; c < t->cols; c++) {
        const char *h = t->head[c] + (t->head[c][0] == '>');
        width[c] = text_width(h);
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t w = text_width(t->cells[i]);
        if (w > width[i % t->cols])
            width[i % t->cols] = w;
    }
    for (size_t r = 0; r <= rows; r++) {  /* row 0: the header */
        pad(f, (size_t)indent);
        for (unsigned c = 0; c < t->cols; c++) {
            size_t i = (r - 1) * t->cols + c;
            const char *cell = r == 0 ? t->head[c] + (t->head[c][0] == '>')
                               : i < t->n ? t->cells[i] : "";
            int right = t->head[c][0] == '>';
            size_t gap = width[c] - text_width(cell);
            int last = c + 1 == t->cols;
            if (right)
                pad(f, gap);
            fputs(cell, f);
            if (!right && !last)
                pad(f, gap);
            if (!last)
                fputs("  ", f);
        }
        fputc('\n', f);
    }
    ctl_table_free(t);
}

void ctl_table_free(ctl_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

/* ---- human numbers ----------------------------------------------------------- */

char *ctl_fmt_count(char *buf, size_t n, uint64_t v)
{
    char digits[32];
    size_t len = (size_t)snprintf(digits, sizeof digits, "%" PRIu64, v), o = 0;
    for (size_t i = 0; i < len && o + 2 < n; i++) {
        if (i && (len - i) % 3 == 0)
            buf[o++] = ',';
        buf[o++] = digits[i];
    }
    buf[o] = '\0';
    return buf;
}

char *ctl_fmt_bytes(char *buf, size_t n, uint64_t v)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double x = (double)v;
    unsigned u = 0;
    while (x >= 1024.0 && u + 1 < sizeof units / sizeof units[0]) {
        x /= 1024.0;
        u++;
    }
    if (u == 0)
        snprintf(buf, n, "%" PRIu64 " B", v);
    else
        snprintf(buf, n, "%.*f %s", x < 10 ? 2 : x < 100 ? 1 : 0, x, units[u]);
    return buf;
}

char *ctl_fmt_duration(char *buf, size_t n, uint64_t s)
{
    if (s < 60)
        snprintf(buf, n, "%" PRIu64 "s", s);
    else if (s < 3600)
        snprintf(buf, n, "%" PRIu64 "m %02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, n, "%" PRIu64 "h %02" PRIu64 "m", s / 3600, s / 60 % 60);
    else
        snprintf(buf, n, "%" PRIu64 "d %02" PRIu64 "h", s / 86400, s / 3600 % 24);
    return buf;
}

/* ---- JSON ---------------------------------------------------------------------- */

void ctl_json_init(ctl_json *j, FILE *f)
{
    memset(j, 0, sizeof *j);
    j->f = f;
}

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

/* The separator and key in front of a value. */
static void json_lead(ctl_json *j, const char *key)
{
    if (j->need_comma[j->depth])
        fputc(',', j->f);
    j->need_comma[j->depth] = 1;
    if (key) {
        json_string(j->f, key);
        fputc(':', j->f);
    }
}

static void json_open(ctl_json *j, const char *key, char c)
{
    json_lead(j, key);
    fputc(c, j->f);
    if (j->depth + 1 < (int)sizeof j->need_comma)
        j->depth++;
    j->need_comma[j->depth] = 0;
}

static void json_close(ctl_json *j, char c)
{
    if (j->depth > 0)
        j->depth--;
    fputc(c, j->f);
}

void ctl_json_object(ctl_json *j, const char *key) { json_open(j, key, '{'); }
void ctl_json_array(ctl_json *j, const char *key) { json_open(j, key, '['); }
void ctl_json_end_object(ctl_json *j) { json_close(j, '}'); }
void ctl_json_end_array(ctl_json *j) { json_close(j, ']'); }

void ctl_json_str(ctl_json *j, const char *key, const char *v)
{
    json_lead(j, key);
    json_string(j->f, v);
}

void ctl_json_u64(ctl_json *j, const char *key, uint64_t v)
{
    json_lead(j, key);
    fprintf(j->f, "%" PRIu64, v);
}

void ctl_json_double(ctl_json *j, const char *key, double v)
{
    json_lead(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.17g", v);
    else
        fputs("null", j->f);
}

void ctl_json_float(ctl_json *j, const char *key, float v)
{
    json_lead(j, key);
    if (!isfinite(v)) {
        fputs("null", j->f);
        return;
    }
    /* The shortest decimal that reads back as the same float: 0.05, not
     * 0.0500000007. */
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v)
            break;
    }
    fputs(buf, j->f);
}

void ctl_json_bool(ctl_json *j, const char *key, int v)
{
    json_lead(j, key);
    fputs(v ? "true" : "false", j->f);
}

void ctl_json_finish(ctl_json *j)
{
    fputc('\n', j->f);
    fflush(j->f);
}

void ctl_json_shard(ctl_json *j, const ctl_shard *s)
{
    ctl_json_u64(j, "shard", s->index);
    ctl_json_str(j, "address", s->address);
}

void ctl_json_errors(ctl_json *j, const ctl_reply *replies, unsigned n)
{
    ctl_json_array(j, "errors");
    for (unsigned i = 0; i < n; i++) {
        const ctl_reply *r = &replies[i];
        if (r->code == 0)
            continue;
        ctl_json_object(j, NULL);
        ctl_json_u64(j, "shard", r->shard->index);
        ctl_json_str(j, "address", r->shard->address);
        ctl_json_str(j, "code", ember_code_name(r->code));
        ctl_json_str(j, "message", r->message);
        ctl_json_end_object(j);
    }
    ctl_json_end_array(j);
}

/* ---- progress -------------------------------------------------------------------- */

double ctl_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void ctl_progress_start(ctl_progress *p, const char *what, uint64_t total_rows)
{
    memset(p, 0, sizeof *p);
    p->on = isatty(STDERR_FILENO);
    p->what = what;
    p->total_rows = total_rows;
    p->start = ctl_now();
}

/* "export emb: 1,234 / 5,678 rows (21.7%), 1.50 MiB, 12.0 MiB/s, ETA 3s" */
static void progress_draw(ctl_progress *p, double now)
{
    char rows[32], total[32], bytes[32], rate[32], eta[32];
    double dt = now - p->start;
    ctl_fmt_count(rows, sizeof rows, p->rows);
    ctl_fmt_bytes(bytes, sizeof bytes, p->bytes);
    ctl_fmt_bytes(rate, sizeof rate, dt > 0 ? (uint64_t)((double)p->bytes / dt) : 0);
    fprintf(stderr, "\r%s: %s", p->what, rows);
    if (p->total_rows) {
        double share = (double)p->rows / (double)p->total_rows;
        fprintf(stderr, " / %s rows (%.1f%%)", ctl_fmt_count(total, sizeof total, p->total_rows),
                100.0 * (share < 1 ? share : 1));
    } else {
        fprintf(stderr, " rows");
    }
    if (!p->no_bytes)
        fprintf(stderr, ", %s, %s/s", bytes, rate);
    else if (dt > 0)
        fprintf(stderr, ", %s rows/s",
                ctl_fmt_count(rate, sizeof rate, (uint64_t)((double)p->rows / dt)));
    if (p->total_rows && p->rows && p->rows < p->total_rows && dt > 0.5) {
        double left = dt * (double)(p->total_rows - p->rows) / (double)p->rows;
        fprintf(stderr, ", ETA %s", ctl_fmt_duration(eta, sizeof eta, (uint64_t)(left + 0.5)));
    }
    fprintf(stderr, "\033[K"); /* clear what a longer earlier line left */
    fflush(stderr);
    p->last = now;
}

void ctl_progress_update(ctl_progress *p, uint64_t rows, uint64_t bytes)
{
    p->rows = rows;
    p->bytes = bytes;
    if (!p->on)
        return;
    double now = ctl_now();
    if (now - p->last >= 0.1)
        progress_draw(p, now);
}

void ctl_progress_end(ctl_progress *p)
{
    if (!p->on)
        return;
    progress_draw(p, ctl_now());
    fputc('\n', stderr);
    p->on = 0;
}
