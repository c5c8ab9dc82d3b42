/* test_routes.c: the route model of issue 11 (src/serve/routes.c): route
 * parsing (exact, wildcard, dot-less under --domain, paths at segment
 * boundaries, hostile input), ROUTES lists, the request host (case, port,
 * IPv6 literal, trailing dot), the table's precedence (exact over
 * wildcard, longer wildcard, longest path, then the default route, else
 * no service), owners, and token patterns. Every input is parsed from an
 * exact-size heap copy so that ASan catches a read past its end. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nw.h"
#include "routes.h"
#include "unit.h"

#define DOM "tunnel.example.com"

static char err[256];

/* Parse s (n bytes, may hold NUL) from an exact-size heap copy. */
static int parse_n(const char *s, size_t n, const char *domain, nw_route_t *r) {
    char *p = malloc(n ? n : 1);
    int rc;
    memcpy(p, s, n);
    err[0] = 0;
    rc = nw_route_parse(p, n, domain, r, err, sizeof(err));
    free(p);
    return rc;
}

static int parse(const char *s, const char *domain, nw_route_t *r) {
    return parse_n(s, strlen(s), domain, r);
}

static char fmt[512];
static const char *show(const nw_route_t *r) {
    nw_route_format(r, fmt, sizeof(fmt));
    return fmt;
}

typedef struct {
    const char *in;
    const char *domain;
    const char *out; /* formatted; NULL: refused */
    const char *why; /* a word the reason must hold */
} rcase_t;

static int run_rcases(const rcase_t *c, size_t n) {
    size_t i;
    int bad = 0;
    for (i = 0; i < n; i++) {
        nw_route_t r;
        int rc = parse(c[i].in, c[i].domain, &r);
        if (c[i].out ? (rc != 0 || strcmp(show(&r), c[i].out) != 0)
                     : (rc != NW_ECONFIG || !strstr(err, c[i].why) ||
                        !strstr(err, "route \""))) {
            fprintf(stderr, "  %-30s -> rc %d \"%s\" err \"%s\"\n", c[i].in, rc,
                    rc == 0 ? show(&r) : "", err);
            bad = 1;
        }
    }
    return bad;
}

UNIT_TEST(route_parse_valid) {
    static const rcase_t c[] = {
        {"a.example.com", NULL, "a.example.com", 0},
        {"A.Example.COM", NULL, "a.example.com", 0},
        {"a.example.com/", NULL, "a.example.com", 0},
        {"a.example.com/api", NULL, "a.example.com/api", 0},
        {"a.example.com/api/", NULL, "a.example.com/api", 0},
        {"a.example.com/API/v1", NULL, "a.example.com/API/v1", 0},
        {"a.example.com/a-b_c~d.e/x:y@z", NULL, "a.example.com/a-b_c~d.e/x:y@z", 0},
        {"*.example.com", NULL, "*.example.com", 0},
        {"*.Example.com/api", NULL, "*.example.com/api", 0},
        {"ollama", DOM, "ollama.tunnel.example.com", 0},
        {"OLLAMA/api", "Tunnel.Example.com", "ollama.tunnel.example.com/api", 0},
        {"*.ollama", DOM, "*.ollama.tunnel.example.com", 0},
        {"x1-2.b3.c", NULL, "x1-2.b3.c", 0},
        {"123.example.com", NULL, "123.example.com", 0},
    };
    CHECK_EQ(run_rcases(c, NW_ARRAY_LEN(c)), 0);
}

