/* cfg.c: command-line flags, the process environment and .env files.
 *
 * Sections: error helpers, number parsing, host and port parsing, URLs,
 * listen addresses, the .env parser, the option tables and their layering
 * (file < environment < flags), usage text, and the two entry points.
 *
 * Nothing here is global: every result goes into the caller's struct, and
 * every setting is validated once, after the layers are merged, so a bad
 * value in a lower layer that a higher layer overrides is never an error.
 * This runs once at startup, before the loop, so plain stdio is fine. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <regex.h>

#include "cfg.h"
#include "log.h"

#define SECS_MAX 1000000000ULL    /* largest duration accepted, in seconds */
#define BYTES_MAX 2147483647ULL   /* largest window or head size */
#define BYTES_MIN 1024ULL         /* smallest window or head size */
#define POOL_MAX 1024ULL          /* largest agent pool size */
#define ENV_FILE_MAX (1u << 20)   /* largest .env file read */
#define QLEN 80                   /* bad values are quoted up to this many bytes */

/* ---- error helpers ------------------------------------------------------ */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NW_ECONFIG;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_blank(int c) { return c == ' ' || c == '\t'; }

/* ---- numbers ------------------------------------------------------------ */

/* Decimal digits only, at most max. 0 or -1. */
static int parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out) {
    uint64_t v = 0;
    size_t i;

    if (n == 0)
        return -1;
    for (i = 0; i < n; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (!is_digit((unsigned char)s[i]) || v > max / 10)
            return -1;
        v *= 10;
        if (d > max - v)
            return -1;
        v += d;
    }
    *out = v;
    return 0;
}

int nw_parse_secs(const char *s, uint64_t *ms) {
    uint64_t whole = 0, frac = 0, scale = 100;
    int digits = 0;

    if (!s)
        return NW_ECONFIG;
    for (; is_digit((unsigned char)*s); s++, digits++) {
        whole = whole * 10 + (uint64_t)(*s - '0');
        if (whole > SECS_MAX)
            return NW_ECONFIG;
    }
    if (*s == '.') {
        /* Digits past the millisecond are checked but do not count. */
        for (s++; is_digit((unsigned char)*s); s++, digits++) {
            frac += (uint64_t)(*s - '0') * scale;
            scale /= 10;
        }
    }
    if (digits == 0 || *s != 0)
        return NW_ECONFIG;
    whole = whole * 1000 + frac;
    if (whole > SECS_MAX * 1000)
        return NW_ECONFIG;
    *ms = whole;
    return 0;
}

int nw_parse_bytes(const char *s, uint64_t *out) {
    uint64_t v = 0, mul = 1;
    const char *p = s;

    if (!s)
        return NW_ECONFIG;
    for (; is_digit((unsigned char)*p); p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return NW_ECONFIG;
        v = v * 10 + d;
    }
    if (p == s)
        return NW_ECONFIG;
    switch (*p) {
    case 'k': case 'K': mul = 1ULL << 10; p++; break;
    case 'm': case 'M': mul = 1ULL << 20; p++; break;
    case 'g': case 'G': mul = 1ULL << 30; p++; break;
    default: break;
    }
    if (*p != 0 || v > UINT64_MAX / mul)
        return NW_ECONFIG;
    *out = v * mul;
    return 0;
}

/* ---- hosts and ports ---------------------------------------------------- */

static int ipv6_ok(const char *h, size_t n) {
    char tmp[64];
    struct in6_addr a;

    if (n == 0 || n >= sizeof(tmp))
        return 0;
    memcpy(tmp, h, n);
    tmp[n] = 0;
    return inet_pton(AF_INET6, tmp, &a) == 1;
}

/* A DNS name or a dotted IPv4 address: letters, digits, '-', '_' and '.',
 * no empty label (one trailing dot is fine). A name made only of digits and
 * dots must be a valid IPv4 address. */
static int host_ok(const char *h, size_t n, char *why, size_t whylen) {
    size_t i, label = 0;
    int name = 0;
    char tmp[16];
    struct in_addr a;

    if (n == 0)
        return fail(why, whylen, "empty host");
    if (n > 253)
        return fail(why, whylen, "host name too long");
    for (i = 0; i < n; i++) {
        int c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0)
                return fail(why, whylen, "empty label in host '%.*s'", (int)NW_MIN(n, QLEN), h);
            label = 0;
            continue;
        }
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
            return fail(why, whylen, "invalid character '%c' in host", c);
        if (!is_digit(c))
            name = 1;
        if (++label > 63)
            return fail(why, whylen, "host label longer than 63 characters");
    }
    if (name)
        return 0;
    if (n < sizeof(tmp)) {
        memcpy(tmp, h, n);
        tmp[n] = 0;
        if (inet_pton(AF_INET, tmp, &a) == 1)
            return 0;
    }
    return fail(why, whylen, "invalid IPv4 address '%.*s'", (int)NW_MIN(n, QLEN), h);
}

/* Split [s, end) into a host and an optional port after ':'. A host in
 * brackets must be an IPv6 literal and is returned without them. *port is
 * NULL when there is no ':'. Validates the host, not the port. */
static int split_hostport(const char *s, const char *end, const char **host, size_t *hlen,
                          const char **port, size_t *plen, char *why, size_t whylen) {
    const char *rest, *colon;

    if (s < end && *s == '[') {
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (!rb)
            return fail(why, whylen, "missing ']' after IPv6 address");
        if (!ipv6_ok(s + 1, (size_t)(rb - s - 1)))
            return fail(why, whylen, "invalid IPv6 address '%.*s'",
                        (int)NW_MIN(rb - s - 1, QLEN), s + 1);
        *host = s + 1;
        *hlen = (size_t)(rb - s - 1);
        rest = rb + 1;
        if (rest < end && *rest != ':')
            return fail(why, whylen, "unexpected text after ']'");
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        rest = colon ? colon : end;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1)))
            return fail(why, whylen, "IPv6 addresses must be in brackets, e.g. [::1]:8000");
        *host = s;
        *hlen = (size_t)(rest - s);
    }
    *port = rest < end ? rest + 1 : NULL;
    *plen = rest < end ? (size_t)(end - rest - 1) : 0;
    return 0;
}

/* ---- URLs --------------------------------------------------------------- */

static int url_scheme(const char *s, nw_url_t *r, const char **auth, char *err, size_t errlen) {
    const char *sep = strstr(s, "://");
    size_t n;

    if (!sep)
        return fail(err, errlen, "missing scheme (use http:// or https://)");
    n = (size_t)(sep - s);
    if (nw_strieq(s, n, "https"))
        r->tls = 1;
    else if (!nw_strieq(s, n, "http"))
        return fail(err, errlen, "unsupported scheme '%.*s' (use http:// or https://)",
                    (int)NW_MIN(n, QLEN), s);
    *auth = sep + 3;
    return 0;
}

