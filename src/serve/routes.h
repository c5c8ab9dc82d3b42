/* routes.h: the route model of issue 11 and its matcher (routes.c, pure:
 * no uv.h). A route is `HOST` or `HOST/PATH` as an agent's ROUTES gives
 * it; the table maps routes to their owners (tunnels) and picks the
 * winning route for a request's host and path; a token pattern from a
 * --tokens line says which routes a token may claim. */
#ifndef NW_ROUTES_H
#define NW_ROUTES_H

#include <stddef.h>

#define NW_ROUTE_HOST_MAX 253 /* a DNS name, without a trailing dot */
#define NW_ROUTE_PATH_MAX 512 /* a route's path prefix */
#define NW_ROUTES_MAX 64      /* routes in one ROUTES list */

/* One route. Three shapes:
 *   - the default route (no ROUTES): is_default, host and path empty;
 *   - an exact host: host "a.example.com" (lowercase);
 *   - a wildcard: wildcard set, host holds the suffix ("example.com" for
 *     "*.example.com"), which matches any name with at least one more
 *     label in front.
 * path is "" (the whole host) or a prefix starting with '/' with no
 * trailing '/', matched by whole segments. */
typedef struct {
    int is_default;
    int wildcard;
    char host[NW_ROUTE_HOST_MAX + 1];
    size_t hostlen;
    char path[NW_ROUTE_PATH_MAX + 1];
    size_t pathlen;
} nw_route_t;

/* The default route. */
void nw_route_default(nw_route_t *r);

/* Parse one route of len bytes (not NUL-terminated; a NUL byte is an
 * error). A dot-less HOST (or the part after "*." of a wildcard) is a name
 * under domain ("ollama" + "tunnel.example.com"); domain NULL or "" makes
 * such a route an error ("needs --domain"). 0, or NW_ECONFIG with a
 * one-line reason naming the route in err. */
int nw_route_parse(const char *s, size_t len, const char *domain, nw_route_t *r, char *err,
                   size_t errlen);

/* Parse a comma-separated ROUTES list (blanks around items are ignored)
 * into out (at most cap routes, NW_ROUTES_MAX is enough); duplicates are
 * kept once. An empty list or an empty item is an error. 0 with *n set,
 * or NW_ECONFIG with the reason naming the route in err. */
int nw_routes_parse_list(const char *s, const char *domain, nw_route_t *out, size_t cap, size_t *n,
                         char *err, size_t errlen);

/* The route as a full name: "a.example.com/api", "*.example.com", or "*"
 * for the default route. Returns its length; out is truncated (and
 * NUL-terminated) if cap is too small. */
size_t nw_route_format(const nw_route_t *r, char *out, size_t cap);

/* Two routes are the same route. */
int nw_route_equal(const nw_route_t *a, const nw_route_t *b);

/* Reduce a request's host (an absolute-form authority or a Host value:
 * optional userinfo, a name, optional ":port"; an IPv6 literal in
 * brackets) to the name routes match: lowercased, port and one trailing
 * dot removed, into out (NW_ROUTE_HOST_MAX + 1 bytes). Returns its length,
 * or -1 if it is not a DNS name (an IP literal, a bad byte, a label over
 * 63, a name over 253): such a host matches no named route. */
int nw_route_req_host(const char *host, size_t hostlen, char *out);

/* Route r matches the request: host is a name from nw_route_req_host
 * (hostlen < 0: none), path the request's path (its query may follow).
 * The default route matches every request. */
int nw_route_matches(const nw_route_t *r, const char *host, int hostlen, const char *path,
                     size_t pathlen);

/* ---- the table ---- */

typedef struct nw_routes nw_routes_t;

/* What lookup found. route NULL: no service (the caller answers 404).
 * nowners may be 0: the route is held (its last owner went away and it
 * was not dropped yet). Pointers stay valid until the table changes. */
typedef struct {
    const nw_route_t *route;
    void *const *owners;
    size_t nowners;
    unsigned long long mark; /* the caller's value for the entry (nw_routes_set_mark) */
} nw_route_hit_t;

nw_routes_t *nw_routes_new(void);
void nw_routes_free(nw_routes_t *t);

/* Add owner to route r (creating the route's entry; an owner already
 * there is not added twice). 0 or NW_ENOMEM. */
int nw_routes_add(nw_routes_t *t, const nw_route_t *r, void *owner);

/* Remove owner from route r. Returns the owners left (the entry stays,
 * held, at 0: nw_routes_drop removes it), or -1 if owner was not on r. */
int nw_routes_remove(nw_routes_t *t, const nw_route_t *r, void *owner);

/* Remove route r's entry if it has no owners. 1 if removed, else 0. */
int nw_routes_drop(nw_routes_t *t, const nw_route_t *r);

/* The entry for route r, or a hit with route NULL. */
nw_route_hit_t nw_routes_get(const nw_routes_t *t, const nw_route_t *r);

/* Routes in the table (the default route's entry included). */
size_t nw_routes_count(const nw_routes_t *t);

/* The i-th entry (i < nw_routes_count; the order changes when an entry is
 * dropped). */
nw_route_hit_t nw_routes_at(const nw_routes_t *t, size_t i);

/* Keep a value of the caller's with route r's entry (serve: when it was
 * last left without owners). No entry: nothing. */
void nw_routes_set_mark(nw_routes_t *t, const nw_route_t *r, unsigned long long mark);

/* The winning route for a request: host as sent (authority or Host,
 * any case, with a port), path as sent (pathlen 0 reads as "/"). An
 * exact host beats a wildcard, a longer wildcard a shorter one, then the
 * longest path wins; no match: the default route's entry, if any. One
 * pass over the table, no allocation. Paths compare byte for byte (a
 * route path holds no '%'): pass the normalised path (nw_path_normalize)
 * so that "/%61pi" routes as "/api", the path the service will see. */
nw_route_hit_t nw_routes_lookup(const nw_routes_t *t, const char *host, size_t hostlen,
                                const char *path, size_t pathlen);

/* ---- token patterns (--tokens lines) ---- */

/* "*": anything, the default route included; "*.alice.example.com": any
 * name below alice.example.com (exact or wildcard routes, any path);
 * "alice.example.com": that host, any path. */
typedef struct {
    int any;
    int wildcard;
    char host[NW_ROUTE_HOST_MAX + 1];
    size_t hostlen;
} nw_route_pat_t;

/* Parse one pattern (dot-less names as for routes, under domain). 0 or
 * NW_ECONFIG with a reason in err. */
int nw_route_pat_parse(const char *s, size_t len, const char *domain, nw_route_pat_t *p,
                       char *err, size_t errlen);

/* Pattern p grants route r. */
int nw_route_pat_grants(const nw_route_pat_t *p, const nw_route_t *r);

#endif
