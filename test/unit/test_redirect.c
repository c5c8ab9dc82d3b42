/* test_redirect.c: the agent's redirect rewriting (redirect.c). */
#include "redirect.h"
#include "unit.h"

/* LOCAL_URL http://127.0.0.1:8080; the public origin https://pub.example. */
static const nw_redirect_t base = {0, "127.0.0.1", 8080, NULL, 0, "https://pub.example", 19};

/* The value after rewriting v (kind 1 Location, 2 Refresh) with rd. */
static const char *rw(const nw_redirect_t *rd, int kind, const char *v) {
    static nw_sbuf_t out;
    static char keep[512];
    int rc;
    out.len = 0;
    rc = nw_redirect_rewrite(rd, kind, v, strlen(v), &out);
    if (rc < 0)
        return "(error)";
    if (rc == 0)
        return v;
    snprintf(keep, sizeof(keep), "%.*s", (int)out.len, out.p);
    return keep;
}

UNIT_TEST(fields) {
    CHECK_EQ(nw_redirect_field("Location", 8), 1);
    CHECK_EQ(nw_redirect_field("content-LOCATION", 16), 1);
    CHECK_EQ(nw_redirect_field("Refresh", 7), 2);
    CHECK_EQ(nw_redirect_field("Link", 4), 0);
    CHECK_EQ(nw_redirect_field("Locations", 9), 0);
}

UNIT_TEST(local_origin) {
    CHECK_STR(rw(&base, 1, "http://127.0.0.1:8080/a?b#c"), "https://pub.example/a?b#c");
    CHECK_STR(rw(&base, 1, "HTTP://127.0.0.1:8080"), "https://pub.example");
    CHECK_STR(rw(&base, 1, "http://127.0.0.1:8080?q"), "https://pub.example?q");
    CHECK_STR(rw(&base, 1, "http://127.0.0.1:8080#f"), "https://pub.example#f");
    /* foreign: port, scheme, host, user info, other schemes */
    CHECK_STR(rw(&base, 1, "http://127.0.0.1:8081/a"), "http://127.0.0.1:8081/a");
    CHECK_STR(rw(&base, 1, "http://127.0.0.1/a"), "http://127.0.0.1/a");
    CHECK_STR(rw(&base, 1, "https://127.0.0.1:8080/a"), "https://127.0.0.1:8080/a");
    CHECK_STR(rw(&base, 1, "http://127.0.0.2:8080/a"), "http://127.0.0.2:8080/a");
    CHECK_STR(rw(&base, 1, "http://x@127.0.0.1:8080/a"), "http://x@127.0.0.1:8080/a");
    CHECK_STR(rw(&base, 1, "ws://127.0.0.1:8080/a"), "ws://127.0.0.1:8080/a");
    CHECK_STR(rw(&base, 1, "http://127.0.0.1:8080x/a"), "http://127.0.0.1:8080x/a");
    CHECK_STR(rw(&base, 1, "http://127.0.0.1:99999/a"), "http://127.0.0.1:99999/a");
    /* relative */
    CHECK_STR(rw(&base, 1, "/a"), "/a");
    CHECK_STR(rw(&base, 1, "a:b/c"), "a:b/c");
    CHECK_STR(rw(&base, 1, "//127.0.0.1:8080/a"), "//127.0.0.1:8080/a");
    CHECK_STR(rw(&base, 1, "?x=http://127.0.0.1:8080/"), "?x=http://127.0.0.1:8080/");
    CHECK_STR(rw(&base, 1, ""), "");
}

UNIT_TEST(default_ports_and_case) {
    nw_redirect_t rd = {1, "LocalHost", 443, NULL, 0, "http://p", 8};
    nw_redirect_t v6 = {0, "::1", 80, NULL, 0, "http://p", 8};
    CHECK_STR(rw(&rd, 1, "https://localhost/x"), "http://p/x");
    CHECK_STR(rw(&rd, 1, "HTTPS://LOCALHOST:443/x"), "http://p/x");
    CHECK_STR(rw(&rd, 1, "https://localhost:/x"), "http://p/x");
    CHECK_STR(rw(&rd, 1, "http://localhost:443/x"), "http://localhost:443/x");
    CHECK_STR(rw(&v6, 1, "http://[::1]/x"), "http://p/x");
    CHECK_STR(rw(&v6, 1, "http://[::1]:80"), "http://p");
    CHECK_STR(rw(&v6, 1, "http://[::1]:81/"), "http://[::1]:81/");
}

