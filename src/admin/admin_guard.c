/* admin_guard.c: who may ask the admin listener (admin.c): ADMIN_TOKEN
 * (Bearer, or the Basic password) compared in constant time, the Host a
 * browser sent (DNS rebinding) and the Origin of a POST (cross-site
 * requests). Pure: request fields in, a verdict out. */
#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "admin_guard.h"
#include "basic.h"
#include "cfg.h"

/* Equal in time that depends only on the length of b (the token). */
int nw_admin_ct_eq(const char *a, size_t alen, const char *b, size_t blen) {
    unsigned char d = (unsigned char)(alen != blen);
    size_t i;
    for (i = 0; i < blen; i++)
        d |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return d == 0;
}

/* Does the request carry ADMIN_TOKEN: "Bearer TOKEN", or "Basic" with the
 * token as the password (RFC 7617: user-id, ':', password; any user)? The
 * schemes are case-insensitive (RFC 9110 11.1). Only the first
 * Authorization field counts. */
int nw_admin_authorized(const char *token, size_t token_len, const nw_hfields_t *hf) {
    const char *v, *end, *sp;
    size_t n, vlen;
    char dec[NW_CFG_TOKEN_MAX * 2 + 8];
    if ((v = nw_admin_field(hf, "authorization", &vlen)) == NULL)
        return 0;
    end = v + vlen;
    for (sp = v; sp < end && *sp != ' '; sp++)
        ;
    n = (size_t)(sp - v);
    while (sp < end && *sp == ' ')
        sp++;
    if (sp == end)
        return 0;
    if (n == 6 && nw_strieq(v, 6, "bearer"))
        return nw_admin_ct_eq(sp, (size_t)(end - sp), token, token_len);
    if (n == 5 && nw_strieq(v, 5, "basic")) {
        const char *pass;
        size_t plen;
        int ok = nw_basic_parse(v, vlen, dec, sizeof(dec), &pass, &plen) ==
                     NW_BASIC_OK &&
                 nw_admin_ct_eq(pass, plen, token, token_len);
        nw_wipe(dec, sizeof(dec));
        return ok;
    }
    return 0;
}

/* The value of the first field called name (trimmed), or NULL. */
const char *nw_admin_field(const nw_hfields_t *hf, const char *name, size_t *len) {
    nw_hdr_t h;
    const char *v, *end;
    int i = nw_hf_find(hf, name, 0);
    if (i < 0)
        return NULL;
    nw_hf_get(hf, (size_t)i, &h);
    v = h.value;
    end = v + h.value_len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *len = (size_t)(end - v);
    return v;
}

/* Is a Host value an IP literal, a name of one label (localhost, a name
 * from /etc/hosts) or NAME.localhost, with an optional port? A browser sent
 * here by a public DNS name that its owner pointed at this address (DNS
 * rebinding) says that name, which has a dot, in Host; without ADMIN_TOKEN
 * nothing else keeps such a page from reading the inspector or pressing
 * Replay. */
int nw_admin_host_local(const char *v, size_t n) {
    char buf[64];
    unsigned char ip[16];
    size_t hl = n, i;
    const char *colon;
    if (n == 0 || n >= sizeof(buf))
        return 0;
    if (v[0] == '[') {
        const char *rb = memchr(v, ']', n);
        if (!rb)
            return 0;
        hl = (size_t)(rb - v - 1);
        memcpy(buf, v + 1, hl);
        buf[hl] = '\0';
        colon = rb + 1 < v + n ? rb + 1 : NULL;
        if (colon && *colon != ':')
            return 0;
        if (inet_pton(AF_INET6, buf, ip) != 1)
            return 0;
    } else {
        colon = memchr(v, ':', n);
        hl = colon ? (size_t)(colon - v) : n;
        memcpy(buf, v, hl);
        buf[hl] = '\0';
        if (hl == 0 || (memchr(buf, '.', hl) && inet_pton(AF_INET, buf, ip) != 1 &&
                        !(hl > 10 && nw_strieq(buf + hl - 10, 10, ".localhost"))))
            return 0;
    }
    if (colon) { /* ":" then digits only */
        for (i = (size_t)(colon - v) + 1; i < n; i++)
            if (v[i] < '0' || v[i] > '9')
                return 0;
    }
    return 1;
}

/* A POST that a page of another origin made the browser send (a form, a
 * fetch): its Origin's host and port are not those in Host. The browser
 * attaches Basic credentials it remembers for us to such a request too, so
 * this is checked with ADMIN_TOKEN as well. The scheme may be https (a TLS
 * reverse proxy in front that passes Host on). No Origin (curl, scripts):
 * allowed. */
int nw_admin_cross_origin(const nw_hfields_t *hf) {
    size_t ol, hl, skip;
    const char *o = nw_admin_field(hf, "origin", &ol), *h;
    if (!o)
        return 0;
    h = nw_admin_field(hf, "host", &hl);
    if (ol > 7 && nw_strieq(o, 7, "http://"))
        skip = 7;
    else if (ol > 8 && nw_strieq(o, 8, "https://"))
        skip = 8;
    else
        return 1; /* "null" (a sandboxed frame, a file), or a scheme not ours */
    if (!h || ol != hl + skip)
        return 1;
    if (strncasecmp(o + skip, h, hl) != 0)
        return 1;
    return 0;
}