static int url_authority(const char *auth, const char *end, nw_url_t *r, char *err,
                         size_t errlen) {
    const char *host, *port;
    size_t hlen, plen;
    uint64_t v;
    int rc;

    if (memchr(auth, '@', (size_t)(end - auth)))
        return fail(err, errlen, "user info (user@host) is not allowed");
    rc = split_hostport(auth, end, &host, &hlen, &port, &plen, err, errlen);
    if (rc == 0 && *auth != '[')
        rc = host_ok(host, hlen, err, errlen);
    if (rc)
        return rc;
    if (hlen == 0 || hlen >= sizeof(r->host))
        return fail(err, errlen, "%s", hlen ? "host name too long" : "empty host");
    memcpy(r->host, host, hlen);
    r->host[hlen] = 0;
    r->port = r->tls ? 443 : 80;
    if (!port)
        return 0;
    if (plen == 0)
        return fail(err, errlen, "empty port after ':'");
    if (parse_uint(port, plen, 65535, &v) || v == 0)
        return fail(err, errlen, "invalid port '%.*s' (use 1-65535)", (int)NW_MIN(plen, QLEN),
                    port);
    r->port = (uint16_t)v;
    return 0;
}

int nw_url_parse(const char *s, nw_url_t *u, char *err, size_t errlen) {
    nw_url_t r;
    const char *p, *auth = NULL, *aend;
    size_t n;
    int rc;

    memset(&r, 0, sizeof(r));
    if (!s || !*s)
        return fail(err, errlen, "empty URL");
    for (p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return fail(err, errlen, "URL contains whitespace or control characters");
    rc = url_scheme(s, &r, &auth, err, errlen);
    if (rc)
        return rc;
    if (strchr(auth, '?'))
        return fail(err, errlen, "query strings ('?') are not allowed in a base URL");
    if (strchr(auth, '#'))
        return fail(err, errlen, "fragments ('#') are not allowed in a base URL");
    aend = auth + strcspn(auth, "/");
    rc = url_authority(auth, aend, &r, err, errlen);
    if (rc)
        return rc;
    n = strlen(aend);
    while (n > 0 && aend[n - 1] == '/')
        n--;
    if (n >= sizeof(r.path))
        return fail(err, errlen, "path too long");
    memcpy(r.path, aend, n);
    r.path[n] = 0;
    *u = r;
    return 0;
}

/* ---- listen addresses --------------------------------------------------- */

int nw_listen_parse(const char *s, nw_listen_t *l, char *err, size_t errlen) {
    const char *host, *port, *end;
    size_t hlen, plen, n;
    uint64_t v;
    int rc;

    l->scheme = NW_LISTEN_AUTO;
    if (s && strncmp(s, "https://", 8) == 0) {
        l->scheme = NW_LISTEN_TLS;
        s += 8;
    } else if (s && strncmp(s, "http://", 7) == 0) {
        l->scheme = NW_LISTEN_PLAIN;
        s += 7;
    }
    if (!s || !*s)
        return fail(err, errlen, "empty address");
    n = strlen(s);
    end = s + n;
    if (strspn(s, "0123456789") == n) { /* "8000" */
        host = s;
        hlen = 0;
        port = s;
        plen = n;
    } else {
        rc = split_hostport(s, end, &host, &hlen, &port, &plen, err, errlen);
        if (rc == 0 && *s != '[' && hlen > 0)
            rc = host_ok(host, hlen, err, errlen);
        if (rc)
            return rc;
    }
    if (!port || plen == 0)
        return fail(err, errlen, "missing port in '%.*s' (use HOST:PORT or :PORT)",
                    (int)NW_MIN(n, QLEN), s);
    if (parse_uint(port, plen, 65535, &v))
        return fail(err, errlen, "invalid port in '%.*s'", (int)NW_MIN(n, QLEN), s);
    if (hlen >= sizeof(l->host))
        return fail(err, errlen, "host name too long");
    memcpy(l->host, host, hlen);
    l->host[hlen] = 0;
    l->port = (uint16_t)v;
    return 0;
}

/* ---- .env files --------------------------------------------------------- */

static const char *skip_blank(const char *p, const char *end) {
    while (p < end && is_blank((unsigned char)*p))
        p++;
    return p;
}

static const char *trim_end(const char *start, const char *p) {
    while (p > start && is_blank((unsigned char)p[-1]))
        p--;
    return p;
}

static int key_ok(const char *k, size_t n) {
    size_t i;

    if (n == 0 || is_digit((unsigned char)k[0]))
        return 0;
    for (i = 0; i < n; i++) {
        int c = (unsigned char)k[i];
        if (!is_alpha(c) && !is_digit(c) && c != '_')
            return 0;
    }
    return 1;
}

#if defined(__GNUC__)
__attribute__((format(printf, 4, 5)))
#endif
static int line_fail(char *err, size_t errlen, unsigned line, const char *fmt, ...) {
    char why[NW_CFG_ERRLEN];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return fail(err, errlen, "line %u: %s", line, why);
}

/* A value in quotes starting at *p. Double quotes understand \n \t \r \"
 * and \\; any other backslash is kept as written. out has room for the
 * raw text, which the value never exceeds. */
static int env_quoted(const char *p, const char *end, char *out, unsigned line, char *err,
                      size_t errlen) {
    char q = *p++;
    size_t o = 0;

    while (p < end && *p != q) {
        if (q == '"' && *p == '\\' && p + 1 < end) {
            char c = p[1];
            p += 2;
            switch (c) {
            case 'n': out[o++] = '\n'; break;
            case 't': out[o++] = '\t'; break;
            case 'r': out[o++] = '\r'; break;
            case '"': case '\\': out[o++] = c; break;
            default: out[o++] = '\\'; out[o++] = c; break;
            }
            continue;
        }
        out[o++] = *p++;
    }
    if (p == end)
        return line_fail(err, errlen, line, "unterminated quote");
    out[o] = 0;
    p = skip_blank(p + 1, end);
    if (p < end && *p != '#')
        return line_fail(err, errlen, line, "unexpected text after closing quote");
    return 0;
}

/* The value after '=' (at v) up to end. Unquoted values are trimmed and
 * end at a '#' that follows a space or tab. */
static int env_value(const char *v, const char *end, char *out, unsigned line, char *err,
                     size_t errlen) {
    const char *p = skip_blank(v, end), *stop = end, *q;

    if (p < end && (*p == '\'' || *p == '"'))
        return env_quoted(p, end, out, line, err, errlen);
    for (q = p; q < end; q++) {
        if (*q == '#' && q > v && is_blank((unsigned char)q[-1])) {
            stop = q;
            break;
        }
    }
    stop = trim_end(p, stop);
    memcpy(out, p, (size_t)(stop - p));
    out[stop - p] = 0;
    return 0;
}

/* One line of n bytes without its terminator. buf has room for n + 2. */
static int env_line(const char *s, size_t n, unsigned line, char *buf, nw_env_cb cb, void *ud,
                    char *err, size_t errlen) {
    const char *end = s + n, *eq, *kend;
    size_t klen;
    int rc;

    if (memchr(s, 0, n))
        return line_fail(err, errlen, line, "NUL byte");
    s = skip_blank(s, end);
    if (s == end || *s == '#')
        return 0;
    if (end - s > 7 && memcmp(s, "export", 6) == 0 && is_blank((unsigned char)s[6]))
        s = skip_blank(s + 7, end);
    eq = memchr(s, '=', (size_t)(end - s));
    if (!eq)
        return line_fail(err, errlen, line, "expected KEY=VALUE");
    kend = trim_end(s, eq);
    klen = (size_t)(kend - s);
    if (!key_ok(s, klen))
        return line_fail(err, errlen, line, "invalid key '%.*s'", (int)NW_MIN(klen, QLEN), s);
    memcpy(buf, s, klen);
    buf[klen] = 0;
    rc = env_value(eq + 1, end, buf + klen + 1, line, err, errlen);
    return rc ? rc : cb(buf, buf + klen + 1, ud);
}

/* A non-zero return from cb stops the parse and is returned as is; err is
 * then left to the callback. */
int nw_env_parse(const char *text, size_t len, nw_env_cb cb, void *ud, char *err,
                 size_t errlen) {
    size_t pos = 0;
    unsigned line = 0;
    char *buf;
    int rc = 0;

    if (len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0) /* UTF-8 BOM */
        pos = 3;
    buf = nw_malloc(len + 2);
    if (!buf) {
        fail(err, errlen, "out of memory");
        return NW_ENOMEM;
    }
    while (pos < len && rc == 0) {
        const char *s = text + pos, *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + 1;
        if (n > 0 && s[n - 1] == '\r')
            n--;
        rc = env_line(s, n, ++line, buf, cb, ud, err, errlen);
    }
    nw_free(buf);
    return rc;
}

/* Read a whole file, up to ENV_FILE_MAX. 0, a negative errno, or
 * NW_ETOOBIG. *data is NUL-terminated and owned by the caller. */
static int slurp(const char *path, char **data, size_t *len) {
    FILE *f = fopen(path, "rb");
    char *buf = NULL, *nb;
    size_t n = 0, cap = 0;
    int rc = 0;

    if (!f)
        return -errno;
    for (;;) {
        if (n + 1 >= cap) {
            cap = cap ? cap * 2 : 4096;
            if (cap > ENV_FILE_MAX * 2u) {
                rc = NW_ETOOBIG;
                break;
            }
            nb = nw_realloc(buf, cap);
            if (!nb) {
                rc = NW_ENOMEM;
                break;
            }
            buf = nb;
        }
        n += fread(buf + n, 1, cap - n - 1, f);
        if (ferror(f)) {
            rc = errno ? -errno : -EIO;
            break;
        }
        if (feof(f))
            break;
    }
    fclose(f);
    if (rc == 0 && n > ENV_FILE_MAX)
        rc = NW_ETOOBIG;
    if (rc) {
        nw_free(buf);
        return rc;
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

/* ---- option tables and layering ----------------------------------------- */

enum {
    OPT_SECS,    /* uint64_t ms, must be > 0 */
    OPT_BYTES,   /* uint32_t, BYTES_MIN..BYTES_MAX, k/m/g suffixes */
    OPT_COUNT,   /* uint32_t, 0..max */
    OPT_COUNT1,  /* uint32_t, 1..max */
    OPT_LEVEL,   /* int log level */
    OPT_ID,      /* char[129] agent id */
    OPT_URL,     /* nw_url_t */
    OPT_PATH,    /* char[1024] file name */
    OPT_BOOL,    /* int; a flag without a value sets 1; env 1/true/yes or 0/false/no */
    OPT_TOKEN,   /* char[NW_CFG_TOKEN_MAX + 1], visible ASCII */
    OPT_REGEX,   /* char[1024], a POSIX extended regular expression that compiles */
    OPT_BALANCE, /* int NW_BALANCE_* */
    OPT_LISTEN,  /* repeatable, handled by nw_cfg_serve */
    OPT_ENVFILE, /* handled by nw_cfg_agent */
};

/* One setting: its flag, its environment name, how its value is checked
 * and where in the config struct it goes. */
typedef struct {
    const char *flag; /* "--window" */
    const char *env;  /* "WINDOW", or NULL when only a flag sets it */
    int kind;         /* OPT_* */
    size_t off;       /* offset of the field in the config struct */
    uint64_t max;     /* OPT_COUNT upper bound */
    int required;     /* must be set in some layer */
} opt_t;

#define MAX_OPTS 32

/* The raw values of every layer for one run. Nothing is validated until
 * the layers are merged; file values are owned copies. */
typedef struct {
    const opt_t *opts;
    size_t nopts;
    const char *flag_val[MAX_OPTS];
    char *file_val[MAX_OPTS];
    const char *val[MAX_OPTS];  /* winner after merging */
    const char *from[MAX_OPTS]; /* its name in messages: flag or env name */
    const char *listen[NW_CFG_MAX_LISTEN];
    int nlisten;
} layers_t;

#define SERVE_FIELD(f) offsetof(nw_serve_cfg_t, f)
static const opt_t serve_opts[] = {
    {"--listen", NULL, OPT_LISTEN, 0, 0, 0},
    {"--response-timeout", "RESPONSE_TIMEOUT", OPT_SECS, SERVE_FIELD(response_timeout_ms), 0, 0},
    {"--ping-interval", "PING_INTERVAL", OPT_SECS, SERVE_FIELD(ping_interval_ms), 0, 0},
    {"--max-head", NULL, OPT_BYTES, SERVE_FIELD(max_head), 0, 0},
    {"--window", "WINDOW", OPT_BYTES, SERVE_FIELD(window), 0, 0},
    {"--log-level", "LOG_LEVEL", OPT_LEVEL, SERVE_FIELD(log_level), 0, 0},
    {"--tls-cert", "TLS_CERT", OPT_PATH, SERVE_FIELD(tls_cert), 0, 0},
    {"--tls-key", "TLS_KEY", OPT_PATH, SERVE_FIELD(tls_key), 0, 0},
    {"--trust-proxy", "TRUST_PROXY", OPT_BOOL, SERVE_FIELD(trust_proxy), 0, 0},
    {"--conn-token", "CONN_TOKEN", OPT_TOKEN, SERVE_FIELD(conn_token), 0, 0},
    {"--allow-agent", "ALLOW_AGENT", OPT_REGEX, SERVE_FIELD(allow_agent), 0, 0},
    {"--auth-token", "AUTH_TOKEN", OPT_TOKEN, SERVE_FIELD(auth_token), 0, 0},
    {"--auth-rule", "AUTH_RULE", OPT_REGEX, SERVE_FIELD(auth_rule), 0, 0},
    {"--max-headers", "MAX_HEADERS", OPT_COUNT1, SERVE_FIELD(max_headers), 200, 0},
    {"--max-url", "MAX_URL", OPT_BYTES, SERVE_FIELD(max_url), 0, 0},
    {"--idle-timeout", "IDLE_TIMEOUT", OPT_SECS, SERVE_FIELD(idle_timeout_ms), 0, 0},
    {"--head-timeout", "HEAD_TIMEOUT", OPT_SECS, SERVE_FIELD(head_timeout_ms), 0, 0},
    {"--body-timeout", "BODY_TIMEOUT", OPT_SECS, SERVE_FIELD(body_timeout_ms), 0, 0},
    {"--max-streams", "MAX_STREAMS", OPT_COUNT1, SERVE_FIELD(max_streams), 1000000, 0},
    {"--queue-timeout", "QUEUE_TIMEOUT", OPT_SECS, SERVE_FIELD(queue_timeout_ms), 0, 0},
    {"--max-conns", "MAX_CONNS", OPT_COUNT1, SERVE_FIELD(max_conns), 1000000, 0},
    {"--max-tunnels", "MAX_TUNNELS", OPT_COUNT1, SERVE_FIELD(max_tunnels), 1024, 0},
    {"--max-agent-tunnels", "MAX_AGENT_TUNNELS", OPT_COUNT1, SERVE_FIELD(max_agent_tunnels),
     100000, 0},
    {"--balance", "BALANCE", OPT_BALANCE, SERVE_FIELD(balance), 0, 0},
    {"--grace", "GRACE", OPT_SECS, SERVE_FIELD(grace_ms), 0, 0},
};

#define AGENT_FIELD(f) offsetof(nw_agent_cfg_t, f)
static const opt_t agent_opts[] = {
    {"--env", NULL, OPT_ENVFILE, 0, 0, 0},
    {"--id", "AGENT_ID", OPT_ID, AGENT_FIELD(agent_id), 0, 1},
    {"--remote", "REMOTE_URL", OPT_URL, AGENT_FIELD(remote), 0, 1},
    {"--local", "LOCAL_URL", OPT_URL, AGENT_FIELD(local), 0, 1},
    {"--ping-interval", "PING_INTERVAL", OPT_SECS, AGENT_FIELD(ping_interval_ms), 0, 0},
    {"--connect-timeout", "CONNECT_TIMEOUT", OPT_SECS, AGENT_FIELD(connect_timeout_ms), 0, 0},
    {"--pool-size", "POOL_SIZE", OPT_COUNT, AGENT_FIELD(pool_size), POOL_MAX, 0},
    {"--window", "WINDOW", OPT_BYTES, AGENT_FIELD(window), 0, 0},
    {"--max-head", "MAX_HEAD", OPT_BYTES, AGENT_FIELD(max_head), 0, 0},
    {"--log-level", "LOG_LEVEL", OPT_LEVEL, AGENT_FIELD(log_level), 0, 0},
    {"--ca-file", "CA_FILE", OPT_PATH, AGENT_FIELD(ca_file), 0, 0},
    {"--insecure", "TLS_INSECURE", OPT_BOOL, AGENT_FIELD(insecure), 0, 0},
    {"--local-ca-file", "LOCAL_CA_FILE", OPT_PATH, AGENT_FIELD(local_ca_file), 0, 0},
    {"--local-insecure", "LOCAL_INSECURE", OPT_BOOL, AGENT_FIELD(local_insecure), 0, 0},
    {"--conn-token", "CONN_TOKEN", OPT_TOKEN, AGENT_FIELD(conn_token), 0, 0},
    {"--max-conn", "MAX_CONN", OPT_COUNT1, AGENT_FIELD(max_conn), 64, 0},
    {"--max-local-conns", "MAX_LOCAL_CONNS", OPT_COUNT1, AGENT_FIELD(max_local), 65536, 0},
    {"--local-queue", "LOCAL_QUEUE", OPT_COUNT, AGENT_FIELD(local_queue), 1000000, 0},
    {"--local-queue-timeout", "LOCAL_QUEUE_TIMEOUT", OPT_SECS,
     AGENT_FIELD(local_queue_timeout_ms), 0, 0},
    {"--max-local-pipes", "MAX_LOCAL_PIPES", OPT_COUNT1, AGENT_FIELD(max_pipes), 1000000, 0},
    {"--grace", "GRACE", OPT_SECS, AGENT_FIELD(grace_ms), 0, 0},
};

_Static_assert(NW_ARRAY_LEN(serve_opts) <= MAX_OPTS, "raise MAX_OPTS");
_Static_assert(NW_ARRAY_LEN(agent_opts) <= MAX_OPTS, "raise MAX_OPTS");

static void layers_init(layers_t *ly, const opt_t *opts, size_t n) {
    memset(ly, 0, sizeof(*ly));
    ly->opts = opts;
    ly->nopts = n;
}

static void layers_free(layers_t *ly) {
    size_t i;

    for (i = 0; i < ly->nopts; i++)
        nw_free(ly->file_val[i]);
}

static int find_kind(const layers_t *ly, int kind) {
    size_t i;

    for (i = 0; i < ly->nopts; i++)
        if (ly->opts[i].kind == kind)
            return (int)i;
    return -1;
}

/* Later layers win: .env file, then the environment, then flags. Empty
 * values in the file or the environment count as unset. */
static void layers_merge(layers_t *ly) {
    size_t i;

    for (i = 0; i < ly->nopts; i++) {
        const opt_t *o = &ly->opts[i];
        const char *e = o->env ? getenv(o->env) : NULL;
        if (ly->file_val[i] && ly->file_val[i][0]) {
            ly->val[i] = ly->file_val[i];
            ly->from[i] = o->env;
        }
        if (e && e[0]) {
            ly->val[i] = e;
            ly->from[i] = o->env;
        }
        if (ly->flag_val[i]) {
            ly->val[i] = ly->flag_val[i];
            ly->from[i] = o->flag;
        }
    }
}

static int apply_secs(uint64_t *field, const char *v, char *why, size_t whylen) {
    uint64_t ms;

    if (nw_parse_secs(v, &ms))
        return fail(why, whylen, "invalid duration '%.*s' (use seconds, e.g. 30 or 0.5)", QLEN,
                    v);
    if (ms == 0)
        return fail(why, whylen, "must be greater than 0");
    *field = ms;
    return 0;
}

static int apply_bytes(uint32_t *field, const char *v, char *why, size_t whylen) {
    uint64_t n;

    if (nw_parse_bytes(v, &n))
        return fail(why, whylen, "invalid size '%.*s' (use bytes, e.g. 65536 or 64k)", QLEN, v);
    if (n < BYTES_MIN || n > BYTES_MAX)
        return fail(why, whylen, "must be between %llu and %llu bytes",
                    (unsigned long long)BYTES_MIN, (unsigned long long)BYTES_MAX);
    *field = (uint32_t)n;
    return 0;
}

static int apply_count(uint32_t *field, uint64_t min, uint64_t max, const char *v, char *why,
                       size_t whylen) {
    uint64_t n;

    if (parse_uint(v, strlen(v), max, &n))
        return fail(why, whylen, "invalid number '%.*s' (use %llu-%llu)", QLEN, v,
                    (unsigned long long)min, (unsigned long long)max);
    if (n < min)
        return fail(why, whylen, "must be at least %llu", (unsigned long long)min);
    *field = (uint32_t)n;
    return 0;
}

static int apply_level(int *field, const char *v, char *why, size_t whylen) {
    static const char *names[] = {"error", "warn", "info", "debug"};
    size_t i;

    for (i = 0; i < NW_ARRAY_LEN(names); i++) {
        if (nw_strieq(v, strlen(v), names[i])) {
            *field = NW_LOG_ERROR + (int)i;
            return 0;
        }
    }
    return fail(why, whylen, "invalid log level '%.*s' (use error, warn, info or debug)", QLEN,
                v);
}

static int apply_id(char *field, const char *v, char *why, size_t whylen) {
    size_t i, n = strlen(v);

    if (n == 0 || n > 128)
        return fail(why, whylen, "must be 1 to 128 characters long");
    for (i = 0; i < n; i++) {
        int c = (unsigned char)v[i];
        if (!is_alpha(c) && !is_digit(c) && !strchr("._@:+-", c))
            return fail(why, whylen, "invalid character '%c' (use A-Z a-z 0-9 . _ @ : + -)",
                        c >= 0x20 && c < 0x7f ? c : '?');
    }
    memcpy(field, v, n + 1);
    return 0;
}

static int apply_path(char *field, const char *v, char *why, size_t whylen) {
    size_t n = strlen(v);
    if (n == 0 || n >= 1024)
        return fail(why, whylen, "file name must be 1 to 1023 characters");
    memcpy(field, v, n + 1);
    return 0;
}

static int apply_bool(int *field, const char *v, char *why, size_t whylen) {
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    size_t i;
    for (i = 0; i < 4; i++) {
        if (nw_strieq(v, strlen(v), yes[i]) || nw_strieq(v, strlen(v), no[i])) {
            *field = nw_strieq(v, strlen(v), yes[i]);
            return 0;
        }
    }
    return fail(why, whylen, "invalid value '%.*s' (use 1 or 0)", QLEN, v);
}

static int apply_token(char *field, const char *v, char *why, size_t whylen) {
    size_t i, n = strlen(v);
    if (n == 0 || n > NW_CFG_TOKEN_MAX)
        return fail(why, whylen, "must be 1 to %d characters long", NW_CFG_TOKEN_MAX);
    for (i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return fail(why, whylen, "only visible ASCII characters (no spaces) are allowed");
    memcpy(field, v, n + 1);
    return 0;
}

/* Checked here so a bad expression stops the start with exit 2; the user
 * (serve) compiles it again for use. */
static int apply_regex(char *field, const char *v, char *why, size_t whylen) {
    size_t n = strlen(v);
    regex_t re;
    int rc;
    if (n == 0 || n >= 1024)
        return fail(why, whylen, "regular expression must be 1 to 1023 characters");
    rc = regcomp(&re, v, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char m[128];
        regerror(rc, &re, m, sizeof(m));
        return fail(why, whylen, "invalid regular expression '%.*s': %s", QLEN, v, m);
    }
    regfree(&re);
    memcpy(field, v, n + 1);
    return 0;
}

static int apply_balance(int *field, const char *v, char *why, size_t whylen) {
    static const char *names[] = {"least", "hash-ip", "round-robin"};
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(names); i++) {
        if (nw_strieq(v, strlen(v), names[i])) {
            *field = (int)i;
            return 0;
        }
    }
    return fail(why, whylen, "invalid balance '%.*s' (use least, hash-ip or round-robin)", QLEN,
                v);
}

static int apply_opt(const opt_t *o, void *cfg, const char *v, char *why, size_t whylen) {
    char *field = (char *)cfg + o->off;

    switch (o->kind) {
    case OPT_SECS: return apply_secs((uint64_t *)(void *)field, v, why, whylen);
    case OPT_BYTES: return apply_bytes((uint32_t *)(void *)field, v, why, whylen);
    case OPT_COUNT: return apply_count((uint32_t *)(void *)field, 0, o->max, v, why, whylen);
    case OPT_COUNT1: return apply_count((uint32_t *)(void *)field, 1, o->max, v, why, whylen);
    case OPT_LEVEL: return apply_level((int *)(void *)field, v, why, whylen);
    case OPT_ID: return apply_id(field, v, why, whylen);
    case OPT_URL: return nw_url_parse(v, (nw_url_t *)(void *)field, why, whylen);
    case OPT_PATH: return apply_path(field, v, why, whylen);
    case OPT_BOOL: return apply_bool((int *)(void *)field, v, why, whylen);
    case OPT_TOKEN: return apply_token(field, v, why, whylen);
    case OPT_REGEX: return apply_regex(field, v, why, whylen);
    case OPT_BALANCE: return apply_balance((int *)(void *)field, v, why, whylen);
    default: return 0;
    }
}

/* Validate every merged value in table order and store it. */
static int layers_apply(layers_t *ly, void *cfg, char *err, size_t errlen) {
    char why[NW_CFG_ERRLEN];
    size_t i;

    for (i = 0; i < ly->nopts; i++) {
        const opt_t *o = &ly->opts[i];
        if (!ly->val[i]) {
            if (o->required)
                return fail(err, errlen, "%s is not set (use %s=... in .env, the environment, "
                            "or %s)", o->env, o->env, o->flag);
            continue;
        }
        if (apply_opt(o, cfg, ly->val[i], why, sizeof(why)))
            return fail(err, errlen, "%s: %s", ly->from[i], why);
    }
    return 0;
}

/* ---- argv --------------------------------------------------------------- */

static int record_flag(layers_t *ly, size_t i, const char *v, char *err, size_t errlen) {
    if (ly->opts[i].kind != OPT_LISTEN) {
        ly->flag_val[i] = v;
        return 0;
    }
    if (ly->nlisten == NW_CFG_MAX_LISTEN)
        return fail(err, errlen, "--listen: at most %d addresses", NW_CFG_MAX_LISTEN);
    ly->listen[ly->nlisten++] = v;
    return 0;
}

static int find_flag(const layers_t *ly, const char *a, size_t n) {
    size_t i;

    for (i = 0; i < ly->nopts; i++)
        if (strlen(ly->opts[i].flag) == n && memcmp(ly->opts[i].flag, a, n) == 0)
            return (int)i;
    return -1;
}

/* Record every flag's raw value. Returns 0, 1 after printing help or the
 * version, or NW_ECONFIG. Values are checked later, so --help wins over a
 * bad value anywhere on the line. */
static int parse_args(int argc, char **argv, layers_t *ly, void (*usage)(void), char *err,
                      size_t errlen) {
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i], *eq, *v;
        size_t n;
        int k;

        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            printf("natwrp %s\n", NW_VERSION);
            return 1;
        }
        if (a[0] != '-')
            return fail(err, errlen, "unexpected argument '%.*s'", QLEN, a);
        eq = strchr(a, '=');
        n = eq ? (size_t)(eq - a) : strlen(a);
        k = find_flag(ly, a, n);
        if (k < 0 && ((n == 6 && memcmp(a, "--help", 6) == 0) ||
                      (n == 9 && memcmp(a, "--version", 9) == 0)))
            return fail(err, errlen, "%.*s takes no value", (int)n, a);
        if (k < 0)
            return fail(err, errlen, "unknown flag %.*s", (int)NW_MIN(n, QLEN), a);
        if (eq)
            v = eq + 1;
        else if (ly->opts[k].kind == OPT_BOOL)
            v = "1"; /* a bare boolean flag switches it on */
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            v = argv[++i];
        else
            return fail(err, errlen, "%s: missing value", ly->opts[k].flag);
        if (record_flag(ly, (size_t)k, v, err, errlen))
            return NW_ECONFIG;
    }
    return 0;
}

