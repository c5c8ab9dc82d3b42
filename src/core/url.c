/* url.c: base URLs (http(s)://host[:port][/path]) and listen addresses, pure. */
#include <arpa/inet.h>
#include <string.h>

#include "cfg_int.h"
#include "url.h"

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
        return nw__cfg_fail(why, whylen, "empty host");
    if (n > 253)
        return nw__cfg_fail(why, whylen, "host name too long");
    for (i = 0; i < n; i++) {
        int c = (unsigned char)h[i];
        if (c == '.') {
            if (label == 0)
                return nw__cfg_fail(why, whylen, "empty label in host '%.*s'", (int)NW_MIN(n, QLEN),
                                    h);
            label = 0;
            continue;
        }
        if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '_')
            return nw__cfg_fail(why, whylen, "invalid character '%c' in host", c);
        if (!is_digit(c))
            name = 1;
        if (++label > 63)
            return nw__cfg_fail(why, whylen, "host label longer than 63 characters");
    }
    if (name)
        return 0;
    if (n < sizeof(tmp)) {
        memcpy(tmp, h, n);
        tmp[n] = 0;
        if (inet_pton(AF_INET, tmp, &a) == 1)
            return 0;
    }
    return nw__cfg_fail(why, whylen, "invalid IPv4 address '%.*s'", (int)NW_MIN(n, QLEN), h);
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
            return nw__cfg_fail(why, whylen, "missing ']' after IPv6 address");
        if (!ipv6_ok(s + 1, (size_t)(rb - s - 1)))
            return nw__cfg_fail(why, whylen, "invalid IPv6 address '%.*s'",
                                (int)NW_MIN(rb - s - 1, QLEN), s + 1);
        *host = s + 1;
        *hlen = (size_t)(rb - s - 1);
        rest = rb + 1;
        if (rest < end && *rest != ':')
            return nw__cfg_fail(why, whylen, "unexpected text after ']'");
    } else {
        colon = memchr(s, ':', (size_t)(end - s));
        rest = colon ? colon : end;
        if (colon && memchr(colon + 1, ':', (size_t)(end - colon - 1)))
            return nw__cfg_fail(why, whylen, "IPv6 addresses must be in brackets, e.g. [::1]:8000");
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
        return nw__cfg_fail(err, errlen, "missing scheme (use http:// or https://)");
    n = (size_t)(sep - s);
    if (nw_strieq(s, n, "https"))
        r->tls = 1;
    else if (!nw_strieq(s, n, "http"))
        return nw__cfg_fail(err, errlen, "unsupported scheme '%.*s' (use http:// or https://)",
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
        return nw__cfg_fail(err, errlen, "user info (user@host) is not allowed");
    rc = split_hostport(auth, end, &host, &hlen, &port, &plen, err, errlen);
    if (rc == 0 && *auth != '[')
        rc = host_ok(host, hlen, err, errlen);
    if (rc)
        return rc;
    if (hlen == 0 || hlen >= sizeof(r->host))
        return nw__cfg_fail(err, errlen, "%s", hlen ? "host name too long" : "empty host");
    memcpy(r->host, host, hlen);
    r->host[hlen] = 0;
    r->port = r->tls ? 443 : 80;
    if (!port)
        return 0;
    if (plen == 0)
        return nw__cfg_fail(err, errlen, "empty port after ':'");
    if (nw__cfg_uint(port, plen, 65535, &v) || v == 0)
        return nw__cfg_fail(err, errlen, "invalid port '%.*s' (use 1-65535)",
                            (int)NW_MIN(plen, QLEN), port);
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
        return nw__cfg_fail(err, errlen, "empty URL");
    for (p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return nw__cfg_fail(err, errlen, "URL contains whitespace or control characters");
    rc = url_scheme(s, &r, &auth, err, errlen);
    if (rc)
        return rc;
    if (strchr(auth, '?'))
        return nw__cfg_fail(err, errlen, "query strings ('?') are not allowed in a base URL");
    if (strchr(auth, '#'))
        return nw__cfg_fail(err, errlen, "fragments ('#') are not allowed in a base URL");
    aend = auth + strcspn(auth, "/");
    rc = url_authority(auth, aend, &r, err, errlen);
    if (rc)
        return rc;
    n = strlen(aend);
    while (n > 0 && aend[n - 1] == '/')
        n--;
    if (n >= sizeof(r.path))
        return nw__cfg_fail(err, errlen, "path too long");
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
        return nw__cfg_fail(err, errlen, "empty address");
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
        return nw__cfg_fail(err, errlen, "missing port in '%.*s' (use HOST:PORT or :PORT)",
                            (int)NW_MIN(n, QLEN), s);
    if (nw__cfg_uint(port, plen, 65535, &v))
        return nw__cfg_fail(err, errlen, "invalid port in '%.*s'", (int)NW_MIN(n, QLEN), s);
    if (hlen >= sizeof(l->host))
        return nw__cfg_fail(err, errlen, "host name too long");
    memcpy(l->host, host, hlen);
    l->host[hlen] = 0;
    l->port = (uint16_t)v;
    return 0;
}
