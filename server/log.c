/* log.c — logfmt lines on stderr (log.h). */
#include "server/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The one process-wide setting of the server: written once before threads start. */
static atomic_int log_level = SRV_LOG_INFO;

void srv_log_set_level(int level) { atomic_store(&log_level, level); }
int srv_log_level(void) { return atomic_load(&log_level); }

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
