/* test_path.c: nw_path_normalize. Fixed cases for every rule (each of the
 * AUTH_RULE bypass and base-path escape shapes of issue 9 among them), then
 * a deterministic random script over a small alphabet of path syntax that
 * checks the output's invariants, with every input in a heap block of its
 * exact size so that ASan catches a read past its end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"
#include "unit.h"

static char got[4096];
static size_t got_len;

/* Normalise s from an exact-size heap copy into got; returns the code. */
static int norm_flags(const char *s, int flags) {
    size_t n = strlen(s);
    char *p = malloc(n ? n : 1);
    int rc;
    memcpy(p, s, n);
    rc = nw_path_normalize(p, n, flags, got, n + 2, &got_len);
    free(p);
    return rc;
}

static int norm(const char *s) {
    return norm_flags(s, 0);
}

typedef struct {
    const char *in, *out;
    int rc;
} pcase_t;

static int run_cases_flags(const pcase_t *c, size_t n, int flags) {
    size_t i;
    int bad = 0;
    for (i = 0; i < n; i++) {
        int rc = norm_flags(c[i].in, flags);
        if (rc != c[i].rc || (rc >= 0 && (strcmp(got, c[i].out) != 0 || got_len != strlen(got)))) {
            fprintf(stderr, "  %-28s -> rc %d \"%s\", want rc %d \"%s\"\n", c[i].in, rc,
                    rc >= 0 ? got : "", c[i].rc, c[i].out);
            bad = 1;
        }
    }
    return bad;
}

static int run_cases(const pcase_t *c, size_t n) {
    return run_cases_flags(c, n, 0);
}

#define OK NW_PATH_OK
#define UP NW_PATH_CLIMBS

UNIT_TEST(plain_paths_unchanged) {
    static const pcase_t c[] = {
        {"/", "/", OK},
        {"/a", "/a", OK},
        {"/a/b/", "/a/b/", OK},
        {"/a/b.c/d..e/.f/g.", "/a/b.c/d..e/.f/g.", OK},
        {"/...", "/...", OK},
        {"/a?b=/../../x", "/a", OK},
        {"/a%20b%25%00%3F", "/a%20b%25%00%3F", OK}, /* reserved and others stay encoded */
        {"/%zz/%4/%", "/%zz/%4/%", OK},
    };
    CHECK_EQ(run_cases(c, sizeof(c) / sizeof(c[0])), 0);
}

/* Every shape that reached /private without the token in issue 9. */
UNIT_TEST(auth_rule_bypass_shapes) {
    static const pcase_t c[] = {
        {"//private", "/private", OK},
        {"///private", "/private", OK},
        {"/%70rivate", "/private", OK},
        {"/./private", "/private", OK},
        {"/%2e/private", "/private", OK},
        {"/%2E/private", "/private", OK},
        {"/public/../private", "/private", OK},
        {"/public/%2e%2e/private", "/private", OK},
        {"/%2fprivate", "/private", OK},
        {"/x/..%2fprivate", "/private", OK},
        {"/public%2f..%2fprivate", "/private", OK},
        {"http://x//private", "/private", OK},
        {"HTTPS://x:1/./private?q", "/private", OK},
        {"/private;jsessionid=1", "/private", OK},
        {"/public/..;/private", "/private", OK},
        {"/public\\..\\private", "/private", OK},
        {"/public%5c..%5Cprivate", "/private", OK},
        {"/%7e%41%5f%2D", "/~A_-", OK},
    };
    CHECK_EQ(run_cases(c, sizeof(c) / sizeof(c[0])), 0);
}

UNIT_TEST(dot_segments_rfc3986) {
    static const pcase_t c[] = {
        /* RFC 3986 5.2.4's own examples, and the 5.4 results as paths. */
        {"/a/b/c/./../../g", "/a/g", OK},
        {"/b/c/.", "/b/c/", OK},
        {"/b/c/..", "/b/", OK},
        {"/b/c/../", "/b/", OK},
        {"/b/c/./g", "/b/c/g", OK},
        {"/b/c/g/.", "/b/c/g/", OK},
        {"/b/c/g;x=1/./y", "/b/c/g/y", OK},
        {"/b/c/g;x=1/../y", "/b/c/y", OK},
        {"/.", "/", OK},
        {"/./", "/", OK},
        {"/a/..", "/", OK},
        {"/a/../", "/", OK},
    };
    CHECK_EQ(run_cases(c, sizeof(c) / sizeof(c[0])), 0);
}

