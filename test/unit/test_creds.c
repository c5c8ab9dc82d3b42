/* test_creds.c: Basic credentials for the agent's handshake (creds.c):
 * base64 against RFC 4648's vectors, the user:password rules of RFC 7617,
 * the file syntax, and that no message quotes a credential. */
#include <string.h>

#include "creds.h"
#include "nw.h"
#include "unit.h"

static const char *b64(const char *s) {
    static char out[NW_CRED_B64_MAX + 1];
    if (nw_base64_encode(s, strlen(s), out, sizeof(out)) != strlen(out))
        return "(error)";
    return out;
}

/* RFC 4648 section 10, and RFC 7617's example. */
UNIT_TEST(base64_vectors) {
    char small[5];
    CHECK_STR(b64(""), "");
    CHECK_STR(b64("f"), "Zg==");
    CHECK_STR(b64("fo"), "Zm8=");
    CHECK_STR(b64("foo"), "Zm9v");
    CHECK_STR(b64("foob"), "Zm9vYg==");
    CHECK_STR(b64("fooba"), "Zm9vYmE=");
    CHECK_STR(b64("foobar"), "Zm9vYmFy");
    CHECK_STR(b64("Aladdin:open sesame"), "QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    CHECK_STR(b64("\xff\xfe\xfd"), "//79");
    CHECK_EQ(nw_base64_encode("foo", 3, small, sizeof(small)), 4);
    CHECK_EQ(nw_base64_encode("foob", 4, small, sizeof(small)), 0); /* no room */
}

static int add_fails(nw_creds_t *c, const char *s, const char *why) {
    char err[128] = "";
    if (nw_creds_add(c, s, strlen(s), err, sizeof(err)) != NW_ECONFIG) {
        fprintf(stderr, "  \"%s\" accepted\n", s);
        return 0;
    }
    if (!strstr(err, why) || strstr(err, "Secret")) {
        fprintf(stderr, "  error \"%s\" for \"%s\": want \"%s\", no secret\n", err, s, why);
        return 0;
    }
    return 1;
}

UNIT_TEST(add_rules) {
    static nw_creds_t c;
    char err[128], long_cred[300];
    int i;
    memset(&c, 0, sizeof(c));
    CHECK_EQ(nw_creds_add(&c, "alice:pa:ss word", 16, err, sizeof(err)), 0);
    CHECK_EQ(c.n, 1);
    CHECK_STR(c.b64[0], "YWxpY2U6cGE6c3Mgd29yZA==");
    CHECK_EQ(nw_creds_add(&c, "alice:pa:ss word", 16, err, sizeof(err)), 0); /* kept once */
    CHECK_EQ(c.n, 1);
    CHECK_EQ(nw_creds_add(&c, "j\xc3\xb6rg:\xc3\xa4", 8, err, sizeof(err)), 0); /* UTF-8 */
    CHECK_EQ(c.n, 2);
    CHECK(add_fails(&c, "Secret-only", "expected user:password"));
    CHECK(add_fails(&c, ":Secret-pw", "empty user name"));
    CHECK(add_fails(&c, "user:", "empty password"));
    CHECK(add_fails(&c, "user:Secret\tx", "control characters"));
    CHECK(add_fails(&c, "us\x7f" "er:Secret", "control characters"));
    CHECK(add_fails(&c, "user:Secret\r", "control characters"));
    memset(long_cred, 'p', sizeof(long_cred));
    memcpy(long_cred, "u:", 2);
    long_cred[255] = 0;
    CHECK_EQ(nw_creds_add(&c, long_cred, 255, err, sizeof(err)), 0);
    long_cred[255] = 'p';
    long_cred[256] = 0;
    CHECK(add_fails(&c, long_cred, "longer than 255 bytes"));
    CHECK_EQ(c.n, 3);
    CHECK_EQ(strlen(c.b64[2]), NW_CRED_B64_MAX);
    for (i = (int)c.n; i < NW_CREDS_MAX; i++) {
        char u[16];
        snprintf(u, sizeof(u), "u%d:p", i);
        CHECK_EQ(nw_creds_add(&c, u, strlen(u), err, sizeof(err)), 0);
    }
    CHECK_EQ(c.n, NW_CREDS_MAX);
    CHECK(add_fails(&c, "one:more", "more than 64"));
    CHECK_EQ(nw_creds_add(&c, "u5:p", 4, err, sizeof(err)), 0); /* a duplicate still fits */
}

UNIT_TEST(file_syntax) {
    static nw_creds_t c;
    static const char text[] = "# logins\n\n  \t\nbob:b\r\n  # indented comment\n"
                               "carol:c # not a comment\nlast:l";
    char err[128] = "";
    memset(&c, 0, sizeof(c));
    CHECK_EQ(nw_creds_parse(&c, text, sizeof(text) - 1, err, sizeof(err)), 0);
    CHECK_EQ(c.n, 3);
    CHECK_STR(c.b64[0], b64("bob:b"));
    CHECK_STR(c.b64[1], b64("carol:c # not a comment"));
    CHECK_STR(c.b64[2], b64("last:l"));
    CHECK_EQ(nw_creds_parse(&c, "", 0, err, sizeof(err)), 0);
    CHECK_EQ(c.n, 3);
}

UNIT_TEST(file_errors) {
    static nw_creds_t c;
    static const char bad[] = "ok:Secret-1\n\nbroken-Secret-2\n";
    static const char cr[] = "a:b\r\r\n";
    static const char nul[] = "a:b\nx:S\0cret\n";
    char err[128] = "";
    memset(&c, 0, sizeof(c));
    CHECK_EQ(nw_creds_parse(&c, bad, sizeof(bad) - 1, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 3: expected user:password");
    CHECK_EQ(nw_creds_parse(&c, cr, sizeof(cr) - 1, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 1: control characters are not allowed (RFC 7617)");
    CHECK_EQ(nw_creds_parse(&c, nul, sizeof(nul) - 1, err, sizeof(err)), NW_ECONFIG);
    CHECK_STR(err, "line 2: control characters are not allowed (RFC 7617)");
}

UNIT_MAIN(UNIT_CASE(base64_vectors), UNIT_CASE(add_rules), UNIT_CASE(file_syntax),
          UNIT_CASE(file_errors))
