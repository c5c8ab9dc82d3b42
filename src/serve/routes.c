/* routes.c: route parsing, the route table and its matcher, and token
 * patterns (routes.h). Pure: no libuv; lookup allocates nothing. */
#include "routes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nw.h"

/* ---- names ---- */

static char lower(char c) { return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c; }

static int is_ldh(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'; }

/* A lowercase DNS name of n bytes: labels of 1-63 letters, digits and
 * '-' (not first or last, RFC 1123), at most 253 bytes. NULL or why not. */
static const char *name_bad(const char *s, size_t n) {
    size_t i, lab = 0;
    if (n == 0)
        return "empty host";
    if (n > NW_ROUTE_HOST_MAX)
        return "host longer than 253 bytes";
    for (i = 0; i <= n; i++) {
        if (i == n || s[i] == '.') {
            if (lab == 0)
                return "empty label in host";
            if (lab > 63)
                return "host label longer than 63 bytes";
            if (s[i - lab] == '-' || s[i - 1] == '-')
                return "host label starts or ends with '-'";
            lab = 0;
        } else if (!is_ldh(s[i])) {
            return "host may hold only letters, digits, '-' and dots";
        } else {
            lab++;
        }
    }
    return NULL;
}

/* Copy the route text into err after a prefix, with bytes that do not
 * print as '?' and long text cut, then ": why". */
static void fail(char *err, size_t errlen, const char *what, const char *s, size_t len,
                 const char *why) {
    char shown[96];
    size_t i, n = len < 80 ? len : 80;
    for (i = 0; i < n; i++)
        shown[i] = (s[i] >= 0x20 && s[i] < 0x7f && s[i] != '"') ? s[i] : '?';
    shown[n] = 0;
    if (err && errlen)
        snprintf(err, errlen, "%s \"%s%s\": %s", what, shown, len > n ? "..." : "", why);
}

/* The host part h (hl bytes, any case, no '*') into out, under domain if
 * it has no dot. Returns its length or -1 with *why set. */
static int expand_name(const char *h, size_t hl, const char *domain, char *out,
                       const char **why) {
    size_t i, dl = domain ? strlen(domain) : 0, n;
    if (hl == 0) {
        *why = "empty host";
        return -1;
    }
    if (hl > NW_ROUTE_HOST_MAX) {
        *why = "host longer than 253 bytes";
        return -1;
    }
    for (i = 0; i < hl; i++) {
        out[i] = lower(h[i]);
        if (!is_ldh(out[i]) && out[i] != '.') {
            *why = "host may hold only letters, digits, '-' and dots";
            return -1;
        }
    }
    n = hl;
    if (!memchr(h, '.', hl)) {
        if (dl == 0) {
            *why = "a name without a dot needs --domain";
            return -1;
        }
        if (hl + 1 + dl > NW_ROUTE_HOST_MAX) {
            *why = "host under --domain longer than 253 bytes";
            return -1;
        }
        out[n++] = '.';
        for (i = 0; i < dl; i++)
            out[n++] = lower(domain[i]);
    }
    out[n] = 0;
    if ((*why = name_bad(out, n)) != NULL)
        return -1;
    for (i = n; i > 0 && out[i - 1] >= '0' && out[i - 1] <= '9'; i--)
        ;
    if (i == 0 || out[i - 1] == '.') {
        /* "127.0.0.1": a request for an IP address matches no named route
         * (nw_route_req_host), so such a route could never be reached. */
        *why = "an IP address is not a route (a name's last label is never all digits)";
        return -1;
    }
    return (int)n;
}

/* The host part of a route or pattern: "*.NAME" or "NAME". */
static int parse_host(const char *h, size_t hl, const char *domain, char *out, int *wild,
                      const char **why) {
    int n;
    *wild = 0;
    if (hl >= 2 && h[0] == '*' && h[1] == '.') {
        *wild = 1;
        h += 2;
        hl -= 2;
    }
    if (memchr(h, '*', hl)) {
        *why = "'*' may only be a whole first label (\"*.example.com\")";
        return -1;
    }
    n = expand_name(h, hl, domain, out, why);
    if (n >= 0 && *wild && n + 2 > NW_ROUTE_HOST_MAX) {
        *why = "host longer than 253 bytes";
        return -1;
    }
    return n;
}

/* A path byte a route may hold: RFC 3986 pchar without '%' (a route is
 * matched byte for byte against the normalised path), ';' (path
 * parameters are dropped from it, so a route with one never matches) and
 * ',' (the list separator). */
static int path_byte(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("-._~!$&'()*+=:@", c) != NULL;
}

void nw_route_default(nw_route_t *r) {
    memset(r, 0, sizeof(*r));
    r->is_default = 1;
}

int nw_route_parse(const char *s, size_t len, const char *domain, nw_route_t *r, char *err,
                   size_t errlen) {
    const char *slash = memchr(s, '/', len), *why = NULL;
    size_t hl = slash ? (size_t)(slash - s) : len, pl = len - hl, i, seg;
    int n, wild;
    memset(r, 0, sizeof(*r));
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            why = "a route may not hold blanks, control or non-ASCII bytes";
            goto bad;
        }
    }
    if (hl == 1 && s[0] == '*') {
        why = "\"*\" is not a route (leave ROUTES unset for the default route)";
        goto bad;
    }
    n = parse_host(s, hl, domain, r->host, &wild, &why);
    if (n < 0)
        goto bad;
    r->hostlen = (size_t)n;
    r->wildcard = wild;
    if (pl > 1 && slash[pl - 1] == '/' && slash[pl - 2] != '/')
        pl--; /* "/api/" is "/api" ("//" stays, refused below) */
    if (pl == 1)
        pl = 0; /* "/" is the whole host */
    if (pl > NW_ROUTE_PATH_MAX) {
        why = "path longer than 512 bytes";
        goto bad;
    }
    for (i = 1, seg = 1; i <= pl; i++) {
        if (i == pl || slash[i] == '/') {
            size_t sl = i - seg;
            if (sl == 0) {
                why = "empty path segment (\"//\")";
                goto bad;
            }
            if ((sl == 1 && slash[seg] == '.') ||
                (sl == 2 && slash[seg] == '.' && slash[seg + 1] == '.')) {
                why = "\".\" or \"..\" path segment";
                goto bad;
            }
            seg = i + 1;
        } else if (!path_byte(slash[i])) {
            why = slash[i] == '%' ? "'%' in path (write the path decoded)"
                  : slash[i] == '?' || slash[i] == '#'
                      ? "a route path has no query or fragment"
                      : "bad byte in path";
            goto bad;
        }
    }
    memcpy(r->path, slash ? slash : "", pl);
    r->path[pl] = 0;
    r->pathlen = pl;
    return 0;