/* Escapes from LOCAL_URL's base path: every one climbs. */
UNIT_TEST(climbs_above_root) {
    static const pcase_t c[] = {
        {"/..", "/", UP},
        {"/../secret", "/secret", UP},
        {"/%2e%2e/secret", "/secret", UP},
        {"/..%2fsecret", "/secret", UP},
        {"/x/../../secret", "/secret", UP},
        {"/.%2E/secret", "/secret", UP},
        {"//../secret", "/secret", UP},
        {"/..;x/secret", "/secret", UP},
        {"/..\\secret", "/secret", UP},
        {"http://h/../secret", "/secret", UP},
        {"/a/b/../../../c", "/c", UP},
        {"/a/b/../../c", "/c", OK},
    };
    CHECK_EQ(run_cases(c, sizeof(c) / sizeof(c[0])), 0);
}

UNIT_TEST(absolute_form_and_invalid) {
    static const pcase_t c[] = {
        {"http://h", "/", OK},
        {"http://h?q=/..", "/", OK},
        {"http://h:80/a//b", "/a/b", OK},
        {"ws+x.y-z://h/a", "/a", OK},
        {"*", "", NW_PATH_EINVAL},
        {"", "", NW_PATH_EINVAL},
        {"h:443", "", NW_PATH_EINVAL},
        {"http:/x", "", NW_PATH_EINVAL},
        {"1http://h/a", "", NW_PATH_EINVAL},
        {"a", "", NW_PATH_EINVAL},
        {"/a#/../..", "", NW_PATH_EINVAL}, /* no target has a fragment */
        {"/a?q#f", "", NW_PATH_EINVAL},
        {"http://h#/../x", "", NW_PATH_EINVAL},
    };
    CHECK_EQ(run_cases(c, sizeof(c) / sizeof(c[0])), 0);
}

/* Every step but the dot segments: a framework that decodes and routes
 * without resolving ".." reads "/%70rivate/../x" under /private. */
UNIT_TEST(keep_dots) {
    static const pcase_t c[] = {
        {"/%70rivate/../x", "/private/../x", OK},
        {"//private/%2e%2e/x", "/private/../x", OK},
        {"/a/./b/", "/a/./b/", OK},
        {"/../x", "/../x", OK},
        {"/a%2f..%5c.;p/b?q", "/a/.././b", OK},
        {"http://h//a", "/a", OK},
        {"*", "", NW_PATH_EINVAL},
    };
    CHECK_EQ(run_cases_flags(c, sizeof(c) / sizeof(c[0]), NW_PATH_KEEP_DOTS), 0);
}

UNIT_TEST(capacity) {
    size_t n;
    char out[8];
    CHECK_EQ(nw_path_normalize("/abcdef", 7, 0, out, 8, &n), NW_PATH_ENOSPC);
    CHECK_EQ(nw_path_normalize("/abcde", 6, 0, out, 8, &n), NW_PATH_OK);
    CHECK_STR(out, "/abcde");
    CHECK_EQ(nw_path_normalize("http://h", 8, 0, got, 10, &n), NW_PATH_OK);
    CHECK_STR(got, "/");
}

UNIT_TEST(long_path_whole) {
    /* No partial check: a long path is normalised to its end. */
    static char in[3100];
    size_t i;
    for (i = 0; i + 3 < 2990; i += 3)
        memcpy(in + i, "/a/", 3);
    memcpy(in + i, "../../%2e%2e/private", 21);
    CHECK_EQ(norm(in), NW_PATH_OK);
    CHECK(got_len > 9);
    CHECK_STR(got + got_len - 8, "/private");
}

static uint32_t rng_state = 12345;

static uint32_t rng(void) {
    uint32_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return rng_state = x;
}

/* Random targets from path syntax: the output starts with '/', holds no
 * empty, "." or ".." segment, no separator or decodable escape, and
 * normalising it again gives itself. */
