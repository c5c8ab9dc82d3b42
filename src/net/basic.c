/* basic.c: Basic credentials (RFC 7617), pure (see basic.h). */
#include <string.h>

#include "basic.h"
#include "nw.h"

static int b64_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Strict base64 of s[0..n) into out; its length, or -1. Padding may be
 * left off; if present it completes the last quantum of four. Bits left
 * over in the last quantum must be zero (RFC 4648 3.5: one encoding). */
static long b64_decode(const char *s, size_t n, char *out, size_t cap) {
    size_t i, o = 0, pad = 0, k = 0;
    unsigned acc = 0;
    while (pad < n && pad < 2 && s[n - 1 - pad] == '=')
        pad++;
    if (pad && n % 4)
        return -1;
    n -= pad;
    if (n % 4 == 1)
        return -1;
    for (i = 0; i < n; i++) {
        int d = b64_val((unsigned char)s[i]);
        if (d < 0)
            return -1;
        acc = acc << 6 | (unsigned)d;
        if (++k == 4) {
            if (o + 3 > cap)
                return -1;
            out[o++] = (char)(acc >> 16), out[o++] = (char)(acc >> 8), out[o++] = (char)acc;
            acc = 0, k = 0;
        }
    }
    if (k == 2) {
        if ((acc & 0xf) || o + 1 > cap)
            return -1;
        out[o++] = (char)(acc >> 4);
    } else if (k == 3) {
        if ((acc & 0x3) || o + 2 > cap)
            return -1;
        out[o++] = (char)(acc >> 10), out[o++] = (char)(acc >> 2);
    }
    return (long)o;
}

static int has_ctl(const char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return 1;
    return 0;
}

int nw_basic_parse(const char *v, size_t n, char *out, size_t cap, const char **pass,
                   size_t *plen) {
    size_t i = 5, e = n;
    const char *colon;
    long dl;
    if (n < 5 || !nw_strieq(v, 5, "basic") || (n > 5 && v[5] != ' '))
        return NW_BASIC_NOT;
    while (i < n && v[i] == ' ')
        i++;
    while (e > i && (v[e - 1] == ' ' || v[e - 1] == '\t'))
        e--;
    if (e == i)
        return NW_BASIC_BAD;
    dl = b64_decode(v + i, e - i, out, cap);
    if (dl <= 0 || !(colon = memchr(out, ':', (size_t)dl)) || has_ctl(out, (size_t)dl))
        return NW_BASIC_BAD;
    *pass = colon + 1;
    *plen = (size_t)(out + dl - *pass);
    return NW_BASIC_OK;
}