/* ---- usage -------------------------------------------------------------- */

static void serve_usage(void) {
    fputs("Usage: natwrp serve [options]\n"
          "\n"
          "Accept agents and forward every HTTP request to one of them. Agents connect\n"
          "with a WebSocket to the path " NW_TUNNEL_PATH "; that path is reserved and\n"
          "never forwarded.\n"
          "\n"
          "Options (a flag overrides its environment variable):\n"
          "  --listen ADDR            address to listen on; repeat for up to 8 addresses.\n"
          "                           \":8000\" or \"8000\" (every interface), \"0.0.0.0:8000\",\n"
          "                           \"127.0.0.1:8000\", \"[::1]:8000\", \"localhost:8000\".\n"
          "                           Port 0 picks a free port.\n"
          "                           (default \":8000\", or \":$PORT\" when PORT is set)\n"
          "  --response-timeout SECS  wait this long for the agent's response head\n"
          "                           (default 60; env RESPONSE_TIMEOUT)\n"
          "  --ping-interval SECS     tunnel keepalive ping interval\n"
          "                           (default 30; env PING_INTERVAL)\n"
          "  --max-head BYTES         largest request head accepted, at least 1k\n"
          "                           (default 65536)\n"
          "  --window BYTES           per-stream flow-control window, 1k to 2147483647\n"
          "                           (default 262144; env WINDOW)\n"
          "  --log-level LEVEL        error, warn, info or debug\n"
          "                           (default info; env LOG_LEVEL)\n"
          "  --tls-cert FILE          PEM certificate chain (leaf first); with --tls-key,\n"
          "                           bare --listen addresses serve HTTPS and WSS, and\n"
          "                           http://ADDR stays plain (env TLS_CERT). SIGHUP\n"
          "                           reloads the pair; a bad new pair is refused.\n"
          "  --tls-key FILE           PEM private key (env TLS_KEY)\n"
          "  --trust-proxy            keep incoming X-Forwarded-For (appending the peer),\n"
          "                           X-Forwarded-Proto and -Host, Forwarded, X-Real-IP:\n"
          "                           only behind a proxy you run (env TRUST_PROXY=1).\n"
          "                           Without it the client address replaces\n"
          "                           X-Forwarded-For; Forwarded and X-Real-IP are dropped.\n"
          "\n"
          "Who may connect and pass:\n"
          "  --conn-token TOKEN       agents must send \"Authorization: Bearer TOKEN\" when\n"
          "                           opening a tunnel, else 401 (env CONN_TOKEN)\n"
          "  --allow-agent REGEX      only AGENT_IDs matching this POSIX extended regex may\n"
          "                           open tunnels, else 403 (env ALLOW_AGENT)\n"
          "  --auth-token TOKEN       requests must carry it in X-Auth-Token (removed before\n"
          "                           forwarding) or Authorization (\"Bearer \" optional),\n"
          "                           else 401 (env AUTH_TOKEN)\n"
          "  --auth-rule REGEX        with --auth-token: only paths matching this POSIX\n"
          "                           extended regex need the token; others pass freely.\n"
          "                           Tried, in any case, on the path as sent and\n"
          "                           normalised (decoded, slashes merged, dot segments\n"
          "                           resolved or kept)\n"
          "                           (default: every path; env AUTH_RULE)\n"
          "\n"
          "Limits:\n"
          "  --max-headers N          header fields per request, at most 200, else 431\n"
          "                           (default 200)\n"
          "  --max-url BYTES          request target length, else 414 (default 8192)\n"
          "  --head-timeout SECS      time to receive a whole request head, else 408\n"
          "                           (default 30)\n"
          "  --body-timeout SECS      a request body that makes no progress this long is\n"
          "                           reset; 408 and close. A response the client takes\n"
          "                           nothing of this long is cut too (default 30)\n"
          "  --idle-timeout SECS      idle keep-alive connections close after (default 75)\n"
          "  --max-streams N          in-flight requests per tunnel (default 1000)\n"
          "  --queue-timeout SECS     a request waits this long for a free stream slot on\n"
          "                           any tunnel, then 503 (default 5)\n"
          "  --max-conns N            open public connections; more are refused with 503\n"
          "                           and closed (default 10000)\n"
          "  --max-tunnels N          tunnels in total, else 503 (default 256)\n"
          "  --max-agent-tunnels N    tunnels per AGENT_ID, else 429 (default 16)\n"
          "  --balance MODE           least (fewest in-flight streams, default), hash-ip\n"
          "                           (sticky by client address) or round-robin\n"
          "  --grace SECS             on SIGTERM/SIGINT: stop accepting, send GOAWAY to\n"
          "                           every agent, let requests finish this long (default 30)\n"
          "  -h, --help               show this help and exit\n"
          "  --version                print the version and exit\n",
          stdout);
    fputs("\n"
          "Environment: PORT, RESPONSE_TIMEOUT, PING_INTERVAL, WINDOW, LOG_LEVEL, TLS_CERT,\n"
          "TLS_KEY, TRUST_PROXY, CONN_TOKEN, ALLOW_AGENT, AUTH_TOKEN, AUTH_RULE, and each\n"
          "limit by its flag name in capitals (MAX_HEADERS, GRACE, ...). Empty values\n"
          "count as unset.\n"
          "SECS may have a fraction (0.5). BYTES may end in k, m or g (64k = 65536).\n",
          stdout);
}