UNIT_TEST(random_invariants) {
    static const char *const atoms[] = {"/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c",
                                        "\\", "a", "b", ";p", "?q", "#f", "%", "%4", "%41",
                                        "%00", "%25"};
    char in[64], first[200];
    size_t first_len;
    int k;
    for (k = 0; k < 200000; k++) {
        size_t n = 1, parts = rng() % 12, j;
        int rc;
        in[0] = '/';
        for (j = 0; j < parts; j++) {
            const char *a = atoms[rng() % (sizeof(atoms) / sizeof(atoms[0]))];
            size_t al = strlen(a);
            if (n + al >= sizeof(in))
                break;
            memcpy(in + n, a, al);
            n += al;
        }
        in[n] = 0;
        rc = norm(in);
        if (strchr(in, '#')) {
            CHECK_EQ(rc, NW_PATH_EINVAL);
            continue;
        }
        CHECK(rc == NW_PATH_OK || rc == NW_PATH_CLIMBS);
        CHECK(got[0] == '/');
        CHECK(got_len <= n);
        CHECK(strstr(got, "//") == NULL);
        CHECK(strstr(got, "/./") == NULL && strstr(got, "/../") == NULL);
        CHECK(strchr(got, '\\') == NULL && strchr(got, '?') == NULL && strchr(got, ';') == NULL);
        CHECK(strstr(got, "%2e") == NULL && strstr(got, "%2f") == NULL &&
              strstr(got, "%2E") == NULL && strstr(got, "%2F") == NULL);
        CHECK(!(got_len >= 2 && strcmp(got + got_len - 2, "/.") == 0));
        CHECK(!(got_len >= 3 && strcmp(got + got_len - 3, "/..") == 0));
        memcpy(first, got, got_len + 1);
        first_len = got_len;
        /* "%" + "41" can meet across atoms only in the first pass. */
        if (strstr(first, "%4") != NULL)
            continue;
        CHECK_EQ(norm(first), NW_PATH_OK);
        CHECK_EQ(got_len, first_len);
        CHECK_STR(got, first);
        /* Keeping the dots: the same, but ".." can stay and nothing climbs. */
        CHECK_EQ(norm_flags(in, NW_PATH_KEEP_DOTS), NW_PATH_OK);
        CHECK(got[0] == '/' && got_len <= n && strstr(got, "//") == NULL);
        CHECK(strchr(got, '\\') == NULL && strchr(got, ';') == NULL);
    }
}

UNIT_TEST(query_param) {
    char v[16];
    CHECK_EQ(nw_query_param("host=a.example.com&path=/x", "host", v, sizeof(v)), 13);
    CHECK_STR(v, "a.example.com");
    CHECK_EQ(nw_query_param("host=a&path=%2Fapi%2fv1+x", "path", v, sizeof(v)), 9);
    CHECK_STR(v, "/api/v1 x");
    CHECK_EQ(nw_query_param("verbose", "verbose", v, sizeof(v)), 0);
    CHECK_STR(v, "");
    CHECK_EQ(nw_query_param("a=1&verbose&b", "verbose", v, sizeof(v)), 0);
    CHECK_EQ(nw_query_param("hostx=1&xhost=2", "host", v, sizeof(v)), -1); /* whole keys only */
    CHECK_EQ(nw_query_param("host=1&host=2", "host", v, sizeof(v)), 1);      /* the first wins */
    CHECK_STR(v, "1");
    CHECK_EQ(nw_query_param("", "host", v, sizeof(v)), -1);
    CHECK_EQ(nw_query_param("host=a%0d%0aX", "host", v, sizeof(v)), -2);    /* no control bytes */
    CHECK_EQ(nw_query_param("host=%zz%4", "host", v, sizeof(v)), 5);        /* bad escapes as sent */
    CHECK_STR(v, "%zz%4");
    CHECK_EQ(nw_query_param("host=0123456789abcdef", "host", v, sizeof(v)), -2); /* no room */
    CHECK_EQ(nw_query_param("host=0123456789abcde", "host", v, sizeof(v)), 15);
    CHECK_EQ(nw_query_param("host=", "host", v, sizeof(v)), 0);
}

UNIT_MAIN(UNIT_CASE(plain_paths_unchanged), UNIT_CASE(auth_rule_bypass_shapes),
          UNIT_CASE(dot_segments_rfc3986), UNIT_CASE(climbs_above_root),
          UNIT_CASE(absolute_form_and_invalid), UNIT_CASE(keep_dots), UNIT_CASE(capacity), UNIT_CASE(long_path_whole),
          UNIT_CASE(random_invariants), UNIT_CASE(query_param))