UNIT_TEST(route_parse_refused) {
    static const rcase_t c[] = {
        {"", NULL, NULL, "empty host"},
        {"/api", NULL, NULL, "empty host"},
        {"ollama", NULL, NULL, "needs --domain"},
        {"ollama", "", NULL, "needs --domain"},
        {"ollama/api", NULL, NULL, "needs --domain"},
        {"a.example.com/api;v=1", NULL, NULL, "path"},
        {"127.0.0.1", NULL, NULL, "an IP address is not a route"},
        {"10.1.2.3/api", NULL, NULL, "an IP address is not a route"},
        {"*.0.0.1", NULL, NULL, "an IP address is not a route"},
        {"a.example.123", NULL, NULL, "an IP address is not a route"},
        {"*", DOM, NULL, "not a route"},
        {"*.", DOM, NULL, "empty host"},
        {"*.*.example.com", NULL, NULL, "'*'"},
        {"a.*.example.com", NULL, NULL, "'*'"},
        {"*a.example.com", NULL, NULL, "'*'"},
        {"a..example.com", NULL, NULL, "empty label"},
        {".example.com", NULL, NULL, "empty label"},
        {"example.com.", NULL, NULL, "empty label"},
        {"a_b.example.com", NULL, NULL, "letters, digits"},
        {"a%41.example.com", NULL, NULL, "letters, digits"},
        {"-a.example.com", NULL, NULL, "'-'"},
        {"a-.example.com", NULL, NULL, "'-'"},
        {"a.example.com:8080", NULL, NULL, "letters, digits"},
        {"[::1]", NULL, NULL, "letters, digits"},
        {"127.0.0.1:80/x", NULL, NULL, "letters, digits"},
        {"a b.example.com", NULL, NULL, "blanks"},
        {"a.example.com/a b", NULL, NULL, "blanks"},
        {"a.exämple.com", NULL, NULL, "non-ASCII"},
        {"a.example.com//", NULL, NULL, "empty path segment"},
        {"a.example.com//api", NULL, NULL, "empty path segment"},
        {"a.example.com/api//x", NULL, NULL, "empty path segment"},
        {"a.example.com/..", NULL, NULL, "\"..\""},
        {"a.example.com/api/../x", NULL, NULL, "\"..\""},
        {"a.example.com/./x", NULL, NULL, "\"..\""},
        {"a.example.com/%2e%2e", NULL, NULL, "'%'"},
        {"a.example.com/a%20b", NULL, NULL, "'%'"},
        {"a.example.com/api?q=1", NULL, NULL, "no query"},
        {"a.example.com/api#f", NULL, NULL, "no query"},
        {"a.example.com/a\\b", NULL, NULL, "bad byte"},
        {"a.example.com/a,b", NULL, NULL, "bad byte"},
        {"a.example.com/a\"b", NULL, NULL, "bad byte"},
        {"ollama", "bad_domain.com", NULL, "letters, digits"},
        {"ollama", "tunnel..com", NULL, "empty label"},
    };
    CHECK_EQ(run_rcases(c, NW_ARRAY_LEN(c)), 0);
}

/* A name of n bytes: labels of lab 'a's joined by dots. */
static char *name_of(size_t n, size_t lab) {
    char *s = malloc(n + 1);
    size_t i;
    for (i = 0; i < n; i++)
        s[i] = (i % (lab + 1) == lab) ? '.' : 'a';
    if (n && s[n - 1] == '.')
        s[n - 1] = 'b';
    s[n] = 0;
    return s;
}

