/* creds.c: Basic credentials for the agent's handshake (creds.h). */
#include "creds.h"

#include <stdio.h>
#include <string.h>

#include "nw.h"

size_t nw_base64_encode(const void *in, size_t n, char *out, size_t cap) {
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = in;
    size_t i, k = 0, need = 4 * ((n + 2) / 3);
    if (need >= cap)
        return 0;
    for (i = 0; i + 2 < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        out[k++] = tab[v >> 18];
        out[k++] = tab[(v >> 12) & 63];
        out[k++] = tab[(v >> 6) & 63];
        out[k++] = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        out[k++] = tab[v >> 18];
        out[k++] = tab[(v >> 12) & 63];
        out[k++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[k++] = '=';
    }
    out[k] = 0;
    return k;
}

static int fail(char *err, size_t errlen, const char *why) {
    if (err && errlen)
        snprintf(err, errlen, "%s", why);
    return NW_ECONFIG;
}

int nw_creds_add(nw_creds_t *c, const char *s, size_t n, char *err, size_t errlen) {
    const char *colon = memchr(s, ':', n);
    char b64[NW_CRED_B64_MAX + 1];
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return fail(err, errlen, "control characters are not allowed (RFC 7617)");
    if (!colon)
        return fail(err, errlen, "expected user:password");
    if (colon == s)
        return fail(err, errlen, "empty user name (expected user:password)");
    if (colon + 1 == s + n)
        return fail(err, errlen, "empty password (expected user:password)");
    if (n > NW_CRED_LEN_MAX)
        return fail(err, errlen, "user:password longer than 255 bytes");
    nw_base64_encode(s, n, b64, sizeof(b64));
    for (i = 0; i < c->n; i++)
        if (strcmp(c->b64[i], b64) == 0)
            return 0;
    if (c->n == NW_CREDS_MAX)
        return fail(err, errlen, "more than 64 credentials");
    memcpy(c->b64[c->n++], b64, strlen(b64) + 1);
    return 0;
}

int nw_creds_parse(nw_creds_t *c, const char *text, size_t len, char *err, size_t errlen) {
    const char *p = text, *end = text + len;
    char why[128];
    unsigned line = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end, *b = p;
        line++;
        if (e > p && e[-1] == '\r')
            e--;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        if (b < e && *b != '#' && nw_creds_add(c, p, (size_t)(e - p), why, sizeof(why)) != 0) {
            if (err && errlen)
                snprintf(err, errlen, "line %u: %s", line, why);
            return NW_ECONFIG;
        }
        p = nl ? nl + 1 : end;
    }
    return 0;
}
