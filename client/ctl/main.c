/*
 * main.c — emberctl's command line: global options, the subcommand, help (see
 * ctl.h for the exit statuses).
 *
 *   emberctl [global options] COMMAND [arguments] [options]
 *
 * Global options may also come after the command, so `emberctl tables --json`
 * works as well as `emberctl --json tables`.
 */
#define _POSIX_C_SOURCE 200809L

#include "ctl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static const ctl_optdef global_opts[] = {
    {"--shards", "H:P,...", "shard servers in shard order (default: $EMBER_SHARDS)"},
    {"--shard", "I", "only the shard at position I of the list (default: all)"},
    {"--json", NULL, "print one JSON document on stdout, for scripts"},
    {"--timeout-ms", "MS", "deadline of each call (default 10000)"},
    {"--tls-ca", "FILE", "TLS: PEM CA that signed the shards' certificates (default: $EMBER_TLS_CA; unset: plaintext)"},
    {"--tls-cert", "FILE", "mutual TLS: this client's PEM certificate (default: $EMBER_TLS_CERT)"},
    {"--tls-key", "FILE", "mutual TLS: its PEM key (default: $EMBER_TLS_KEY)"},
    {"--tls-server-name", "NAME", "the name in the shards' certificates when not the address's host (default: $EMBER_TLS_SERVER_NAME)"},
    {"--token-file", "FILE", "file with the bearer token sent with every call (default: $EMBER_TOKEN_FILE, or the token itself in $EMBER_TOKEN)"},
    {"--help", NULL, "this help"},
    {NULL, NULL, NULL},
};

typedef struct globals {
    const char *shards;
    int shard;               /* -1: all */
    int json;
    int timeout_ms;
    const char *tls_ca, *tls_cert, *tls_key, *tls_server_name, *token_file;
    int help;
} globals;

static void print_opts(FILE *f, const ctl_optdef *opts)
{
    for (const ctl_optdef *o = opts; o && o->name; o++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s%s", o->name, o->arg ? " " : "", o->arg ? o->arg : "");
        fprintf(f, "  %-24s %s\n", left, o->help);
    }
}

static void usage_main(FILE *f)
{
    fprintf(f, "usage: emberctl [global options] COMMAND [arguments] [options]\n\n"
               "Administers ember shard servers over their Admin RPC service.\n\ncommands:\n");
    for (const ctl_cmd *c = ctl_commands; c->name; c++)
        fprintf(f, "  %-10s %s\n", c->name, c->summary);
    fprintf(f, "\nglobal options (before or after the command):\n");
    print_opts(f, global_opts);
    fprintf(f, "\n'emberctl COMMAND --help' tells more about each command.\n"
               "Exit status: 0 success; 1 a call failed on some shard (printed as\n"
               "'shard I (ADDRESS): CODE: message'), or a file could not be used;\n"
               "2 a usage error.\n");
}

static void usage_cmd(FILE *f, const ctl_cmd *c)
{
    fprintf(f, "usage: emberctl %s%s%s [options]\n\n%s\n", c->name, *c->synopsis ? " " : "",
            c->synopsis, c->summary);
    if (c->details)
        fprintf(f, "\n%s", c->details);
    if (c->opts && c->opts->name) {
        fprintf(f, "\noptions:\n");
        print_opts(f, c->opts);
    }
    fprintf(f, "\nglobal options:\n");
    print_opts(f, global_opts);
}

static const ctl_cmd *find_cmd(const char *name)
{
    for (const ctl_cmd *c = ctl_commands; c->name; c++)
        if (strcmp(c->name, name) == 0)
            return c;
    return NULL;
}

