/* test_fwd.c: the forwarded head (src/serve/fwd.c): which fields go on,
 * the X-Forwarded-* serve writes with and without --trust-proxy, the
 * Upgrade of an upgrade request, and the target in origin form. */
#include <string.h>

#include "fwd.h"
#include "unit.h"

static nw_hfields_t hf;
static nw_fwd_head_t fh;

static void head(const char *target, const char *const *fields) {
    size_t i;
    nw_hf_init(&hf, 65536);
    nw_hf_first(&hf, target, strlen(target));
    for (i = 0; fields[i]; i += 2) {
        nw_hf_name(&hf, fields[i], strlen(fields[i]));
        nw_hf_value(&hf, fields[i + 1], strlen(fields[i + 1]));
    }
}

/* The value of the forwarded field name, or NULL; count gets how many. */
static const char *fwd_value(const char *name, int *count) {
    static char v[256];
    const char *got = NULL;
    size_t i;
    *count = 0;
    for (i = 0; i < fh.n; i++)
        if (nw_strieq(fh.hdrs[i].name, fh.hdrs[i].name_len, name)) {
            (*count)++;
            memcpy(v, fh.hdrs[i].value, fh.hdrs[i].value_len);
            v[fh.hdrs[i].value_len] = 0;
            got = v;
        }
    return got;
}

static int has(const char *name) {
    int n;
    fwd_value(name, &n);
    return n;
}

static int is(const char *name, const char *want) {
    int n;
    const char *v = fwd_value(name, &n);
    return n == 1 && strcmp(v, want) == 0;
}

static const char *const fields[] = {"Host", "example.com", "X-Forwarded-For", "6.6.6.6",
    "X-Forwarded-Proto", "https", "X-Forwarded-Host", "evil", "X-Real-IP", "6.6.6.6",
    "X-Auth-Token", "t", "Expect", "100-continue", "Connection", "close, X-Drop", "X-Drop", "1",
    "Keep-Alive", "5", "Accept", "*/*", NULL};

UNIT_TEST(untrusted) {
    nw_fwd_in_t in = {"10.0.0.1", 8, 0, 1, 0, 0, 0, 0, NULL, 0};
    head("/a?b", fields);
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK(fh.tlen == 4 && memcmp(fh.target, "/a?b", 4) == 0);
    CHECK(is("X-Forwarded-For", "10.0.0.1"));
    CHECK(is("X-Forwarded-Proto", "http"));
    CHECK(is("X-Forwarded-Host", "example.com"));
    CHECK(is("Host", "example.com") && is("Accept", "*/*"));
    CHECK(!has("X-Real-IP") && !has("X-Auth-Token") && !has("Expect") && !has("Connection") &&
          !has("X-Drop") && !has("Keep-Alive") && !has("Upgrade"));
    nw_fwd_free(&fh);
    nw_hf_free(&hf);
}

UNIT_TEST(trusted_tls) {
    nw_fwd_in_t in = {"10.0.0.1", 8, 1, 0, 1, 0, 0, 0, NULL, 0};
    head("http://example.com?q", fields);
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK(fh.tlen == 3 && memcmp(fh.target, "/?q", 3) == 0);
    CHECK(is("X-Forwarded-For", "6.6.6.6, 10.0.0.1"));
    CHECK(is("X-Forwarded-Proto", "https"));
    CHECK(is("X-Forwarded-Host", "evil"));
    CHECK(is("X-Real-IP", "6.6.6.6") && is("X-Auth-Token", "t"));
    CHECK(!has("Expect"));
    nw_fwd_free(&fh);
    nw_hf_free(&hf);
}

UNIT_TEST(upgrade_and_refusals) {
    static const char *const up[] = {"Host", "h", "Connection", "Upgrade", "Upgrade",
                                     "websocket", NULL};
    nw_fwd_in_t in = {"::1", 3, 0, 0, 1, 1, 0, 0, NULL, 0};
    head("/ws", up);
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK(is("Connection", "Upgrade") && is("Upgrade", "websocket"));
    CHECK(is("X-Forwarded-Proto", "https") && is("X-Forwarded-For", "::1"));
    nw_fwd_free(&fh);
    in.upgrade = 0;
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK(!has("Connection") && !has("Upgrade"));
    nw_fwd_free(&fh);
    nw_hf_free(&hf);
    head("example.com:443", up); /* authority form: never forwarded */
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), -1);
    nw_fwd_free(&fh);
    nw_hf_free(&hf);
}

/* The Authorization field that carried AUTH_TOKEN is serve's: that one
 * field is dropped, another Authorization field goes on. */
UNIT_TEST(auth_field) {
    static const char *const au[] = {"Host", "h", "Authorization", "Bearer svc",
                                     "Authorization", "Basic dTpTM2NyZXQ=", "Accept", "*/*", NULL};
    nw_fwd_in_t in = {"10.0.0.1", 8, 0, 1, 0, 0, 0, 0, NULL, 0};
    head("/", au);
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK_EQ(has("Authorization"), 2);
    nw_fwd_free(&fh);
    in.auth_field = 2; /* the second field, index 1: "Bearer svc" */
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK(is("Authorization", "Basic dTpTM2NyZXQ=") && is("Accept", "*/*"));
    nw_fwd_free(&fh);
    in.auth_field = 3;
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK(is("Authorization", "Bearer svc") && is("Host", "h"));
    nw_fwd_free(&fh);
    in.auth_field = 99; /* out of range: nothing dropped */
    CHECK_EQ(nw_fwd_build(&hf, &in, &fh), 0);
    CHECK_EQ(has("Authorization"), 2);
    nw_fwd_free(&fh);
    nw_hf_free(&hf);
}

UNIT_MAIN(UNIT_CASE(untrusted), UNIT_CASE(trusted_tls), UNIT_CASE(upgrade_and_refusals),
          UNIT_CASE(auth_field))
