/* test_json.c: JSON string escaping (nw_json_str, nw_json_cstr): the
 * RFC 8259 escapes, control bytes as \u00XX, UTF-8 passed through and
 * bytes that are not UTF-8 as U+FFFD, NULL as null. */
#include <string.h>

#include "json.h"
#include "unit.h"

/* The JSON of n bytes of s into out (NUL-terminated). */
static const char *js(const char *s, size_t n) {
    static char out[512];
    nw_sbuf_t b = {0};
    if (nw_json_str(&b, s, n) != 0 || b.len >= sizeof(out)) {
        nw_sbuf_free(&b);
        return "<error>";
    }
    memcpy(out, b.p, b.len);
    out[b.len] = '\0';
    nw_sbuf_free(&b);
    return out;
}
#define JS(lit) js(lit, sizeof(lit) - 1)

UNIT_TEST(plain_and_escapes) {
    CHECK_STR(JS(""), "\"\"");
    CHECK_STR(JS("abc /x?y=1"), "\"abc /x?y=1\"");
    CHECK_STR(JS("a\"b\\c"), "\"a\\\"b\\\\c\"");
    CHECK_STR(JS("\b\f\n\r\t"), "\"\\b\\f\\n\\r\\t\"");
    /* '/' needs no escape; DEL (0x7f) is not a control character in JSON */
    CHECK_STR(JS("</script>\x7f"), "\"</script>\x7f\"");
}

UNIT_TEST(control_bytes) {
    CHECK_STR(JS("\x01\x1f"), "\"\\u0001\\u001f\"");
    CHECK_STR(js("a\0b", 3), "\"a\\u0000b\"");
    CHECK_STR(JS("\x1b[0m"), "\"\\u001b[0m\"");
}

UNIT_TEST(utf8_kept) {
    CHECK_STR(JS("caf\xc3\xa9"), "\"caf\xc3\xa9\"");                 /* 2 bytes */
    CHECK_STR(JS("\xe2\x82\xac"), "\"\xe2\x82\xac\"");               /* U+20AC, 3 bytes */
    CHECK_STR(JS("\xf0\x9f\x98\x80"), "\"\xf0\x9f\x98\x80\"");       /* U+1F600, 4 bytes */
    CHECK_STR(JS("\xef\xbf\xbf\xf4\x8f\xbf\xbf"), "\"\xef\xbf\xbf\xf4\x8f\xbf\xbf\""); /* maxima */
}

#define FFFD "\xef\xbf\xbd"

UNIT_TEST(invalid_utf8_replaced) {
    CHECK_STR(JS("\xff"), "\"" FFFD "\"");
    CHECK_STR(JS("a\x80z"), "\"a" FFFD "z\"");              /* lone continuation */
    CHECK_STR(JS("\xc3"), "\"" FFFD "\"");                  /* truncated at the end */
    CHECK_STR(JS("\xc3(x"), "\"" FFFD "(x\"");              /* bad continuation */
    CHECK_STR(JS("\xc0\xaf"), "\"" FFFD FFFD "\"");         /* overlong '/' */
    CHECK_STR(JS("\xe0\x80\xaf"), "\"" FFFD FFFD FFFD "\""); /* overlong, 3 bytes */
    CHECK_STR(JS("\xed\xa0\x80"), "\"" FFFD FFFD FFFD "\""); /* a surrogate */
    CHECK_STR(JS("\xf4\x90\x80\x80"), "\"" FFFD FFFD FFFD FFFD "\""); /* past U+10FFFF */
    CHECK_STR(JS("\xe2\x82x"), "\"" FFFD "x\"");            /* one U+FFFD per broken char */
    CHECK_STR(JS("\xf0\x9f\x98"), "\"" FFFD "\"");
    /* what follows a bad byte is read as usual */
    CHECK_STR(JS("\xff\"\n"), "\"" FFFD "\\\"\\n\"");
}

UNIT_TEST(cstr_and_null) {
    nw_sbuf_t b = {0};
    CHECK_EQ(nw_json_cstr(&b, NULL), 0);
    CHECK_EQ(nw_sbuf_appends(&b, ","), 0);
    CHECK_EQ(nw_json_cstr(&b, "x\ty"), 0);
    CHECK_EQ(b.len, strlen("null,\"x\\ty\""));
    CHECK(memcmp(b.p, "null,\"x\\ty\"", b.len) == 0);
    nw_sbuf_free(&b);
}

UNIT_TEST(out_of_memory) {
    nw_sbuf_t b = {0};
    unsigned long i;
    int failed = 0;
    /* every allocation along the way may fail: an error, never a crash */
    for (i = 1; i < 8; i++) {
        nw__alloc_fail_in = i;
        if (nw_json_str(&b, "\x01 some text that grows the buffer \xff", 36) != 0)
            failed++;
        nw__alloc_fail_in = 0;
        nw_sbuf_free(&b);
    }
    CHECK(failed > 0);
}

UNIT_MAIN(UNIT_CASE(plain_and_escapes), UNIT_CASE(control_bytes), UNIT_CASE(utf8_kept),
          UNIT_CASE(invalid_utf8_replaced), UNIT_CASE(cstr_and_null), UNIT_CASE(out_of_memory))
