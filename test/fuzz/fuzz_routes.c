/* fuzz_routes.c: libFuzzer target for the route model (src/serve/routes.c).
 *
 * The input is lines: the first is serve's --domain (may be empty), the
 * second a ROUTES list, each further line "HOST PATH" (split at the first
 * blank) is a request. Every piece is handed over in an exact-size heap
 * copy (no NUL), so a read past its end lands in ASan's redzone. The list
 * is parsed whole and, item by item, as single routes and as token
 * patterns; every route that parses goes into a table (the default route
 * too, when the list's first byte is odd). Checked:
 *   - a parsed route is well formed (lowercase DNS name of at most 253
 *     bytes, a path that starts with '/' and does not end with one, no
 *     "//") and its formatted name parses back to the same route;
 *   - a request host reduces to a lowercase name of at most 253 bytes;
 *   - lookup's winner matches the request by the rules, and no route in
 *     the table that matches beats it (checked against a brute-force
 *     ranking); no winner means no route matches and there is no default
 *     route; the default route wins only when no named route matches;
 *   - a pattern that grants the winner grants it only for hosts below or
 *     equal to the pattern's name;
 *   - after every owner is removed, lookups find the same routes, held
 *     (no owners), and drop empties the table. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                 \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "fuzz_routes: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

#define MAXR 128

static char *dup_n(const uint8_t *p, size_t n) {
    char *s = malloc(n ? n : 1);
    if (!s)
        abort();
    memcpy(s, p, n);
    return s;
}

static void check_name(const char *h, size_t n) {
    size_t i;
    CHECK(n >= 1 && n <= NW_ROUTE_HOST_MAX && h[n] == 0);
    CHECK(h[0] != '.' && h[n - 1] != '.' && h[0] != '-' && h[n - 1] != '-');
    for (i = 0; i < n; i++) {
        char c = h[i];
        CHECK((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.');
        CHECK(!(c == '.' && h[i + 1] == '.'));
    }
}

static void check_route(const nw_route_t *r) {
    char buf[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 8];
    nw_route_t back;
    size_t n;
    CHECK(!r->is_default);
    check_name(r->host, r->hostlen);
    CHECK(strlen(r->host) == r->hostlen && strlen(r->path) == r->pathlen);
    CHECK(r->pathlen <= NW_ROUTE_PATH_MAX);
    if (r->pathlen) {
        CHECK(r->path[0] == '/' && r->path[r->pathlen - 1] != '/');
        CHECK(strstr(r->path, "//") == NULL && !memchr(r->path, '%', r->pathlen));
    }
    n = nw_route_format(r, buf, sizeof(buf));
    CHECK(n < sizeof(buf));
    CHECK(nw_route_parse(buf, n, NULL, &back, NULL, 0) == 0);
    CHECK(nw_route_equal(&back, r));
}

/* Rank of a matching route: exact host, then wildcard length, then path. */
static int better(const nw_route_t *a, const nw_route_t *b) {
    size_t wa = a->wildcard ? a->hostlen : 0, wb = b->wildcard ? b->hostlen : 0;
    if (a->wildcard != b->wildcard)
        return !a->wildcard;
    if (wa != wb)
        return wa > wb;
    return a->pathlen > b->pathlen;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static nw_route_t routes[MAXR], list[NW_ROUTES_MAX];
    static nw_route_pat_t pats[MAXR];
    char domain[300], *rl, err[256];
    const uint8_t *p = data, *end = data + size, *nl;
    size_t nr = 0, np = 0, nlist = 0, i, j, dl;
    static int owners[3];
    int has_default = 0;
    nw_routes_t *t;

    /* Line 1: the domain. */
    nl = memchr(p, '\n', (size_t)(end - p));
    dl = (size_t)((nl ? nl : end) - p);
    if (dl >= sizeof(domain))
        dl = sizeof(domain) - 1;
    memcpy(domain, p, dl);
    domain[dl] = 0;
    if (strlen(domain) != dl)
        domain[0] = 0; /* serve's option strings hold no NUL */
    p = nl ? nl + 1 : end;

    /* Line 2: the route list, whole (as a C string) and item by item. */
    nl = memchr(p, '\n', (size_t)(end - p));
    {
        size_t ll = (size_t)((nl ? nl : end) - p);
        const uint8_t *q = p, *qe = p + ll;
        rl = malloc(ll + 1);
        if (!rl)
            abort();
        memcpy(rl, p, ll);
        rl[ll] = 0;
        if (nw_routes_parse_list(rl, domain, list, NW_ROUTES_MAX, &nlist, err, sizeof(err)) == 0) {
            CHECK(nlist >= 1 && nlist <= NW_ROUTES_MAX);
            for (i = 0; i < nlist; i++)
                check_route(&list[i]);
        } else {
            CHECK(memchr(err, 0, sizeof(err)) != NULL);
        }
        free(rl);
        has_default = ll > 0 && (p[0] & 1);
        while (q <= qe && nr < MAXR - 1) { /* one slot stays for the default route */
            const uint8_t *c = memchr(q, ',', (size_t)(qe - q));
            size_t il = (size_t)((c ? c : qe) - q);
            char *item = dup_n(q, il);
            if (nw_route_parse(item, il, domain, &routes[nr], err, sizeof(err)) == 0) {
                check_route(&routes[nr]);
                nr++;
            }
            if (np < MAXR && nw_route_pat_parse(item, il, domain, &pats[np], err, sizeof(err)) == 0)
                np++;
            free(item);
            if (!c)
                break;
            q = c + 1;
        }
        p = nl ? nl + 1 : end;
    }

    t = nw_routes_new();
    if (!t)
        abort();
    for (i = 0; i < nr; i++)
        CHECK(nw_routes_add(t, &routes[i], &owners[i % 3]) == 0);
    if (has_default) {
        nw_route_default(&routes[nr]);
        CHECK(nw_routes_add(t, &routes[nr], &owners[nr % 3]) == 0);
        nr++;
    }

    /* The requests, twice: owned, then held. */
    for (j = 0; j < 2; j++) {
        const uint8_t *q = p;
        if (j == 1)
            for (i = 0; i < nr; i++)
                nw_routes_remove(t, &routes[i], &owners[i % 3]);
        while (q < end) {
            const uint8_t *e = memchr(q, '\n', (size_t)(end - q)), *le = e ? e : end;
            const uint8_t *sp = memchr(q, ' ', (size_t)(le - q));
            size_t hl = (size_t)((sp ? sp : le) - q), pl = sp ? (size_t)(le - sp - 1) : 0;
            char *h = dup_n(q, hl), *pa = dup_n(sp ? sp + 1 : le, pl), name[NW_ROUTE_HOST_MAX + 1];
            int nlen = nw_route_req_host(h, hl, name);
            nw_route_hit_t hit = nw_routes_lookup(t, h, hl, pa, pl);
            const nw_route_t *best = NULL;
            if (nlen >= 0)
                check_name(name, (size_t)nlen);
            else
                CHECK(nlen == -1);
            for (i = 0; i < nr; i++)
                if (!routes[i].is_default && nw_route_matches(&routes[i], name, nlen, pa, pl) &&
                    (!best || better(&routes[i], best)))
                    best = &routes[i];
            if (best) {
                CHECK(hit.route && !hit.route->is_default && nw_route_equal(hit.route, best));
                CHECK(nw_route_matches(hit.route, name, nlen, pa, pl));
            } else if (has_default) {
                CHECK(hit.route && hit.route->is_default);
            } else {
                CHECK(hit.route == NULL);
            }
            if (hit.route) {
                CHECK(j == 1 ? hit.nowners == 0 : hit.nowners >= 1);
                if (best)
                    for (i = 0; i < np; i++) {
                        const nw_route_pat_t *pt = &pats[i];
                        if (!nw_route_pat_grants(pt, hit.route) || pt->any)
                            continue;
                        CHECK(nlen > 0);
                        if (!pt->wildcard)
                            CHECK((size_t)nlen == pt->hostlen && !memcmp(name, pt->host, pt->hostlen));
                        else
                            CHECK((size_t)nlen > pt->hostlen + 1 &&
                                  name[(size_t)nlen - pt->hostlen - 1] == '.' &&
                                  !memcmp(name + (size_t)nlen - pt->hostlen, pt->host, pt->hostlen));
                    }
            }
            free(h);
            free(pa);
            if (!e)
                break;
            q = e + 1;
        }
    }
    for (i = 0; i < nr; i++)
        nw_routes_drop(t, &routes[i]);
    CHECK(nw_routes_count(t) == 0);
    nw_routes_free(t);
    return 0;
}