static const ctl_optdef *find_opt(const ctl_optdef *opts, const char *name, size_t len)
{
    for (const ctl_optdef *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

const char *ctl_opt(const ctl_args *a, const char *name)
{
    const ctl_optdef *o = a->cmd->opts;
    for (unsigned i = 0; o && o[i].name; i++)
        if (strcmp(o[i].name, name) == 0)
            return a->value[i];
    return NULL;
}

int ctl_usage_error(const ctl_args *a, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "emberctl%s%s: ", a && a->cmd ? " " : "", a && a->cmd ? a->cmd->name : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, " (see 'emberctl %s%s--help')\n", a && a->cmd ? a->cmd->name : "",
            a && a->cmd ? " " : "");
    return CTL_EXIT_USAGE;
}

int ctl_parse_u64(const ctl_args *a, const char *opt, const char *s, uint64_t lo, uint64_t hi,
                  uint64_t *out)
{
    char *end;
    uint64_t mult = 1;
    errno = 0;
    if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        goto bad;
    switch (*end) {
    case 'k': case 'K': mult = 1ull << 10; end++; break;
    case 'm': case 'M': mult = 1ull << 20; end++; break;
    case 'g': case 'G': mult = 1ull << 30; end++; break;
    case 't': case 'T': mult = 1ull << 40; end++; break;
    default: break;
    }
    if (*end || (v && mult > UINT64_MAX / v))
        goto bad;
    v *= mult;
    if (v < lo || v > hi) {
        ctl_usage_error(a, "%s %s: must be in %llu..%llu", opt, s, (unsigned long long)lo,
                        (unsigned long long)hi);
        return -1;
    }
    *out = v;
    return 0;
bad:
    ctl_usage_error(a, "%s: '%s' is not a whole number", opt, s ? s : "");
    return -1;
}

int ctl_parse_float(const ctl_args *a, const char *opt, const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = s ? strtof(s, &end) : 0;
    if (!s || !*s || end == s || *end || errno || !isfinite(v)) {
        ctl_usage_error(a, "%s: '%s' is not a finite number", opt, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

/* Parses a global option at argv[*i] (name[=value]); 1 if it was one, 0 if not,
 * -1 on a bad value. */
static int parse_global(int argc, char **argv, int *i, globals *g, const ctl_args *a)
{
    const char *arg = argv[*i], *eq = strchr(arg, '=');
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const char *value = NULL;
    if (strcmp(arg, "-h") == 0) {
        g->help = 1;
        return 1;
    }
    const ctl_optdef *o = find_opt(global_opts, arg, len);
    if (!o)
        return 0;
    if (o->arg) {
        if (eq)
            value = eq + 1;
        else if (*i + 1 < argc)
            value = argv[++*i];
        else {
            ctl_usage_error(a, "%s needs a value (%s)", o->name, o->arg);
            return -1;
        }
    } else if (eq) {
        ctl_usage_error(a, "%s takes no value", o->name);
        return -1;
    }
    if (strcmp(o->name, "--shards") == 0) {
        g->shards = value;
    } else if (strcmp(o->name, "--shard") == 0) {
        uint64_t v;
        if (ctl_parse_u64(a, o->name, value, 0, 65535, &v) != 0)
            return -1;
        g->shard = (int)v;
    } else if (strcmp(o->name, "--json") == 0) {
        g->json = 1;
    } else if (strcmp(o->name, "--tls-ca") == 0) {
        g->tls_ca = value;
    } else if (strcmp(o->name, "--tls-cert") == 0) {
        g->tls_cert = value;
    } else if (strcmp(o->name, "--tls-key") == 0) {
        g->tls_key = value;
    } else if (strcmp(o->name, "--tls-server-name") == 0) {
        g->tls_server_name = value;
    } else if (strcmp(o->name, "--token-file") == 0) {
        g->token_file = value;
    } else if (strcmp(o->name, "--timeout-ms") == 0) {
        uint64_t v;
        if (ctl_parse_u64(a, o->name, value, 1, 3600000, &v) != 0)
            return -1;
        g->timeout_ms = (int)v;
    } else {
        g->help = 1;
    }
    return 1;
}

/* Parses the subcommand's arguments from argv[i..argc). */
static int parse_cmd_args(int argc, char **argv, int i, globals *g, ctl_args *a)
{
    int only_positional = 0;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!only_positional && strcmp(arg, "--") == 0) {
            only_positional = 1;
            continue;
        }
        if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
            int r = parse_global(argc, argv, &i, g, a);
            if (r < 0)
                return CTL_EXIT_USAGE;
            if (r > 0)
                continue;
            const char *eq = strchr(arg, '=');
            size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
            const ctl_optdef *o = find_opt(a->cmd->opts, arg, len);
            if (!o)
                return ctl_usage_error(a, "unknown option '%.*s'", (int)len, arg);
            unsigned k = (unsigned)(o - a->cmd->opts);
            if (k >= CTL_MAX_OPTIONS)  /* a command with more options than ctl_args holds */
                return ctl_usage_error(a, "%s: too many options defined", o->name);
            if (o->arg && o->arg[0] == '[') {
                /* An optional value ("--watch [SECONDS]"): after '=', or the next
                 * argument unless that is an option. Greedy, so that a mistyped
                 * value is refused rather than taken for a positional argument. */
                if (eq)
                    a->value[k] = eq + 1;
                else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                    a->value[k] = argv[++i];
                else
                    a->value[k] = "";
                if ((eq || a->value[k] == argv[i]) && !*a->value[k])  /* "" means none given */
                    return ctl_usage_error(a, "%s: an empty value (give one, or none)", o->name);
            } else if (o->arg) {
                if (eq)
                    a->value[k] = eq + 1;
                else if (i + 1 < argc)
                    a->value[k] = argv[++i];
                else
                    return ctl_usage_error(a, "%s needs a value (%s)", o->name, o->arg);
            } else if (eq) {
                return ctl_usage_error(a, "%s takes no value", o->name);
            } else {
                a->value[k] = "";
            }
            continue;
        }
        if (a->n_pos >= a->cmd->max_pos || a->n_pos >= CTL_MAX_POSITIONAL)
            return ctl_usage_error(a, "unexpected argument '%s'", arg);
        a->pos[a->n_pos++] = arg;
    }
    return 0;
}

int main(int argc, char **argv)
{
    globals g = {.shard = -1, .timeout_ms = 10000};
    ctl_args a;
    ctl c;
    int i = 1, rc;

    memset(&a, 0, sizeof a);
    for (; i < argc && argv[i][0] == '-'; i++) {
        int r = parse_global(argc, argv, &i, &g, &a);
        if (r < 0)
            return CTL_EXIT_USAGE;
        if (r == 0)
            return ctl_usage_error(NULL, "unknown option '%s'", argv[i]);
    }
    if (i >= argc) {
        if (g.help) {
            usage_main(stdout);
            return CTL_EXIT_OK;
        }
        usage_main(stderr);
        return CTL_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {  /* emberctl help [COMMAND] */
        const ctl_cmd *cmd = i + 1 < argc ? find_cmd(argv[i + 1]) : NULL;
        if (i + 1 < argc && !cmd)
            return ctl_usage_error(NULL, "unknown command '%s'", argv[i + 1]);
        if (cmd)
            usage_cmd(stdout, cmd);
        else
            usage_main(stdout);
        return CTL_EXIT_OK;
    }
    a.cmd = find_cmd(argv[i]);
    if (!a.cmd)
        return ctl_usage_error(NULL, "unknown command '%s'", argv[i]);
    /* --help anywhere on the line wins over its other mistakes. */
    for (int k = i + 1; k < argc && strcmp(argv[k], "--") != 0; k++)
        g.help |= strcmp(argv[k], "--help") == 0 || strcmp(argv[k], "-h") == 0;
    if (g.help) {
        usage_cmd(stdout, a.cmd);
        return CTL_EXIT_OK;
    }
    rc = parse_cmd_args(argc, argv, i + 1, &g, &a);
    if (rc != 0)
        return rc;
    if (a.n_pos < a.cmd->min_pos)
        return ctl_usage_error(&a, "missing %s", a.cmd->synopsis);

    memset(&c, 0, sizeof c);
    c.json = g.json;
    c.timeout_ms = g.timeout_ms;
    c.tls_ca = g.tls_ca ? g.tls_ca : getenv("EMBER_TLS_CA");
    c.tls_cert = g.tls_cert ? g.tls_cert : getenv("EMBER_TLS_CERT");
    c.tls_key = g.tls_key ? g.tls_key : getenv("EMBER_TLS_KEY");
    c.tls_server_name = g.tls_server_name ? g.tls_server_name : getenv("EMBER_TLS_SERVER_NAME");
    c.token_file = g.token_file ? g.token_file : getenv("EMBER_TOKEN_FILE");
    if (a.cmd->flags & CTL_CMD_ADDR) {
        rc = ctl_shards_parse(&c, a.pos[0], -1);
        if (rc == 0)
            rc = ctl_shards_open(&c);
    } else if (!(a.cmd->flags & CTL_CMD_OFFLINE)) {
        rc = ctl_shards_parse(&c, g.shards ? g.shards : getenv("EMBER_SHARDS"), g.shard);
        if (rc != 0)
            return rc;
        rc = ctl_shards_open(&c);
    }
    if (rc == 0)
        rc = a.cmd->run(&c, &a);
    ctl_shards_close(&c);
    return rc;
}