static void agent_usage(void) {
    fputs("Usage: natwrp agent [options]\n"
          "\n"
          "Connect to a natwrp server and answer its requests from a local HTTP service.\n"
          "Each setting comes from the .env file, then the environment, then a flag; the\n"
          "later one wins. Other keys in the .env file are ignored.\n"
          "\n"
          "  --env FILE               read settings from FILE (default ./.env if it exists)\n"
          "  --id ID                  AGENT_ID: unique name of this agent, 1 to 128 of\n"
          "                           A-Z a-z 0-9 . _ @ : + -   (required)\n"
          "  --remote URL             REMOTE_URL: URL of the natwrp server, no path\n"
          "                           (required).\n"
          "                           http:// connects with ws://, https:// with wss://.\n"
          "  --local URL              LOCAL_URL: base URL of the local service (required).\n"
          "                           It may have a base path: with\n"
          "                           http://127.0.0.1:8080/app a request for /x goes\n"
          "                           to /app/x.\n"
          "  --ping-interval SECS     PING_INTERVAL: keepalive ping interval (default 30)\n"
          "  --connect-timeout SECS   CONNECT_TIMEOUT: connect timeout (default 10)\n"
          "  --pool-size N            POOL_SIZE: idle local connections kept, 0 to 1024\n"
          "                           (default 64)\n"
          "  --window BYTES           WINDOW: per-stream flow-control window, 1k to\n"
          "                           2147483647 (default 262144)\n"
          "  --max-head BYTES         MAX_HEAD: largest response head from the local\n"
          "                           service, at least 1k (default 65536)\n"
          "  --log-level LEVEL        LOG_LEVEL: error, warn, info or debug (default info)\n"
          "  --ca-file FILE           CA_FILE: CA bundle to verify an https:// REMOTE_URL\n"
          "                           (default the system bundle)\n"
          "  --insecure               TLS_INSECURE=1: do not verify the server's\n"
          "                           certificate (warned at every connect)\n"
          "  --local-ca-file FILE     LOCAL_CA_FILE: CA bundle for an https:// LOCAL_URL\n"
          "  --local-insecure         LOCAL_INSECURE=1: do not verify the local service\n"
          "  --conn-token TOKEN       CONN_TOKEN: sent to the server as\n"
          "                           \"Authorization: Bearer TOKEN\" when the tunnel opens\n"
          "  --max-conn N             MAX_CONN: tunnels to open, 1 to 64 (default 1); with\n"
          "                           more than one their ids are AGENT_ID-1 ... AGENT_ID-N\n"
          "  --max-local-conns N      MAX_LOCAL_CONNS: concurrent connections to the local\n"
          "                           service (default 256)\n"
          "  --local-queue N          LOCAL_QUEUE: requests that may wait for one; beyond\n"
          "                           that 503 (default 1024)\n"
          "  --local-queue-timeout SECS  LOCAL_QUEUE_TIMEOUT: longest wait there, then\n"
          "                           503 (default 5)\n"
          "  --max-local-pipes N      MAX_LOCAL_PIPES: upgraded connections (WebSockets)\n"
          "                           open at once; they take no request slot; one more\n"
          "                           upgrade gets 503 (default 1024)\n"
          "  --grace SECS             GRACE: on SIGTERM/SIGINT, finish in-flight requests\n"
          "                           for up to this long (default 30)\n"
          "  -h, --help               show this help and exit\n"
          "  --version                print the version and exit\n",
          stdout);
    fputs("\n"
          "URLs are http(s)://host[:port][/path], without user info, query or fragment.\n"
          "SECS may have a fraction (0.5). BYTES may end in k, m or g (64k = 65536).\n"
          "Empty values count as unset.\n"
          "\n"
          "Example .env:\n"
          "  AGENT_ID=mac@home # A unique identifier of the proxy client\n"
          "  REMOTE_URL=http://localhost:8000 # The base URL of the proxy server\n"
          "  LOCAL_URL=http://localhost:11434 # The base URL of the local HTTP server\n",
          stdout);
}