UNIT_TEST(route_parse_lengths) {
    nw_route_t r;
    char *s, buf[600];
    /* A label of 63 passes, 64 does not. */
    s = name_of(63, 63);
    snprintf(buf, sizeof(buf), "%s.example.com", s);
    free(s);
    CHECK_EQ(parse(buf, NULL, &r), 0);
    CHECK_EQ(r.hostlen, 63 + 12);
    s = name_of(64, 64);
    snprintf(buf, sizeof(buf), "%s.example.com", s);
    free(s);
    CHECK_EQ(parse(buf, NULL, &r), NW_ECONFIG);
    CHECK(strstr(err, "63") != NULL);
    /* A name of 253 passes, 254 does not; a huge one neither. */
    s = name_of(253, 9);
    CHECK_EQ(parse(s, NULL, &r), 0);
    CHECK_EQ(r.hostlen, 253);
    free(s);
    s = name_of(254, 9);
    CHECK_EQ(parse(s, NULL, &r), NW_ECONFIG);
    CHECK(strstr(err, "253") != NULL);
    free(s);
    s = name_of(100000, 9);
    CHECK_EQ(parse(s, NULL, &r), NW_ECONFIG);
    CHECK(strstr(err, "253") != NULL);
    CHECK(strlen(err) < 200); /* the route is cut in the reason */
    free(s);
    /* "*." + 251 is 253; + 252 is too long. */
    s = name_of(251, 9);
    snprintf(buf, sizeof(buf), "*.%s", s);
    free(s);
    CHECK_EQ(parse(buf, NULL, &r), 0);
    s = name_of(252, 9);
    snprintf(buf, sizeof(buf), "*.%s", s);
    free(s);
    CHECK_EQ(parse(buf, NULL, &r), NW_ECONFIG);
    /* A dot-less name that fits alone but not under the domain. */
    memset(buf, 'a', 63);
    buf[63] = 0;
    s = name_of(200, 9);
    CHECK_EQ(parse(buf, s, &r), NW_ECONFIG);
    CHECK(strstr(err, "--domain longer") != NULL);
    free(s);
    /* Path of 512 passes, 513 does not. */
    memcpy(buf, "a.example.com/", 14);
    memset(buf + 14, 'p', 511);
    buf[14 + 511] = 0;
    CHECK_EQ(parse(buf, NULL, &r), 0);
    CHECK_EQ(r.pathlen, 512);
    buf[14 + 511] = 'p';
    buf[14 + 512] = 0;
    CHECK_EQ(parse(buf, NULL, &r), NW_ECONFIG);
    CHECK(strstr(err, "512") != NULL);
    /* ... but a trailing '/' past 512 is normalised away first. */
    buf[14 + 511] = '/';
    CHECK_EQ(parse(buf, NULL, &r), 0);
}

UNIT_TEST(route_parse_nul_and_control) {
    nw_route_t r;
    CHECK_EQ(parse_n("a.example.com\0.evil.com", 23, NULL, &r), NW_ECONFIG);
    CHECK(strstr(err, "control") != NULL);
    CHECK(strchr(err, '\n') == NULL);
    CHECK_EQ(parse_n("a.example.com/x\0y", 17, NULL, &r), NW_ECONFIG);
    CHECK_EQ(parse("a.example.com\r\nX: y", NULL, &r), NW_ECONFIG);
    CHECK(strstr(err, "\r") == NULL && strstr(err, "\n") == NULL);
    CHECK_EQ(parse("a.example.com/\x7f", NULL, &r), NW_ECONFIG);
    /* A refused route leaves no half-parsed value. */
    CHECK_EQ(r.hostlen, 0);
}

UNIT_TEST(route_default_is_distinct) {
    nw_route_t d, r;
    nw_route_default(&d);
    CHECK(d.is_default);
    CHECK_STR(show(&d), "*");
    CHECK_EQ(parse("a.example.com", NULL, &r), 0);
    CHECK(!r.is_default);
    CHECK(!nw_route_equal(&d, &r));
    nw_route_default(&r);
    CHECK(nw_route_equal(&d, &r));
}

