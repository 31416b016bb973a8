/*
 * log.h — one line per event on stderr, logfmt (the default) or JSON
 * (--log-format json):
 *
 *   ts=2026-11-02T10:00:00.123Z level=info event=listening addr=0.0.0.0:7070 threads=2
 *   {"ts":"2026-11-02T10:00:00.123Z","level":"info","event":"listening","addr":"0.0.0.0:7070","threads":2}
 *
 * In JSON, a value that is a number stays one; every other value is a string.
 * Requests are not logged at info (only at debug), so a busy shard's log stays
 * readable. Thread-safe: each line is written with one write(2).
 */
#ifndef EMBER_SRV_LOG_H
#define EMBER_SRV_LOG_H

enum { SRV_LOG_ERROR = 0, SRV_LOG_WARN = 1, SRV_LOG_INFO = 2, SRV_LOG_DEBUG = 3 };

/* Sets the most verbose level written (process-wide, set once at start). */
void srv_log_set_level(int level);
int srv_log_level(void);
/* JSON lines instead of logfmt (process-wide, set once at start). */
void srv_log_set_json(int on);
/* "error", "warn", "info", "debug" → level; -1 if none of those. */
int srv_log_parse_level(const char *s);

/* Writes `ts=… level=… event=<event> <fields>` where `fields` is printf-style
 * text of key=value pairs (values with spaces should be quoted: use srv_log_q). */
void srv_log(int level, const char *event, const char *fields_fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Quotes `s` for a logfmt value into buf (escaping " and \\); returns buf. */
const char *srv_log_q(char *buf, unsigned cap, const char *s);

#endif
