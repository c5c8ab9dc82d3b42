/* test_redirect.c: the agent's URL rewriting (redirect.c): redirects made
 * public, Destination and If made local. */
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

/* ------------------------------------------------------- request side */

/* Public https://pub.example:8443; the service at http://127.0.0.1:8080. */
static const nw_requrl_t req = {1, "pub.example:8443", 16, 0, "127.0.0.1:8080", 14, "", 0};

/* The value after making v (kind 1 Destination, 2 If) local with q. */
static const char *lo(const nw_requrl_t *q, int kind, const char *v) {
    static nw_sbuf_t out;
    static char keep[1024];
    int rc;
    out.len = 0;
    rc = nw_redirect_request(q, kind, v, strlen(v), &out);
    if (rc < 0)
        return "(error)";
    if (rc == 0)
        return out.len ? "(appended on 0)" : v;
    snprintf(keep, sizeof(keep), "%.*s", (int)out.len, out.p);
    return keep;
}

UNIT_TEST(req_fields) {
    CHECK_EQ(nw_redirect_req_field("Destination", 11), 1);
    CHECK_EQ(nw_redirect_req_field("DESTINATION", 11), 1);
    CHECK_EQ(nw_redirect_req_field("If", 2), 2);
    CHECK_EQ(nw_redirect_req_field("if", 2), 2);
    CHECK_EQ(nw_redirect_req_field("If-Match", 8), 0);
    CHECK_EQ(nw_redirect_req_field("Location", 8), 0);
}

UNIT_TEST(destination) {
    CHECK_STR(lo(&req, 1, "https://pub.example:8443/a/b?q=1#f"),
              "http://127.0.0.1:8080/a/b?q=1#f");
    CHECK_STR(lo(&req, 1, "HTTPS://PUB.Example:8443/%20x"), "http://127.0.0.1:8080/%20x");
    CHECK_STR(lo(&req, 1, "https://pub.example:8443"), "http://127.0.0.1:8080");
    /* another scheme, port, host; user info; other schemes; relative */
    CHECK_STR(lo(&req, 1, "http://pub.example:8443/a"), "http://pub.example:8443/a");
    CHECK_STR(lo(&req, 1, "https://pub.example/a"), "https://pub.example/a");
    CHECK_STR(lo(&req, 1, "https://pub.example:8444/a"), "https://pub.example:8444/a");
    CHECK_STR(lo(&req, 1, "https://other.example:8443/a"), "https://other.example:8443/a");
    CHECK_STR(lo(&req, 1, "https://u@pub.example:8443/a"), "https://u@pub.example:8443/a");
    CHECK_STR(lo(&req, 1, "https://pub.example:8443@evil/a"), "https://pub.example:8443@evil/a");
    CHECK_STR(lo(&req, 1, "ftp://pub.example:8443/a"), "ftp://pub.example:8443/a");
    CHECK_STR(lo(&req, 1, "//pub.example:8443/a"), "//pub.example:8443/a");
    CHECK_STR(lo(&req, 1, "/a"), "/a");
    CHECK_STR(lo(&req, 1, "a"), "a");
    CHECK_STR(lo(&req, 1, ""), "");
    CHECK_STR(lo(&req, 1, "https://pub.example:8443x/a"), "https://pub.example:8443x/a");
}

UNIT_TEST(destination_default_ports_and_v6) {
    nw_requrl_t q = req;
    q.pub_host = "pub.example";
    q.pub_host_len = 11;
    CHECK_STR(lo(&q, 1, "https://pub.example/a"), "http://127.0.0.1:8080/a");
    CHECK_STR(lo(&q, 1, "https://pub.example:443/a"), "http://127.0.0.1:8080/a");
    CHECK_STR(lo(&q, 1, "https://pub.example:/a"), "http://127.0.0.1:8080/a");
    CHECK_STR(lo(&q, 1, "http://pub.example/a"), "http://pub.example/a");
    q.pub_tls = 0;
    q.pub_host = "[::1]:80";
    q.pub_host_len = 8;
    q.local_tls = 1;
    q.local_auth = "[::1]:9443";
    q.local_auth_len = 10;
    CHECK_STR(lo(&q, 1, "http://[::1]/a"), "https://[::1]:9443/a");
    CHECK_STR(lo(&q, 1, "http://[::2]/a"), "http://[::2]/a");
    q.pub_host = "bad host";
    q.pub_host_len = 8;
    CHECK_STR(lo(&q, 1, "http://[::1]/a"), "http://[::1]/a");
}