UNIT_TEST(route_list) {
    nw_route_t out[NW_ROUTES_MAX];
    size_t n = 99;
    char buf[NW_ROUTES_MAX * 20 + 40];
    size_t i, len;
    CHECK_EQ(nw_routes_parse_list("a.example.com", NULL, out, NW_ROUTES_MAX, &n, err, sizeof(err)), 0);
    CHECK_EQ(n, 1);
    CHECK_EQ(nw_routes_parse_list(" a.example.com/api , ollama,\t*.b.example.com\t", DOM, out,
                                  NW_ROUTES_MAX, &n, err, sizeof(err)),
             0);
    CHECK_EQ(n, 3);
    CHECK_STR(show(&out[0]), "a.example.com/api");
    CHECK_STR(show(&out[1]), "ollama.tunnel.example.com");
    CHECK_STR(show(&out[2]), "*.b.example.com");
    /* Duplicates, after case and trailing '/', are kept once. */
    CHECK_EQ(nw_routes_parse_list("A.example.com/x/,a.example.com/x,a.example.com", NULL, out,
                                  NW_ROUTES_MAX, &n, err, sizeof(err)),
             0);
    CHECK_EQ(n, 2);
    /* One bad route refuses the list, naming that route. */
    CHECK_EQ(nw_routes_parse_list("a.example.com,b_.example.com,c.example.com", NULL, out,
                                  NW_ROUTES_MAX, &n, err, sizeof(err)),
             NW_ECONFIG);
    CHECK(strstr(err, "\"b_.example.com\"") != NULL);
    CHECK_EQ(nw_routes_parse_list("a.example.com,ollama", NULL, out, NW_ROUTES_MAX, &n, err,
                                  sizeof(err)),
             NW_ECONFIG);
    CHECK(strstr(err, "\"ollama\"") && strstr(err, "needs --domain"));
    CHECK_EQ(nw_routes_parse_list("", NULL, out, NW_ROUTES_MAX, &n, err, sizeof(err)), NW_ECONFIG);
    CHECK(strstr(err, "no routes") != NULL);
    CHECK_EQ(nw_routes_parse_list("a.example.com,", NULL, out, NW_ROUTES_MAX, &n, err, sizeof(err)),
             NW_ECONFIG);
    CHECK(strstr(err, "empty route") != NULL);
    CHECK_EQ(nw_routes_parse_list("a.example.com,,b.example.com", NULL, out, NW_ROUTES_MAX, &n,
                                  err, sizeof(err)),
             NW_ECONFIG);
    CHECK_EQ(nw_routes_parse_list(" , ", NULL, out, NW_ROUTES_MAX, &n, err, sizeof(err)),
             NW_ECONFIG);
    /* The cap: 64 distinct routes pass, 65 do not. */
    len = 0;
    for (i = 0; i < NW_ROUTES_MAX + 1; i++)
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%sh%zu.example.com", i ? "," : "", i);
    CHECK_EQ(nw_routes_parse_list(buf, NULL, out, NW_ROUTES_MAX, &n, err, sizeof(err)), NW_ECONFIG);
    CHECK(strstr(err, "too many") && strstr(err, "h64.example.com"));
    *strrchr(buf, ',') = 0;
    CHECK_EQ(nw_routes_parse_list(buf, NULL, out, NW_ROUTES_MAX, &n, err, sizeof(err)), 0);
    CHECK_EQ(n, NW_ROUTES_MAX);
}

typedef struct {
    const char *in;
    const char *out; /* NULL: no DNS name */
} hcase_t;