UNIT_TEST(sent_host) {
    nw_redirect_t rd = base;
    rd.sent = "App.Example:80";
    rd.sent_len = strlen(rd.sent);
    CHECK_STR(rw(&rd, 1, "http://app.example/x"), "https://pub.example/x");
    CHECK_STR(rw(&rd, 1, "https://app.example:80/x"), "https://pub.example/x");
    CHECK_STR(rw(&rd, 1, "https://app.example/x"), "https://app.example/x"); /* :443 */
    CHECK_STR(rw(&rd, 1, "http://127.0.0.1:8080/y"), "https://pub.example/y");
    rd.sent = "app.example";
    rd.sent_len = strlen(rd.sent);
    CHECK_STR(rw(&rd, 1, "https://app.example/x"), "https://pub.example/x");
    CHECK_STR(rw(&rd, 1, "https://app.example:443/x"), "https://pub.example/x");
    CHECK_STR(rw(&rd, 1, "https://app.example:8443/x"), "https://app.example:8443/x");
}

UNIT_TEST(refresh) {
    CHECK_STR(rw(&base, 2, "5; url=http://127.0.0.1:8080/n"), "5; url=https://pub.example/n");
    CHECK_STR(rw(&base, 2, "5;URL = http://127.0.0.1:8080/n "), "5;URL = https://pub.example/n ");
    CHECK_STR(rw(&base, 2, "0; url='http://127.0.0.1:8080/n'"), "0; url='https://pub.example/n'");
    CHECK_STR(rw(&base, 2, "0, url=\"http://127.0.0.1:8080\""), "0, url=\"https://pub.example\"");
    CHECK_STR(rw(&base, 2, "5"), "5");
    CHECK_STR(rw(&base, 2, "5; url=/rel"), "5; url=/rel");
    CHECK_STR(rw(&base, 2, "5; http://127.0.0.1:8080/n"), "5; http://127.0.0.1:8080/n");
    CHECK_STR(rw(&base, 2, "5; url=http://other/n"), "5; url=http://other/n");
    CHECK_STR(rw(&base, 2, "5; urx=http://127.0.0.1:8080/"), "5; urx=http://127.0.0.1:8080/");
}

UNIT_TEST(no_public_origin) {
    nw_redirect_t rd = base;
    rd.pub_len = 0;
    CHECK_STR(rw(&rd, 1, "http://127.0.0.1:8080/a"), "http://127.0.0.1:8080/a");
}

static int on(const char *o, int tls, const char *h) {
    return nw_redirect_origin_is(o, strlen(o), 0, tls, h, strlen(h));
}

static int ref(const char *u, int tls, const char *h) {
    return nw_redirect_origin_is(u, strlen(u), 1, tls, h, strlen(h));
}

UNIT_TEST(origin_is) {
    CHECK_EQ(on("http://pub.example:8000", 0, "pub.example:8000"), 1);
    CHECK_EQ(on("HTTPS://Pub.Example", 1, "pub.example"), 1);
    CHECK_EQ(on("https://pub.example", 1, "pub.example:443"), 1);
    CHECK_EQ(on("http://pub.example:80", 0, "pub.example"), 1);
    CHECK_EQ(on("http://[::1]:8000", 0, "[::1]:8000"), 1);
    CHECK_EQ(on("https://pub.example", 0, "pub.example"), 0);
    CHECK_EQ(on("http://pub.example", 1, "pub.example"), 0);
    CHECK_EQ(on("https://pub.example", 1, "pub.example:80"), 0);
    CHECK_EQ(on("http://pub.example:8000", 0, "pub.example:8001"), 0);
    CHECK_EQ(on("http://other.example:8000", 0, "pub.example:8000"), 0);
    CHECK_EQ(on("null", 0, "pub.example"), 0);
    CHECK_EQ(on("ws://pub.example", 0, "pub.example"), 0);
    CHECK_EQ(on("http://pub.example/", 0, "pub.example"), 0);
    CHECK_EQ(on("http://u@pub.example", 0, "pub.example"), 0);
    CHECK_EQ(on("http://", 0, "pub.example"), 0);
    CHECK_EQ(on("http://pub.example", 0, ""), 0);
    /* a Referer: the URL's origin */
    CHECK_EQ(ref("http://pub.example:8000/tree?x#y", 0, "pub.example:8000"), 1);
    CHECK_EQ(ref("https://pub.example/", 1, "pub.example"), 1);
    CHECK_EQ(ref("https://pub.example?q", 1, "pub.example"), 1);
    CHECK_EQ(ref("https://pub.example", 1, "pub.example"), 1);
    CHECK_EQ(ref("http://pub.example/", 1, "pub.example"), 0);
    CHECK_EQ(ref("http://other.example/pub.example", 0, "pub.example"), 0);
    CHECK_EQ(ref("http://u@pub.example/", 0, "pub.example"), 0);
    CHECK_EQ(ref("/tree", 0, "pub.example"), 0);
    CHECK_EQ(ref("http:///tree", 0, "pub.example"), 0);
}

UNIT_MAIN(UNIT_CASE(fields), UNIT_CASE(local_origin), UNIT_CASE(default_ports_and_case),
          UNIT_CASE(sent_host), UNIT_CASE(refresh), UNIT_CASE(no_public_origin),
          UNIT_CASE(origin_is))
