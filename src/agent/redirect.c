/* redirect.c: absolute URLs that name an origin, carried across the tunnel
 * (see redirect.h): the local service's redirects made public, as nginx's
 * "proxy_redirect default" does, and the client's Destination and If
 * resource URLs made to name the service as it is addressed. */
#include <string.h>

#include "redirect.h"

int nw_redirect_field(const char *name, size_t len) {
    if (nw_strieq(name, len, "location") || nw_strieq(name, len, "content-location"))
        return 1;
    return nw_strieq(name, len, "refresh") ? 2 : 0;
}

static int lower(int c) { return c >= 'A' && c <= 'Z' ? c + 32 : c; }

static int ieq(const char *a, size_t alen, const char *b, size_t blen) {
    size_t i;
    if (alen != blen)
        return 0;
    for (i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
            return 0;
    return 1;
}

/* An authority split into host (brackets removed) and port (0: absent). */
typedef struct {
    const char *host;
    size_t hlen;
    unsigned port;
} auth_t;

/* Parse host[:port] or [v6][:port]; -1 on userinfo or a bad port. */
static int parse_auth(const char *p, size_t n, auth_t *a) {
    size_t i, end;
    a->port = 0;
    if (memchr(p, '@', n) || n == 0)
        return -1;
    if (p[0] == '[') {
        const char *rb = memchr(p, ']', n);
        if (!rb)
            return -1;
        a->host = p + 1;
        a->hlen = (size_t)(rb - p) - 1;
        end = (size_t)(rb - p) + 1;
    } else {
        const char *c = memchr(p, ':', n);
        end = c ? (size_t)(c - p) : n;
        a->host = p;
        a->hlen = end;
    }
    if (a->hlen == 0)
        return -1;
    if (end == n)
        return 0;
    if (p[end] != ':')
        return -1;
    if (end + 1 == n)
        return 0; /* "host:" is host with the default port (RFC 3986 6.2.3) */
    for (i = end + 1; i < n; i++) {
        if (p[i] < '0' || p[i] > '9' || a->port > 65535)
            return -1;
        a->port = a->port * 10 + (unsigned)(p[i] - '0');
    }
    return a->port > 0 && a->port <= 65535 ? 0 : -1;
}

/* Does the absolute URL's authority u (scheme tls) name the same origin
 * as host:port under that scheme, default ports equal to absent ones? */
static int same(const auth_t *u, int tls, const auth_t *o) {
    unsigned dflt = tls ? 443 : 80;
    return ieq(u->host, u->hlen, o->host, o->hlen) &&
           (u->port ? u->port : dflt) == (o->port ? o->port : dflt);
}

/* Split an absolute http(s) URL u[0..n): its scheme (tls), its authority
 * (a) and where its path begins (*e). 0, or -1 for anything else. */
static int split_url(const char *u, size_t n, int *tls, auth_t *a, size_t *e) {
    size_t s, i;
    /* scheme "://" authority, the authority ending at / ? # or the end */
    for (s = 0; s < n && u[s] != ':'; s++)
        if (u[s] == '/' || u[s] == '?' || u[s] == '#')
            return -1; /* a relative reference */
    if (ieq(u, s, "http", 4))
        *tls = 0;
    else if (ieq(u, s, "https", 5))
        *tls = 1;
    else
        return -1;
    if (n - s < 3 || memcmp(u + s, "://", 3) != 0)
        return -1;
    for (i = s + 3; i < n && u[i] != '/' && u[i] != '?' && u[i] != '#'; i++)
        ;
    *e = i;
    return parse_auth(u + s + 3, i - s - 3, a);
}

int nw_redirect_origin_is(const char *o, size_t n, int url, int tls, const char *host,
                          size_t hlen) {
    auth_t oa, ha;
    size_t e;
    int otls;
    return split_url(o, n, &otls, &oa, &e) == 0 && otls == tls && (url || e == n) &&
           parse_auth(host, hlen, &ha) == 0 && same(&oa, tls, &ha);
}

/* Rewrite the URL u[0..n) into out if it is ours: 1, 0 or -1. */
static int rewrite_url(const nw_redirect_t *rd, const char *u, size_t n, nw_sbuf_t *out) {
    size_t e;
    int tls;
    auth_t ua, la, sa;

    if (split_url(u, n, &tls, &ua, &e) != 0)
        return 0;
    la.host = rd->local_host;
    la.hlen = strlen(rd->local_host);
    la.port = rd->local_port;
    if (!((tls == rd->local_tls && same(&ua, tls, &la)) ||
          (rd->sent_len && parse_auth(rd->sent, rd->sent_len, &sa) == 0 && same(&ua, tls, &sa))))
        return 0;
    if (nw_sbuf_append(out, rd->pub, rd->pub_len) != 0 || nw_sbuf_append(out, u + e, n - e) != 0)
        return -1;
    return 1;
}

/* Refresh: "5; url=http://h/p" (spaces around '=' and quotes allowed, as
 * browsers read it). The URL runs to the end, or to its closing quote. */
int nw_redirect_rewrite(const nw_redirect_t *rd, int kind, const char *v, size_t n,
                        nw_sbuf_t *out) {
    size_t i, j, end, start = out->len;
    char q = 0;
    int rc;

    if (!rd->pub_len)
        return 0;
    if (kind != 2)
        return rewrite_url(rd, v, n, out);
    for (i = 0; i < n && v[i] != ';' && v[i] != ','; i++)
        ;
    if (i == n)
        return 0;
    for (i++; i < n && (v[i] == ' ' || v[i] == '\t'); i++)
        ;
    if (n - i < 3 || !ieq(v + i, 3, "url", 3))
        return 0;
    for (j = i + 3; j < n && (v[j] == ' ' || v[j] == '\t'); j++)
        ;
    if (j == n || v[j] != '=')
        return 0;
    for (j++; j < n && (v[j] == ' ' || v[j] == '\t'); j++)
        ;
    if (j < n && (v[j] == '\'' || v[j] == '"'))
        q = v[j++];
    for (end = j; end < n && (q ? v[end] != q : 1); end++)
        ;
    while (!q && end > j && (v[end - 1] == ' ' || v[end - 1] == '\t'))
        end--;
    if (nw_sbuf_append(out, v, j) != 0)
        return -1;
    rc = rewrite_url(rd, v + j, end - j, out);
    if (rc <= 0) {
        out->len = start;
        return rc;
    }
    return nw_sbuf_append(out, v + end, n - end) == 0 ? 1 : -1;
}

/* ------------------------------------------------------- request side */

int nw_redirect_req_field(const char *name, size_t len) {
    if (nw_strieq(name, len, "destination"))
        return 1;
    return nw_strieq(name, len, "if") ? 2 : 0;
}

/* Append the URL u[0..n) made local if it names the public origin (or is
 * a path and LOCAL_URL has a base path): 1; else append nothing: 0; -1
 * when out of memory. Path, query and fragment stay as they are. */
static int local_url(const nw_requrl_t *q, const char *u, size_t n, nw_sbuf_t *out) {
    size_t e;
    int tls;
    auth_t ua, pa;

    if (n && u[0] == '/' && !(n > 1 && u[1] == '/')) { /* path-absolute */
        if (!q->base_len)
            return 0;
        e = 0;
    } else {
        if (split_url(u, n, &tls, &ua, &e) != 0 || tls != q->pub_tls ||
            parse_auth(q->pub_host, q->pub_host_len, &pa) != 0 || !same(&ua, tls, &pa))
            return 0;
        if (nw_sbuf_appends(out, q->local_tls ? "https://" : "http://") != 0 ||
            nw_sbuf_append(out, q->local_auth, q->local_auth_len) != 0)
            return -1;
    }
    /* The service's paths are below LOCAL_URL's base path, as the target's */
    if (nw_sbuf_append(out, q->base, q->base_len) != 0 || nw_sbuf_append(out, u + e, n - e) != 0)
        return -1;
    return 1;
}

/* Where the quoted string or the <...> opened at v[i] ends, or n. */
static size_t close_of(const char *v, size_t n, size_t i) {
    const char *c = memchr(v + i + 1, v[i] == '"' ? '"' : '>', n - i - 1);
    return c ? (size_t)(c - v) : n;
}

/* If (RFC 4918 10.4): only the Resource-Tags "<URL>" outside the lists
 * are resources; inside a list "( ... )" a "<...>" is a state token
 * (urn:uuid:..., never rewritten) and "[...]" an entity tag whose quoted
 * string may hold any of "<>()". Unbalanced: left as it is. */
static int local_if(const nw_requrl_t *q, const char *v, size_t n, nw_sbuf_t *out) {
    size_t i = 0, last = 0, j, start = out->len;
    int rc, changed = 0;

    while (i < n) {
        if (v[i] == '<') {
            if ((j = close_of(v, n, i)) == n)
                goto asis;
            if (nw_sbuf_append(out, v + last, i + 1 - last) != 0 ||
                (rc = local_url(q, v + i + 1, j - i - 1, out)) < 0 ||
                (rc == 0 && nw_sbuf_append(out, v + i + 1, j - i - 1) != 0))
                return -1;
            changed |= rc;
            last = i = j;
        } else if (v[i] == '(') {
            for (i++; i < n && v[i] != ')'; i++)
                if ((v[i] == '<' || v[i] == '"') && (i = close_of(v, n, i)) == n)
                    goto asis;
            if (i == n)
                goto asis;
        }
        i++;
    }
    if (changed)
        return nw_sbuf_append(out, v + last, n - last) == 0 ? 1 : -1;
asis:
    out->len = start;
    return 0;
}

int nw_redirect_request(const nw_requrl_t *q, int kind, const char *v, size_t n,
                        nw_sbuf_t *out) {
    return kind == 2 ? local_if(q, v, n, out) : local_url(q, v, n, out);
}