UNIT_TEST(request_host) {
    static const hcase_t c[] = {
        {"a.example.com", "a.example.com"},
        {"A.EXAMPLE.com", "a.example.com"},
        {"a.example.com:8080", "a.example.com"},
        {"a.example.com:", "a.example.com"},
        {"a.example.com.", "a.example.com"},
        {"a.example.com.:443", "a.example.com"},
        {"user:pw@a.example.com:80", "a.example.com"},
        {"localhost", "localhost"},
        {"a.example.com:80x", NULL},
        {"a.example.com:-1", NULL},
        {"[::1]", NULL},
        {"[::1]:8080", NULL},
        {"[a.example.com]:80", NULL},
        {"::1", NULL},
        {"", NULL},
        {":80", NULL},
        {".", NULL},
        {"a..example.com", NULL},
        {"a.example.com..", NULL},
        {"a_b.example.com", NULL},
        {"a%2eexample.com", NULL},
        {"x.a.example.com%00", NULL},
        {"a.example.com\r\n", NULL},
        {"a b.example.com", NULL},
    };
    char out[NW_ROUTE_HOST_MAX + 1], *big;
    size_t i;
    int bad = 0;
    for (i = 0; i < NW_ARRAY_LEN(c); i++) {
        size_t n = strlen(c[i].in);
        char *p = malloc(n ? n : 1);
        int rc;
        memcpy(p, c[i].in, n);
        rc = nw_route_req_host(p, n, out);
        free(p);
        if (c[i].out ? (rc < 0 || strcmp(out, c[i].out) != 0 || (size_t)rc != strlen(out))
                     : rc != -1) {
            fprintf(stderr, "  %-26s -> %d \"%s\"\n", c[i].in, rc, rc >= 0 ? out : "");
            bad = 1;
        }
    }
    CHECK_EQ(bad, 0);
    CHECK_EQ(nw_route_req_host("a.example.com\0.x", 16, out), -1);
    big = name_of(254, 9);
    CHECK_EQ(nw_route_req_host(big, 254, out), -1);
    CHECK_EQ(nw_route_req_host(big, 253, out), 253);
    free(big);
    big = name_of(100000, 9);
    CHECK_EQ(nw_route_req_host(big, 100000, out), -1);
    free(big);
}

/* ---- the table ---- */

static nw_route_t R(const char *s) {
    nw_route_t r;
    if (parse(s, DOM, &r) != 0) {
        fprintf(stderr, "bad test route %s: %s\n", s, err);
        abort();
    }
    return r;
}

static int o[8]; /* owners: &o[i] */

/* Look up host and path (exact-size heap copies) and return the winner's
 * formatted route, "404" for no service. */
static const char *look(const nw_routes_t *t, const char *host, const char *path) {
    size_t hl = strlen(host), pl = strlen(path);
    char *h = malloc(hl ? hl : 1), *p = malloc(pl ? pl : 1);
    nw_route_hit_t hit;
    memcpy(h, host, hl);
    memcpy(p, path, pl);
    hit = nw_routes_lookup(t, h, hl, p, pl);
    free(h);
    free(p);
    if (!hit.route)
        return "404";
    if (!hit.route->is_default) {
        char name[NW_ROUTE_HOST_MAX + 1];
        int nl = nw_route_req_host(host, hl, name);
        if (!nw_route_matches(hit.route, name, nl, path, pl))
            return "MISMATCH"; /* the winner must match by the rules */
    }
    return show(hit.route);
}

typedef struct {
    const char *host, *path, *want;
} lcase_t;

static int run_lcases(const nw_routes_t *t, const lcase_t *c, size_t n) {
    size_t i;
    int bad = 0;
    for (i = 0; i < n; i++) {
        const char *got = look(t, c[i].host, c[i].path);
        if (strcmp(got, c[i].want) != 0) {
            fprintf(stderr, "  %s %s -> %s, want %s\n", c[i].host, c[i].path, got, c[i].want);
            bad = 1;
        }
    }
    return bad;
}

