/* env.c: the .env (dotenv) parser, pure: text in, KEY=VALUE pairs out. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cfg_int.h"
#include "env.h"

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
    return nw__cfg_fail(err, errlen, "line %u: %s", line, why);
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
        nw__cfg_fail(err, errlen, "out of memory");
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