/* ---- serve -------------------------------------------------------------- */

static void serve_defaults(nw_serve_cfg_t *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->nlisten = 1;
    cfg->listen[0].port = 8000;
    cfg->response_timeout_ms = 60000;
    cfg->ping_interval_ms = 30000;
    cfg->max_head = 65536;
    cfg->window = 262144;
    cfg->log_level = NW_LOG_INFO;
    cfg->max_headers = 200;
    cfg->max_url = 8192;
    cfg->idle_timeout_ms = 75000;
    cfg->head_timeout_ms = 30000;
    cfg->body_timeout_ms = 30000;
    cfg->max_streams = 1000;
    cfg->queue_timeout_ms = 5000;
    cfg->max_conns = 10000;
    cfg->max_tunnels = 256;
    cfg->max_agent_tunnels = 16;
    cfg->balance = NW_BALANCE_LEAST;
    cfg->grace_ms = 30000;
}

/* A listener binds an address: resolving a name at start would block and
 * could bind something else tomorrow, so only literals (and localhost). */
static int listen_host_ok(const char *host) {
    unsigned char a[16];
    return !host[0] || strcmp(host, "localhost") == 0 || inet_pton(AF_INET, host, a) == 1 ||
           inet_pton(AF_INET6, host, a) == 1;
}