UNIT_TEST(lookup_precedence) {
    static const char *routes[] = {
        "a.example.com",      "a.example.com/api", "a.example.com/api/v2", "*.example.com",
        "*.b.example.com",    "*.b.example.com/x", "c.b.example.com/y",   "ollama",
        "*.example.com/deep",
    };
    static const lcase_t c[] = {
        /* exact host, longest path at a segment boundary */
        {"a.example.com", "/", "a.example.com"},
        {"a.example.com", "", "a.example.com"},
        {"a.example.com", "/api", "a.example.com/api"},
        {"a.example.com", "/api/", "a.example.com/api"},
        {"a.example.com", "/api/x", "a.example.com/api"},
        {"a.example.com", "/api?q=1", "a.example.com/api"},
        {"a.example.com", "/apix", "a.example.com"},
        {"a.example.com", "/api/v2", "a.example.com/api/v2"},
        {"a.example.com", "/api/v2/m?x", "a.example.com/api/v2"},
        {"a.example.com", "/api/v22", "a.example.com/api"},
        {"a.example.com", "/API", "a.example.com"},
        /* exact host beats a wildcard, even one with a path */
        {"a.example.com", "/deep", "a.example.com"},
        /* case, port, trailing dot in the request's host */
        {"A.Example.COM:8443", "/api/x", "a.example.com/api"},
        {"a.example.com.", "/", "a.example.com"},
        /* wildcard: at least one more label */
        {"z.example.com", "/", "*.example.com"},
        {"z.y.example.com", "/", "*.example.com"},
        {"example.com", "/", "404"},
        {"xexample.com", "/", "404"},
        {"z.example.com", "/deep/er", "*.example.com/deep"},
        {"z.example.com", "/deeper", "*.example.com"},
        /* a longer wildcard beats a shorter one, whatever the path */
        {"q.b.example.com", "/deep", "*.b.example.com"},
        {"q.b.example.com", "/x/1", "*.b.example.com/x"},
        {"b.example.com", "/x", "*.example.com"},
        /* exact host with a path; else the wildcard for that name */
        {"c.b.example.com", "/y", "c.b.example.com/y"},
        {"c.b.example.com", "/x", "*.b.example.com/x"},
        {"c.b.example.com", "/", "*.b.example.com"},
        /* dot-less under the domain */
        {"OLLAMA.tunnel.example.com", "/api/tags", "ollama.tunnel.example.com"},
        {"ollama", "/", "404"},
        /* unclaimed, and hosts that are no DNS name */
        {"other.org", "/", "404"},
        {"[::1]:80", "/", "404"},
        {"127.0.0.1", "/", "404"},
        {"", "/", "404"},
        {"x%2e.example.com", "/", "404"},
        {"evil_.example.com", "/", "404"},
        {"a.example.com.evil.org", "/", "404"},
    };
    nw_routes_t *t = nw_routes_new();
    size_t i;
    int bad;
    for (i = 0; i < NW_ARRAY_LEN(routes); i++) {
        nw_route_t r = R(routes[i]);
        CHECK_EQ(nw_routes_add(t, &r, &o[0]), 0);
    }
    bad = run_lcases(t, c, NW_ARRAY_LEN(c));
    /* The same table filled in reverse order gives the same answers. */
    nw_routes_free(t);
    t = nw_routes_new();
    for (i = NW_ARRAY_LEN(routes); i-- > 0;) {
        nw_route_t r = R(routes[i]);
        CHECK_EQ(nw_routes_add(t, &r, &o[0]), 0);
    }
    bad |= run_lcases(t, c, NW_ARRAY_LEN(c));
    nw_routes_free(t);
    CHECK_EQ(bad, 0);
}

UNIT_TEST(lookup_default_route) {
    static const lcase_t c[] = {
        {"a.example.com", "/api", "a.example.com/api"},
        {"a.example.com", "/", "*"},
        {"other.org", "/", "*"},
        {"[::1]:80", "/", "*"},
        {"", "", "*"},
        {"a.example.com", "*", "*"},
    };
    nw_routes_t *t = nw_routes_new();
    nw_route_t d, api = R("a.example.com/api");
    nw_route_hit_t h;
    nw_route_default(&d);
    CHECK_EQ(look(t, "a.example.com", "/")[0], '4'); /* empty table: no service */
    CHECK_EQ(nw_routes_add(t, &api, &o[1]), 0);
    CHECK_EQ(nw_routes_add(t, &d, &o[2]), 0);
    CHECK_EQ(nw_routes_add(t, &d, &o[3]), 0);
    CHECK_EQ(run_lcases(t, c, NW_ARRAY_LEN(c)), 0);
    h = nw_routes_lookup(t, "x.org", 5, "/", 1);
    CHECK(h.route && h.route->is_default);
    CHECK_EQ(h.nowners, 2);
    CHECK(h.owners[0] == &o[2] && h.owners[1] == &o[3]);
    nw_routes_free(t);
}

