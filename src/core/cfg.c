/* cfg.c: the option-table machinery shared by both roles: durations, sizes
 * and the other value checks, layering (file < environment < flags) and argv.
 * Each role's table, defaults and usage text are in cfg_serve.c and cfg_agent.c.
 *
 * Nothing here is global: every result goes into the caller's struct, and
 * every setting is validated once, after the layers are merged, so a bad
 * value in a lower layer that a higher layer overrides is never an error.
 * This runs once at startup, before the loop, so plain stdio is fine. */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <regex.h>

#include "cfg_int.h"
#include "log.h"
#include "version.h"

#define SECS_MAX 1000000000ULL    /* largest duration accepted, in seconds */

/* ---- error helpers ------------------------------------------------------ */

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
int nw__cfg_fail(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;

    if (err && errlen) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return NW_ECONFIG;
}

/* ---- numbers ------------------------------------------------------------ */

/* Decimal digits only, at most max. 0 or -1. */
int nw__cfg_uint(const char *s, size_t n, uint64_t max, uint64_t *out) {
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

/* ---- option tables and layering ----------------------------------------- */

void nw__cfg_layers_init(layers_t *ly, const opt_t *opts, size_t n) {
    memset(ly, 0, sizeof(*ly));
    ly->opts = opts;
    ly->nopts = n;
}

void nw__cfg_layers_free(layers_t *ly) {
    size_t i;

    for (i = 0; i < ly->nopts; i++)
        nw_free(ly->file_val[i]);
}

int nw__cfg_find_kind(const layers_t *ly, int kind) {
    size_t i;

    for (i = 0; i < ly->nopts; i++)
        if (ly->opts[i].kind == kind)
            return (int)i;
    return -1;
}

void nw__cfg_layers_merge(layers_t *ly) {
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
        return nw__cfg_fail(why, whylen, "invalid duration '%.*s' (use seconds, e.g. 30 or 0.5)",
                            QLEN, v);
    if (ms == 0)
        return nw__cfg_fail(why, whylen, "must be greater than 0");
    *field = ms;
    return 0;
}

static int apply_secs0(uint64_t *field, const char *v, char *why, size_t whylen) {
    if (nw_parse_secs(v, field))
        return nw__cfg_fail(why, whylen, "invalid duration '%.*s' (use seconds, e.g. 30 or 0.5)",
                            QLEN, v);
    return 0;
}

/* "URL[,URL...]": each URL parsed as one; blanks around commas allowed. */
static int apply_urls(nw_urls_t *field, const char *v, char *why, size_t whylen) {
    const char *p = v;
    field->n = 0;
    for (;;) {
        const char *comma = strchr(p, ','), *e = comma ? comma : p + strlen(p);
        char one[1200], sub[NW_CFG_ERRLEN];
        while (p < e && is_blank(*p))
            p++;
        while (e > p && is_blank(e[-1]))
            e--;
        if (e == p)
            return nw__cfg_fail(why, whylen, "empty URL in the list '%.*s'", QLEN, v);
        if (field->n == NW_REMOTE_URLS_MAX)
            return nw__cfg_fail(why, whylen, "more than %d URLs", NW_REMOTE_URLS_MAX);
        if ((size_t)(e - p) >= sizeof(one))
            return nw__cfg_fail(why, whylen, "URL too long");
        memcpy(one, p, (size_t)(e - p));
        one[e - p] = 0;
        if (nw_url_parse(one, &field->u[field->n], sub, sizeof(sub)) != 0)
            return nw__cfg_fail(why, whylen, "%s%s", field->n || comma ? "in the list: " : "",
                                sub);
        field->n++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

static int apply_bytes(uint32_t *field, const char *v, char *why, size_t whylen) {
    uint64_t n;

    if (nw_parse_bytes(v, &n))
        return nw__cfg_fail(why, whylen, "invalid size '%.*s' (use bytes, e.g. 65536 or 64k)", QLEN,
                            v);
    if (n < BYTES_MIN || n > BYTES_MAX)
        return nw__cfg_fail(why, whylen, "must be between %llu and %llu bytes",
                            (unsigned long long)BYTES_MIN, (unsigned long long)BYTES_MAX);
    *field = (uint32_t)n;
    return 0;
}

static int apply_count(uint32_t *field, uint64_t min, uint64_t max, const char *v, char *why,
                       size_t whylen) {
    uint64_t n;

    if (nw__cfg_uint(v, strlen(v), max, &n))
        return nw__cfg_fail(why, whylen, "invalid number '%.*s' (use %llu-%llu)", QLEN, v,
                            (unsigned long long)min, (unsigned long long)max);
    if (n < min)
        return nw__cfg_fail(why, whylen, "must be at least %llu", (unsigned long long)min);
    *field = (uint32_t)n;
    return 0;
}

/* The index of v in names (any case), or -1. */
static int name_index(const char *v, const char *const *names, size_t n) {
    size_t i;

    for (i = 0; i < n; i++)
        if (nw_strieq(v, strlen(v), names[i]))
            return (int)i;
    return -1;
}

static int apply_level(int *field, const char *v, char *why, size_t whylen) {
    static const char *const names[] = {"error", "warn", "info", "debug"};
    int i = name_index(v, names, NW_ARRAY_LEN(names));

    if (i >= 0) {
        *field = NW_LOG_ERROR + i;
        return 0;
    }
    return nw__cfg_fail(why, whylen, "invalid log level '%.*s' (use error, warn, info or debug)",
                        QLEN, v);
}

static int apply_id(char *field, const char *v, char *why, size_t whylen) {
    size_t i, n = strlen(v);

    if (n == 0 || n > 128)
        return nw__cfg_fail(why, whylen, "must be 1 to 128 characters long");
    for (i = 0; i < n; i++) {
        int c = (unsigned char)v[i];
        if (!is_alpha(c) && !is_digit(c) && !strchr("._@:+-", c))
            return nw__cfg_fail(why, whylen, "invalid character '%c' (use A-Z a-z 0-9 . _ @ : + -)",
                                c >= 0x20 && c < 0x7f ? c : '?');
    }
    memcpy(field, v, n + 1);
    return 0;
}

static int apply_path(char *field, const char *v, char *why, size_t whylen) {
    size_t n = strlen(v);
    if (n == 0 || n >= 1024)
        return nw__cfg_fail(why, whylen, "file name must be 1 to 1023 characters");
    memcpy(field, v, n + 1);
    return 0;
}

static int apply_bool(int *field, const char *v, char *why, size_t whylen) {
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};

    int y = name_index(v, yes, NW_ARRAY_LEN(yes)), n = name_index(v, no, NW_ARRAY_LEN(no));

    if (y >= 0 || n >= 0) {
        *field = y >= 0;
        return 0;
    }
    return nw__cfg_fail(why, whylen, "invalid value '%.*s' (use 1 or 0)", QLEN, v);
}

static int apply_token(char *field, const char *v, char *why, size_t whylen) {
    size_t i, n = strlen(v);
    if (n == 0 || n > NW_CFG_TOKEN_MAX)
        return nw__cfg_fail(why, whylen, "must be 1 to %d characters long", NW_CFG_TOKEN_MAX);
    for (i = 0; i < n; i++)
        if ((unsigned char)v[i] <= 0x20 || (unsigned char)v[i] >= 0x7f)
            return nw__cfg_fail(why, whylen,
                                "only visible ASCII characters (no spaces) are allowed");
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
        return nw__cfg_fail(why, whylen, "regular expression must be 1 to 1023 characters");
    rc = regcomp(&re, v, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
        char m[128];
        regerror(rc, &re, m, sizeof(m));
        return nw__cfg_fail(why, whylen, "invalid regular expression '%.*s': %s", QLEN, v, m);
    }
    regfree(&re);
    memcpy(field, v, n + 1);
    return 0;
}

/* Names in NW_BALANCE_* order. */
static int apply_balance(int *field, const char *v, char *why, size_t whylen) {
    static const char *const names[] = {"least", "hash-ip", "round-robin"};
    int i = name_index(v, names, NW_ARRAY_LEN(names));

    if (i >= 0) {
        *field = i;
        return 0;
    }
    return nw__cfg_fail(why, whylen, "invalid balance '%.*s' (use least, hash-ip or round-robin)",
                        QLEN, v);
}

/* A DNS name (serve's --domain): labels of 1-63 letters, digits and '-'
 * (not first or last in a label, RFC 1123), at most NW_CFG_DOMAIN_MAX
 * bytes so that routes under it fit in 253; one trailing dot is dropped,
 * and the name is stored lowercase (routes compare lowercase names). */
static int apply_domain(char *field, const char *v, char *why, size_t whylen) {
    char name[NW_CFG_DOMAIN_MAX + 1];
    size_t i, lab = 0, n = strlen(v);
    const char *bad = NULL;

    if (n > 0 && v[n - 1] == '.')
        n--;
    if (n == 0)
        bad = "empty name";
    else if (n > NW_CFG_DOMAIN_MAX)
        bad = "longer than 200 bytes";
    for (i = 0; !bad && i <= n; i++) {
        char c = i < n ? v[i] : '.';
        if (c == '.') {
            if (lab == 0)
                bad = "empty label";
            else if (lab > 63)
                bad = "a label is longer than 63 bytes";
            else if (name[i - lab] == '-' || name[i - 1] == '-')
                bad = "a label starts or ends with '-'";
            lab = 0;
        } else if (is_alpha((unsigned char)c) || is_digit((unsigned char)c) || c == '-') {
            lab++;
        } else {
            bad = c == '*' ? "a name, not a pattern (no '*')"
                           : "only letters, digits, '-' and dots are allowed";
        }
        if (!bad && i < n)
            name[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    if (bad)
        return nw__cfg_fail(why, whylen, "invalid domain '%.*s': %s (e.g. tunnel.example.com)",
                            QLEN, v, bad);
    memcpy(field, name, n);
    field[n] = 0;
    return 0;
}

/* One listen address (--admin): as --listen takes it, plain HTTP only. */
static int apply_addr(nw_cfg_addr_t *field, const char *v, char *why, size_t whylen) {
    if (nw_listen_parse(v, &field->addr, why, whylen) != 0)
        return NW_ECONFIG;
    if (field->addr.scheme == NW_LISTEN_TLS)
        return nw__cfg_fail(why, whylen, "the admin listener speaks plain HTTP (no https://)");
    field->set = 1;
    return 0;
}

static int apply_logfmt(int *field, const char *v, char *why, size_t whylen) {
    static const char *const names[] = {"text", "json"};
    int i = name_index(v, names, NW_ARRAY_LEN(names));
    if (i < 0)
        return nw__cfg_fail(why, whylen, "invalid log format '%.*s' (use text or json)", QLEN, v);
    *field = i;
    return 0;
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
    case OPT_URLS: return apply_urls((nw_urls_t *)(void *)field, v, why, whylen);
    case OPT_SECS0: return apply_secs0((uint64_t *)(void *)field, v, why, whylen);
    case OPT_PATH: return apply_path(field, v, why, whylen);
    case OPT_BOOL: return apply_bool((int *)(void *)field, v, why, whylen);
    case OPT_TOKEN: return apply_token(field, v, why, whylen);
    case OPT_REGEX: return apply_regex(field, v, why, whylen);
    case OPT_BALANCE: return apply_balance((int *)(void *)field, v, why, whylen);
    case OPT_DOMAIN: return apply_domain(field, v, why, whylen);
    case OPT_ADDR: return apply_addr((nw_cfg_addr_t *)(void *)field, v, why, whylen);
    case OPT_LOGFMT: return apply_logfmt((int *)(void *)field, v, why, whylen);
    default: return 0;
    }
}

int nw__cfg_layers_apply(layers_t *ly, void *cfg, char *err, size_t errlen) {
    char why[NW_CFG_ERRLEN];
    size_t i;

    for (i = 0; i < ly->nopts; i++) {
        const opt_t *o = &ly->opts[i];
        if (!ly->val[i]) {
            if (o->required)
                return nw__cfg_fail(err, errlen,
                                    "%s is not set (use %s=... in .env, the environment, "
                                    "or %s)",
                                    o->env, o->env, o->flag);
            continue;
        }
        if (apply_opt(o, cfg, ly->val[i], why, sizeof(why)))
            return nw__cfg_fail(err, errlen, "%s: %s", ly->from[i], why);
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
        return nw__cfg_fail(err, errlen, "--listen: at most %d addresses", NW_CFG_MAX_LISTEN);
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

int nw__cfg_parse_args(int argc, char **argv, layers_t *ly, void (*usage)(void), char *err,
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
            printf("natwrp %s\n%s\n", NW_VERSION, nw_lib_versions());
            return 1;
        }
        if (a[0] != '-')
            return nw__cfg_fail(err, errlen, "unexpected argument '%.*s'", QLEN, a);
        eq = strchr(a, '=');
        n = eq ? (size_t)(eq - a) : strlen(a);
        k = find_flag(ly, a, n);
        if (k < 0 && ((n == 6 && memcmp(a, "--help", 6) == 0) ||
                      (n == 9 && memcmp(a, "--version", 9) == 0)))
            return nw__cfg_fail(err, errlen, "%.*s takes no value", (int)n, a);
        if (k < 0)
            return nw__cfg_fail(err, errlen, "unknown flag %.*s", (int)NW_MIN(n, QLEN), a);
        if (eq)
            v = eq + 1;
        else if (ly->opts[k].kind == OPT_BOOL)
            v = "1"; /* a bare boolean flag switches it on */
        else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            v = argv[++i];
        else
            return nw__cfg_fail(err, errlen, "%s: missing value", ly->opts[k].flag);
        if (record_flag(ly, (size_t)k, v, err, errlen))
            return NW_ECONFIG;
    }
    return 0;
}