bad:
    memset(r, 0, sizeof(*r));
    fail(err, errlen, "route", s, len, why);
    return NW_ECONFIG;
}

int nw_route_equal(const nw_route_t *a, const nw_route_t *b) {
    return a->is_default == b->is_default && a->wildcard == b->wildcard &&
           a->hostlen == b->hostlen && a->pathlen == b->pathlen &&
           memcmp(a->host, b->host, a->hostlen) == 0 && memcmp(a->path, b->path, a->pathlen) == 0;
}

int nw_routes_parse_list(const char *s, const char *domain, nw_route_t *out, size_t cap, size_t *n,
                         char *err, size_t errlen) {
    const char *p = s, *end = s + strlen(s);
    *n = 0;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p)), *e = comma ? comma : end, *b = p;
        nw_route_t r;
        size_t i;
        int dup = 0;
        while (b < e && (*b == ' ' || *b == '\t'))
            b++;
        while (e > b && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (b == e) {
            if (err && errlen)
                snprintf(err, errlen, "%s", *s ? "empty route in the list" : "no routes");
            return NW_ECONFIG;
        }
        if (nw_route_parse(b, (size_t)(e - b), domain, &r, err, errlen) != 0)
            return NW_ECONFIG;
        for (i = 0; i < *n; i++)
            dup |= nw_route_equal(&out[i], &r);
        if (!dup) {
            if (*n >= cap) {
                fail(err, errlen, "route", b, (size_t)(e - b), "too many routes");
                return NW_ECONFIG;
            }
            out[(*n)++] = r;
        }
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

size_t nw_route_format(const nw_route_t *r, char *out, size_t cap) {
    int n;
    if (r->is_default)
        n = snprintf(out, cap, "*");
    else
        n = snprintf(out, cap, "%s%s%s", r->wildcard ? "*." : "", r->host, r->path);
    return n < 0 ? 0 : (size_t)n;
}

/* ---- matching ---- */

int nw_route_req_host(const char *host, size_t hostlen, char *out) {
    const char *p = host, *end = host + hostlen, *at;
    size_t n, i;
    /* Userinfo in an authority ends at its last '@'. */
    for (at = end; at > p; at--)
        if (at[-1] == '@') {
            p = at;
            break;
        }
    if (p < end && *p == '[')
        return -1; /* an IPv6 literal: no DNS name */
    /* The port: after the last ':', digits only (may be empty). */
    for (i = (size_t)(end - p); i > 0; i--)
        if (p[i - 1] == ':')
            break;
    if (i > 0) {
        size_t j;
        for (j = i; j < (size_t)(end - p); j++)
            if (p[j] < '0' || p[j] > '9')
                return -1;
        end = p + i - 1;
    }
    n = (size_t)(end - p);
    if (n > 0 && p[n - 1] == '.')
        n--; /* "example.com." is example.com */
    if (n == 0 || n > NW_ROUTE_HOST_MAX)
        return -1;
    for (i = 0; i < n; i++)
        out[i] = lower(p[i]);
    out[n] = 0;
    return name_bad(out, n) ? -1 : (int)n;
}

/* The request's host matches r's host part; returns 0 if not. */
static int host_match(const nw_route_t *r, const char *host, int hostlen) {
    size_t hl = (size_t)hostlen;
    if (hostlen < 0)
        return 0;
    if (!r->wildcard)
        return hl == r->hostlen && memcmp(host, r->host, hl) == 0;
    return hl > r->hostlen + 1 && host[hl - r->hostlen - 1] == '.' &&
           memcmp(host + hl - r->hostlen, r->host, r->hostlen) == 0;
}

static int path_match(const nw_route_t *r, const char *path, size_t pathlen) {
    if (r->pathlen == 0)
        return 1;
    if (pathlen < r->pathlen || memcmp(path, r->path, r->pathlen) != 0)
        return 0;
    return pathlen == r->pathlen || path[r->pathlen] == '/' || path[r->pathlen] == '?' ||
           path[r->pathlen] == '#';
}

int nw_route_matches(const nw_route_t *r, const char *host, int hostlen, const char *path,
                     size_t pathlen) {
    if (r->is_default)
        return 1;
    if (pathlen == 0) {
        path = "/";
        pathlen = 1;
    }
    return host_match(r, host, hostlen) && path_match(r, path, pathlen);
}

/* ---- the table ---- */

typedef struct {
    nw_route_t route;
    void **owners;
    size_t n, cap;
    unsigned long long mark;
} entry_t;

struct nw_routes {
    entry_t **e; /* entries are allocated one by one, so a route pointer outlives growth */
    size_t n, cap;
};

nw_routes_t *nw_routes_new(void) { return calloc(1, sizeof(nw_routes_t)); }

void nw_routes_free(nw_routes_t *t) {
    size_t i;
    if (!t)
        return;
    for (i = 0; i < t->n; i++) {
        free(t->e[i]->owners);
        free(t->e[i]);
    }
    free(t->e);
    free(t);
}

static entry_t *find(const nw_routes_t *t, const nw_route_t *r, size_t *idx) {
    size_t i;
    for (i = 0; i < t->n; i++)
        if (nw_route_equal(&t->e[i]->route, r)) {
            if (idx)
                *idx = i;
            return t->e[i];
        }
    return NULL;
}

int nw_routes_add(nw_routes_t *t, const nw_route_t *r, void *owner) {
    entry_t *e = find(t, r, NULL);
    size_t i;
    if (!e) {
        if (t->n == t->cap) {
            size_t cap = t->cap ? t->cap * 2 : 8;
            entry_t **ne = realloc(t->e, cap * sizeof(*ne));
            if (!ne)
                return NW_ENOMEM;
            t->e = ne;
            t->cap = cap;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
            return NW_ENOMEM;
        e->route = *r;
        t->e[t->n++] = e;
    }
    for (i = 0; i < e->n; i++)
        if (e->owners[i] == owner)
            return 0;
    if (e->n == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 4;
        void **no = realloc(e->owners, cap * sizeof(*no));
        if (!no)
            return NW_ENOMEM; /* the entry stays, held, with its owners */
        e->owners = no;
        e->cap = cap;
    }
    e->owners[e->n++] = owner;
    return 0;
}

int nw_routes_remove(nw_routes_t *t, const nw_route_t *r, void *owner) {
    entry_t *e = find(t, r, NULL);
    size_t i;
    if (!e)
        return -1;
    for (i = 0; i < e->n; i++)
        if (e->owners[i] == owner) {
            /* Keep the order: --balance may count on it. */
            memmove(&e->owners[i], &e->owners[i + 1], (e->n - i - 1) * sizeof(void *));
            e->n--;
            return (int)e->n;
        }
    return -1;
}

int nw_routes_drop(nw_routes_t *t, const nw_route_t *r) {
    size_t i;
    entry_t *e = find(t, r, &i);
    if (!e || e->n)
        return 0;
    free(e->owners);
    free(e);
    t->e[i] = t->e[--t->n];
    return 1;
}

static nw_route_hit_t hit_of(const entry_t *e) {
    nw_route_hit_t h = {NULL, NULL, 0, 0};
    if (e) {
        h.route = &e->route;
        h.owners = e->owners;
        h.nowners = e->n;
        h.mark = e->mark;
    }
    return h;
}

nw_route_hit_t nw_routes_get(const nw_routes_t *t, const nw_route_t *r) {
    return hit_of(find(t, r, NULL));
}

size_t nw_routes_count(const nw_routes_t *t) { return t->n; }

nw_route_hit_t nw_routes_at(const nw_routes_t *t, size_t i) {
    return hit_of(i < t->n ? t->e[i] : NULL);
}

void nw_routes_set_mark(nw_routes_t *t, const nw_route_t *r, unsigned long long mark) {
    entry_t *e = find(t, r, NULL);
    if (e)
        e->mark = mark;
}

nw_route_hit_t nw_routes_lookup(const nw_routes_t *t, const char *host, size_t hostlen,
                                const char *path, size_t pathlen) {
    char name[NW_ROUTE_HOST_MAX + 1];
    int nl = nw_route_req_host(host, hostlen, name);
    const entry_t *best = NULL, *dflt = NULL;
    size_t i, bw = 0, bp = 0;
    int bexact = 0;
    if (pathlen == 0) {
        path = "/";
        pathlen = 1;
    }
    for (i = 0; i < t->n; i++) {
        const entry_t *e = t->e[i];
        const nw_route_t *r = &e->route;
        int exact;
        size_t w;
        if (r->is_default) {
            dflt = e;
            continue;
        }
        if (!host_match(r, name, nl) || !path_match(r, path, pathlen))
            continue;
        exact = !r->wildcard;
        w = r->wildcard ? r->hostlen : 0;
        if (best && (exact < bexact || (exact == bexact && w < bw) ||
                     (exact == bexact && w == bw && r->pathlen <= bp)))
            continue;
        best = e;
        bexact = exact;
        bw = w;
        bp = r->pathlen;
    }
    return hit_of(best ? best : dflt);
}

/* ---- token patterns ---- */

int nw_route_pat_parse(const char *s, size_t len, const char *domain, nw_route_pat_t *p,
                       char *err, size_t errlen) {
    const char *why = NULL;
    size_t i;
    int n;
    memset(p, 0, sizeof(*p));
    if (len == 1 && s[0] == '*') {
        p->any = 1;
        return 0;
    }
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f) {
            why = "a pattern may not hold blanks, control or non-ASCII bytes";
            goto bad;
        }
        if (c == '/') {
            why = "a pattern is a host (\"*\", \"*.example.com\" or \"a.example.com\"), no path";
            goto bad;
        }
    }
    n = parse_host(s, len, domain, p->host, &p->wildcard, &why);
    if (n < 0)
        goto bad;
    p->hostlen = (size_t)n;
    return 0;
bad:
    memset(p, 0, sizeof(*p));
    fail(err, errlen, "pattern", s, len, why);
    return NW_ECONFIG;
}

int nw_route_pat_grants(const nw_route_pat_t *p, const nw_route_t *r) {
    if (p->any)
        return 1;
    if (r->is_default)
        return 0;
    if (!p->wildcard)
        return !r->wildcard && r->hostlen == p->hostlen &&
               memcmp(r->host, p->host, p->hostlen) == 0;
    /* Any name below p->host: the route's host (a wildcard's suffix
     * included) is p->host itself only for a wildcard route, which covers
     * exactly the names below it. */
    if (r->wildcard && r->hostlen == p->hostlen)
        return memcmp(r->host, p->host, p->hostlen) == 0;
    return r->hostlen > p->hostlen + 1 && r->host[r->hostlen - p->hostlen - 1] == '.' &&
           memcmp(r->host + r->hostlen - p->hostlen, p->host, p->hostlen) == 0;
}