/* --listen flags replace the default; without them PORT does. */
static int serve_listen(const layers_t *ly, nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    char why[NW_CFG_ERRLEN];
    const char *port = getenv("PORT");
    uint64_t v;
    int i;

    for (i = 0; i < ly->nlisten; i++) {
        if (nw_listen_parse(ly->listen[i], &cfg->listen[i], why, sizeof(why)))
            return fail(err, errlen, "--listen: %s", why);
        if (!listen_host_ok(cfg->listen[i].host))
            return fail(err, errlen,
                        "--listen: '%.*s' is not an IP address (serve binds addresses, "
                        "not names; use localhost, an IPv4 or [IPv6] address, or :PORT)",
                        QLEN, cfg->listen[i].host);
    }
    if (ly->nlisten > 0) {
        cfg->nlisten = ly->nlisten;
    } else if (port && port[0]) {
        if (parse_uint(port, strlen(port), 65535, &v))
            return fail(err, errlen, "PORT: invalid port '%.*s' (use 0-65535)", QLEN, port);
        cfg->listen[0].port = (uint16_t)v;
    }
    return 0;
}

/* With a certificate, bare listeners serve TLS and http:// ones plain;
 * without one, https:// listeners are an error. */
static int serve_tls(nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    int i, have = cfg->tls_cert[0] != 0;
    if (have != (cfg->tls_key[0] != 0))
        return fail(err, errlen, "%s", have ? "--tls-cert needs --tls-key" : "--tls-key needs --tls-cert");
    for (i = 0; i < cfg->nlisten; i++) {
        nw_listen_t *l = &cfg->listen[i];
        if (l->scheme == NW_LISTEN_TLS && !have)
            return fail(err, errlen, "--listen: https:// needs --tls-cert and --tls-key");
        l->tls = have && l->scheme != NW_LISTEN_PLAIN;
    }
    return 0;
}