UNIT_TEST(table_owners_and_hold) {
    nw_routes_t *t = nw_routes_new();
    nw_route_t a = R("a.example.com/api"), a2 = R("A.example.com/api/"), w = R("*.example.com");
    nw_route_hit_t h;
    CHECK_EQ(nw_routes_add(t, &a, &o[0]), 0);
    CHECK_EQ(nw_routes_add(t, &a2, &o[1]), 0); /* the same route */
    CHECK_EQ(nw_routes_add(t, &a, &o[0]), 0);  /* no duplicate owner */
    CHECK_EQ(nw_routes_add(t, &w, &o[2]), 0);
    CHECK_EQ(nw_routes_count(t), 2);
    h = nw_routes_lookup(t, "a.example.com", 13, "/api/x", 6);
    CHECK(h.route && nw_route_equal(h.route, &a));
    CHECK_EQ(h.nowners, 2);
    CHECK(h.owners[0] == &o[0] && h.owners[1] == &o[1]);
    /* Removing keeps the others' order; a stranger is not there. */
    CHECK_EQ(nw_routes_remove(t, &a, &o[5]), -1);
    CHECK_EQ(nw_routes_remove(t, &w, &o[0]), -1);
    CHECK_EQ(nw_routes_remove(t, &a, &o[0]), 1);
    h = nw_routes_get(t, &a);
    CHECK(h.nowners == 1 && h.owners[0] == &o[1]);
    /* The last owner gone: the route is held (found, no owners), not
     * given to the wildcard or the default route. */
    CHECK_EQ(nw_routes_remove(t, &a, &o[1]), 0);
    h = nw_routes_lookup(t, "a.example.com", 13, "/api", 4);
    CHECK(h.route && nw_route_equal(h.route, &a));
    CHECK_EQ(h.nowners, 0);
    /* A held route refuses drop while owned, drops when not. */
    CHECK_EQ(nw_routes_drop(t, &w), 0);
    CHECK_EQ(nw_routes_drop(t, &a), 1);
    CHECK_EQ(nw_routes_drop(t, &a), 0);
    CHECK_EQ(nw_routes_remove(t, &a, &o[1]), -1);
    CHECK_EQ(nw_routes_count(t), 1);
    CHECK_STR(look(t, "a.example.com", "/api"), "*.example.com");
    CHECK(nw_routes_get(t, &a).route == NULL);
    nw_routes_free(t);
}

UNIT_TEST(table_many_routes) {
    /* Many routes (the entry array grows) and many owners on one. */
    nw_routes_t *t = nw_routes_new();
    char buf[64];
    size_t i;
    int owners[100];
    nw_route_t r;
    for (i = 0; i < 300; i++) {
        snprintf(buf, sizeof(buf), "h%zu.example.com/p%zu", i % 50, i);
        r = R(buf);
        CHECK_EQ(nw_routes_add(t, &r, &owners[i % 100]), 0);
    }
    r = R("h7.example.com/p7");
    for (i = 0; i < 100; i++)
        CHECK_EQ(nw_routes_add(t, &r, &owners[i]), 0);
    CHECK_EQ(nw_routes_count(t), 300);
    CHECK_STR(look(t, "h7.example.com", "/p7/x"), "h7.example.com/p7");
    CHECK_EQ(nw_routes_lookup(t, "h7.example.com", 14, "/p7", 3).nowners, 100);
    CHECK_STR(look(t, "h7.example.com", "/p8"), "404");
    CHECK_STR(look(t, "h8.example.com", "/p58"), "h8.example.com/p58");
    nw_routes_free(t);
    nw_routes_free(NULL);
}

/* ---- token patterns ---- */

typedef struct {
    const char *pat, *route; /* route "" is the default route */
    int grants;
} gcase_t;

