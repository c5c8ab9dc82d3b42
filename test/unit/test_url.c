/* test_url.c: base URLs and listen addresses (src/core/url.c). */
#include <stdio.h>
#include <string.h>

#include "cfg.h"
#include "unit.h"

#define HAS(s, sub) (strstr((s), (sub)) != NULL)

/* ---- URLs --------------------------------------------------------------- */

UNIT_TEST(url_good) {
    nw_url_t u;
    char err[NW_CFG_ERRLEN];

    CHECK_EQ(nw_url_parse("http://localhost:8000", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.tls, 0);
    CHECK_STR(u.host, "localhost");
    CHECK_EQ(u.port, 8000);
    CHECK_STR(u.path, "");

    CHECK_EQ(nw_url_parse("https://example.com", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.tls, 1);
    CHECK_EQ(u.port, 443);
    CHECK_STR(u.path, "");

    CHECK_EQ(nw_url_parse("HTTP://Example.COM/", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.tls, 0);
    CHECK_EQ(u.port, 80);
    CHECK_STR(u.host, "Example.COM");
    CHECK_STR(u.path, "");

    CHECK_EQ(nw_url_parse("HttpS://h:8443/base/", &u, err, sizeof(err)), 0);
    CHECK_EQ(u.tls, 1);
    CHECK_EQ(u.port, 8443);
    CHECK_STR(u.path, "/base");

    CHECK_EQ(nw_url_parse("http://h/a/b//", &u, err, sizeof(err)), 0);
    CHECK_STR(u.path, "/a/b");
    CHECK_EQ(nw_url_parse("http://h/a/b@c", &u, err, sizeof(err)), 0);
    CHECK_STR(u.path, "/a/b@c");

    CHECK_EQ(nw_url_parse("http://[::1]:9000/x", &u, err, sizeof(err)), 0);
    CHECK_STR(u.host, "::1");
    CHECK_EQ(u.port, 9000);
    CHECK_STR(u.path, "/x");

    CHECK_EQ(nw_url_parse("https://[2001:db8::1]", &u, err, sizeof(err)), 0);
    CHECK_STR(u.host, "2001:db8::1");
    CHECK_EQ(u.port, 443);

    CHECK_EQ(nw_url_parse("http://127.0.0.1:65535", &u, err, sizeof(err)), 0);
    CHECK_STR(u.host, "127.0.0.1");
    CHECK_EQ(u.port, 65535);

    CHECK_EQ(nw_url_parse("http://my_host.local-1:1", &u, err, sizeof(err)), 0);
    CHECK_STR(u.host, "my_host.local-1");
    CHECK_EQ(u.port, 1);
}

static int url_fails(const char *s, const char *why) {
    nw_url_t u;
    char err[NW_CFG_ERRLEN] = "";

    memset(&u, 0x5a, sizeof(u));
    if (nw_url_parse(s, &u, err, sizeof(err)) != NW_ECONFIG) {
        fprintf(stderr, "  accepted '%s'\n", s);
        return 0;
    }
    if (!HAS(err, why)) {
        fprintf(stderr, "  '%s': error \"%s\" lacks \"%s\"\n", s, err, why);
        return 0;
    }
    return u.port == 0x5a5a; /* untouched on failure */
}

UNIT_TEST(url_bad) {
    CHECK(url_fails("", "empty URL"));
    CHECK(url_fails("ftp://x", "unsupported scheme 'ftp' (use http:// or https://)"));
    CHECK(url_fails("ws://x", "unsupported scheme 'ws'"));
    CHECK(url_fails("localhost:8000", "missing scheme"));
    CHECK(url_fails("http:/x", "missing scheme"));
    CHECK(url_fails("http://", "empty host"));
    CHECK(url_fails("http:///path", "empty host"));
    CHECK(url_fails("http://:80", "empty host"));
    CHECK(url_fails("http://user@h", "user info"));
    CHECK(url_fails("http://u:p@h:80/", "user info"));
    CHECK(url_fails("http://h/?q=1", "query"));
    CHECK(url_fails("http://h?q", "query"));
    CHECK(url_fails("http://h/#frag", "fragment"));
    CHECK(url_fails("http://h:0", "invalid port '0'"));
    CHECK(url_fails("http://h:65536", "invalid port '65536'"));
    CHECK(url_fails("http://h:abc", "invalid port 'abc'"));
    CHECK(url_fails("http://h:-1", "invalid port"));
    CHECK(url_fails("http://h:", "empty port"));
    CHECK(url_fails("http://h /x", "whitespace"));
    CHECK(url_fails("http://h\t", "whitespace"));
    CHECK(url_fails(" http://h", "whitespace"));
    CHECK(url_fails("http://h/\x01", "control"));
    CHECK(url_fails("http://::1:80", "brackets"));
    CHECK(url_fails("http://[::1", "missing ']'"));
    CHECK(url_fails("http://[zz]:80", "invalid IPv6 address 'zz'"));
    CHECK(url_fails("http://[]", "invalid IPv6"));
    CHECK(url_fails("http://[::1]x", "after ']'"));
    CHECK(url_fails("http://256.1.1.1", "invalid IPv4 address"));
    CHECK(url_fails("http://a..b", "empty label"));
    CHECK(url_fails("http://.a", "empty label"));
    CHECK(url_fails("http://a*b", "invalid character '*'"));
}

/* ---- listen addresses --------------------------------------------------- */

static int listen_is(const char *s, const char *host, int port) {
    nw_listen_t l;
    char err[NW_CFG_ERRLEN] = "";

    if (nw_listen_parse(s, &l, err, sizeof(err)) != 0) {
        fprintf(stderr, "  '%s' rejected: %s\n", s, err);
        return 0;
    }
    return strcmp(l.host, host) == 0 && l.port == port;
}

static int listen_fails(const char *s, const char *why) {
    nw_listen_t l;
    char err[NW_CFG_ERRLEN] = "";

    if (nw_listen_parse(s, &l, err, sizeof(err)) != NW_ECONFIG)
        return 0;
    if (!HAS(err, why)) {
        fprintf(stderr, "  '%s': error \"%s\" lacks \"%s\"\n", s, err, why);
        return 0;
    }
    return 1;
}

UNIT_TEST(listen_good) {
    CHECK(listen_is(":8000", "", 8000));
    CHECK(listen_is("8000", "", 8000));
    CHECK(listen_is("0.0.0.0:8000", "0.0.0.0", 8000));
    CHECK(listen_is("127.0.0.1:8000", "127.0.0.1", 8000));
    CHECK(listen_is("[::1]:8000", "::1", 8000));
    CHECK(listen_is("[::]:80", "::", 80));
    CHECK(listen_is("localhost:8000", "localhost", 8000));
    CHECK(listen_is(":0", "", 0));
    CHECK(listen_is("127.0.0.1:0", "127.0.0.1", 0));
    CHECK(listen_is(":65535", "", 65535));
}

UNIT_TEST(listen_bad) {
    CHECK(listen_fails("", "empty"));
    CHECK(listen_fails("abc", "missing port in 'abc'"));
    CHECK(listen_fails("localhost", "missing port"));
    CHECK(listen_fails("localhost:", "missing port"));
    CHECK(listen_fails(":", "missing port"));
    CHECK(listen_fails("[::1]", "missing port"));
    CHECK(listen_fails("[::1]8000", "after ']'"));
    CHECK(listen_fails(":99999", "invalid port in ':99999'"));
    CHECK(listen_fails("99999", "invalid port in '99999'"));
    CHECK(listen_fails("x:99999", "invalid port in 'x:99999'"));
    CHECK(listen_fails(":-1", "invalid port"));
    CHECK(listen_fails(":80x", "invalid port"));
    CHECK(listen_fails("::1:8000", "brackets"));
    CHECK(listen_fails("[zz]:80", "invalid IPv6"));
    CHECK(listen_fails("a b:80", "invalid character ' '"));
    CHECK(listen_fails("300.1.1.1:80", "invalid IPv4"));
}

UNIT_MAIN(UNIT_CASE(url_good), UNIT_CASE(url_bad), UNIT_CASE(listen_good),
          UNIT_CASE(listen_bad))