int nw_cfg_serve(int argc, char **argv, nw_serve_cfg_t *cfg, char *err, size_t errlen) {
    layers_t ly;
    int rc;

    serve_defaults(cfg);
    layers_init(&ly, serve_opts, NW_ARRAY_LEN(serve_opts));
    rc = parse_args(argc, argv, &ly, serve_usage, err, errlen);
    if (rc)
        return rc;
    layers_merge(&ly);
    rc = layers_apply(&ly, cfg, err, errlen);
    if (rc == 0)
        rc = serve_listen(&ly, cfg, err, errlen);
    return rc ? rc : serve_tls(cfg, err, errlen);
}

/* ---- agent -------------------------------------------------------------- */

static void agent_defaults(nw_agent_cfg_t *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->ping_interval_ms = 30000;
    cfg->connect_timeout_ms = 10000;
    cfg->pool_size = 64;
    cfg->window = 262144;
    cfg->max_head = 65536;
    cfg->log_level = NW_LOG_INFO;
    cfg->max_conn = 1;
    cfg->max_local = 256;
    cfg->local_queue = 1024;
    cfg->local_queue_timeout_ms = 5000;
    cfg->max_pipes = 1024;
    cfg->grace_ms = 30000;
}

/* Keep a copy of each .env value that names a setting; ignore the rest. */
static int on_env_pair(const char *key, const char *val, void *ud) {
    layers_t *ly = ud;
    size_t i;

    for (i = 0; i < ly->nopts; i++) {
        if (ly->opts[i].env && strcmp(ly->opts[i].env, key) == 0) {
            char *copy = nw_strndup(val, strlen(val));
            if (!copy)
                return NW_ENOMEM;
            nw_free(ly->file_val[i]);
            ly->file_val[i] = copy;
            break;
        }
    }
    return 0;
}