UNIT_TEST(destination_base_path) {
    nw_requrl_t q = req;
    q.base = "/app";
    q.base_len = 4;
    CHECK_STR(lo(&q, 1, "https://pub.example:8443/a?b"), "http://127.0.0.1:8080/app/a?b");
    CHECK_STR(lo(&q, 1, "https://pub.example:8443?b"), "http://127.0.0.1:8080/app?b");
    CHECK_STR(lo(&q, 1, "/a"), "/app/a");
    CHECK_STR(lo(&q, 1, "//other/a"), "//other/a");
    CHECK_STR(lo(&q, 1, "https://other.example/a"), "https://other.example/a");
}

UNIT_TEST(if_header) {
    nw_requrl_t q = req;
    /* tagged lists: each resource tag on the public origin is made local */
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a> (<urn:uuid:1>)"),
              "<http://127.0.0.1:8080/a> (<urn:uuid:1>)");
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a> (<urn:uuid:1>) "
                          "<https://other/b> ([\"e\"]) <https://pub.example:8443/c> (Not <x:y>)"),
              "<http://127.0.0.1:8080/a> (<urn:uuid:1>) <https://other/b> ([\"e\"]) "
              "<http://127.0.0.1:8080/c> (Not <x:y>)");
    /* inside a list: state tokens and entity tags stay, whatever they hold */
    CHECK_STR(lo(&req, 2, "(<https://pub.example:8443/a>)"), "(<https://pub.example:8443/a>)");
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a> ([\"x)<https://pub.example:8443/>\"] "
                          "<https://pub.example:8443/t>)"),
              "<http://127.0.0.1:8080/a> ([\"x)<https://pub.example:8443/>\"] "
              "<https://pub.example:8443/t>)");
    CHECK_STR(lo(&req, 2, "(<urn:a>) (Not [W/\"(\"])"), "(<urn:a>) (Not [W/\"(\"])");
    /* nothing of ours: unchanged (0) */
    CHECK_STR(lo(&req, 2, "<https://other/a> (<urn:uuid:1>)"), "<https://other/a> (<urn:uuid:1>)");
    CHECK_STR(lo(&req, 2, "</a> (<urn:uuid:1>)"), "</a> (<urn:uuid:1>)");
    CHECK_STR(lo(&req, 2, ""), "");
    /* unbalanced: left as it is, even with a tag of ours before */
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a> (<urn:uuid:1>"),
              "<https://pub.example:8443/a> (<urn:uuid:1>");
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a> ([\"e])"),
              "<https://pub.example:8443/a> ([\"e])");
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a"), "<https://pub.example:8443/a");
    CHECK_STR(lo(&req, 2, "<https://pub.example:8443/a> (<urn"),
              "<https://pub.example:8443/a> (<urn");
    /* with a base path: path tags too */
    q.base = "/app";
    q.base_len = 4;
    CHECK_STR(lo(&q, 2, "</a> (<urn:1>) <https://pub.example:8443/b> (<urn:2>)"),
              "</app/a> (<urn:1>) <http://127.0.0.1:8080/app/b> (<urn:2>)");
    CHECK_STR(lo(&q, 2, "(<urn:1>)"), "(<urn:1>)");
}

/* Every prefix of a value parses without reading past it (ASan checks). */
UNIT_TEST(if_prefixes) {
    const char *v = "<https://pub.example:8443/a> (Not <urn:1> [W/\"x(<y>)\"]) "
                    "<https://pub.example:8443/b> (<urn:2>)";
    size_t i, n = strlen(v);
    nw_requrl_t q = req;
    q.base = "/app";
    q.base_len = 4;
    for (i = 0; i <= n; i++) {
        nw_sbuf_t out = {0};
        char *copy = malloc(i ? i : 1);
        memcpy(copy, v, i);
        CHECK(nw_redirect_request(&q, 2, copy, i, &out) >= 0);
        CHECK(nw_redirect_request(&q, 1, copy, i, &out) >= 0);
        free(copy);
        nw_sbuf_free(&out);
    }
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
          UNIT_CASE(req_fields), UNIT_CASE(destination), UNIT_CASE(destination_default_ports_and_v6),
          UNIT_CASE(destination_base_path), UNIT_CASE(if_header), UNIT_CASE(if_prefixes),
          UNIT_CASE(origin_is))