UNIT_TEST(pattern_grants) {
    static const gcase_t c[] = {
        {"*", "", 1},
        {"*", "a.example.com/api", 1},
        {"*", "*.example.com", 1},
        {"*.alice.example.com", "x.alice.example.com", 1},
        {"*.alice.example.com", "x.alice.example.com/api/v1", 1},
        {"*.alice.example.com", "y.x.alice.example.com", 1},
        {"*.alice.example.com", "*.alice.example.com", 1},
        {"*.alice.example.com", "*.x.alice.example.com/p", 1},
        {"*.Alice.Example.com", "X.alice.example.com", 1},
        {"*.alice.example.com", "alice.example.com", 0},
        {"*.alice.example.com", "xalice.example.com", 0},
        {"*.alice.example.com", "x.bob.example.com", 0},
        {"*.alice.example.com", "*.example.com", 0},
        {"*.alice.example.com", "", 0},
        {"alice.example.com", "alice.example.com", 1},
        {"alice.example.com", "alice.example.com/any/path", 1},
        {"alice.example.com", "x.alice.example.com", 0},
        {"alice.example.com", "*.alice.example.com", 0},
        {"alice.example.com", "", 0},
        {"alice.example.com", "bob.example.com", 0},
        {"ollama", "ollama", 1},
        {"*.ollama", "x.ollama.tunnel.example.com/api", 1},
        {"*.ollama", "x.ollama/api", 0},
    };
    size_t i;
    int bad = 0;
    for (i = 0; i < NW_ARRAY_LEN(c); i++) {
        nw_route_pat_t p;
        nw_route_t r;
        size_t n = strlen(c[i].pat);
        char *s = malloc(n);
        int rc;
        memcpy(s, c[i].pat, n);
        rc = nw_route_pat_parse(s, n, DOM, &p, err, sizeof(err));
        free(s);
        if (*c[i].route)
            r = R(c[i].route);
        else
            nw_route_default(&r);
        if (rc != 0 || nw_route_pat_grants(&p, &r) != c[i].grants) {
            fprintf(stderr, "  %s grants %s: rc %d %s\n", c[i].pat, c[i].route, rc, err);
            bad = 1;
        }
    }
    CHECK_EQ(bad, 0);
}

UNIT_TEST(pattern_refused) {
    static const char *bad_pats[] = {
        "",      "**",       "*.",     "a.*.example.com", "a.example.com/api", "a..b.com",
        "a b.c", "x.com:80", "[::1]",  "a_b.example.com", "*.*.example.com",   "a.b.com\r",
        "%2a",   "-a.b.com", "ollama",
    };
    nw_route_pat_t p;
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(bad_pats); i++) {
        size_t n = strlen(bad_pats[i]);
        int rc = nw_route_pat_parse(bad_pats[i], n, NULL, &p, err, sizeof(err));
        if (rc != NW_ECONFIG || !strstr(err, "pattern \"")) {
            fprintf(stderr, "  pattern \"%s\" -> %d\n", bad_pats[i], rc);
            CHECK(0);
        }
        CHECK(!p.any);
    }
    CHECK_EQ(nw_route_pat_parse("a.example.com\0*", 15, NULL, &p, err, sizeof(err)), NW_ECONFIG);
    CHECK_EQ(nw_route_pat_parse("ollama", 6, NULL, &p, err, sizeof(err)), NW_ECONFIG);
    CHECK(strstr(err, "needs --domain") != NULL);
}

UNIT_MAIN(UNIT_CASE(route_parse_valid), UNIT_CASE(route_parse_refused),
          UNIT_CASE(route_parse_lengths), UNIT_CASE(route_parse_nul_and_control),
          UNIT_CASE(route_default_is_distinct), UNIT_CASE(route_list), UNIT_CASE(request_host),
          UNIT_CASE(lookup_precedence), UNIT_CASE(lookup_default_route),
          UNIT_CASE(table_owners_and_hold), UNIT_CASE(table_many_routes),
          UNIT_CASE(pattern_grants), UNIT_CASE(pattern_refused))