/* Read --env FILE, or ./.env when it exists, into the file layer. */
static int load_env_file(layers_t *ly, nw_agent_cfg_t *cfg, char *err, size_t errlen) {
    int k = find_kind(ly, OPT_ENVFILE);
    const char *given = ly->flag_val[k], *path = given ? given : ".env";
    char why[NW_CFG_ERRLEN], *text = NULL;
    size_t len = 0;
    int rc;

    rc = slurp(path, &text, &len);
    if (rc == -ENOENT && !given)
        return 0;
    if (rc)
        return fail(err, errlen, "%s%s: %s", given ? "--env " : "", path,
                    rc == NW_ETOOBIG ? "file too large" : rc == NW_ENOMEM ? "out of memory"
                                                                          : strerror(-rc));
    rc = nw_env_parse(text, len, on_env_pair, ly, why, sizeof(why));
    nw_free(text);
    if (rc == NW_ENOMEM)
        return fail(err, errlen, "%s: out of memory", path);
    if (rc)
        return fail(err, errlen, "%s: %s", path, why);
    if (strlen(path) >= sizeof(cfg->env_file))
        return fail(err, errlen, "--env: path too long");
    memcpy(cfg->env_file, path, strlen(path) + 1);
    return 0;
}

int nw_cfg_agent(int argc, char **argv, nw_agent_cfg_t *cfg, char *err, size_t errlen) {
    layers_t ly;
    int rc;

    agent_defaults(cfg);
    layers_init(&ly, agent_opts, NW_ARRAY_LEN(agent_opts));
    rc = parse_args(argc, argv, &ly, agent_usage, err, errlen);
    if (rc == 0)
        rc = load_env_file(&ly, cfg, err, errlen);
    if (rc == 0) {
        layers_merge(&ly);
        rc = layers_apply(&ly, cfg, err, errlen);
    }
    if (rc == 0 && cfg->remote.path[0]) {
        /* The tunnel is at the server's root: a prefix would send the
         * handshake, CONN_TOKEN and all, to whatever serves that prefix. */
        size_t i;
        for (i = 0; i < ly.nopts && ly.opts[i].off != AGENT_FIELD(remote); i++)
            ;
        rc = fail(err, errlen, "%s: the server's URL must not have a path ('%s'): agents "
                  "always dial " NW_TUNNEL_PATH " at the server's root; give "
                  "http(s)://host[:port] only", i < ly.nopts ? ly.from[i] : "REMOTE_URL",
                  cfg->remote.path);
    }
    layers_free(&ly);
    return rc;
}
