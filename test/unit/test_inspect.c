/* test_inspect.c: the request inspector's ring, masking, body capture and
 * JSON (src/agent/inspect.c). */
#include "inspect.h"
#include "unit.h"

#define H(n, v) {n, sizeof(n) - 1, v, sizeof(v) - 1}

static const nw_hdr_t req_hdrs[] = {
    H("Host", "a.example.com"),        H("Authorization", "Bearer s3cret"),
    H("Cookie", "sid=abc"),            H("X-Auth-Token", "tok"),
    H("Proxy-Authorization", "Basic x"), H("Accept", "text/plain"),
};

static uint64_t begin(nw_inspect_t *ins, uint64_t now, const char *target) {
    return nw_inspect_begin(ins, 1764130000.5, now, "GET", 3, target, strlen(target), req_hdrs,
                            NW_ARRAY_LEN(req_hdrs));
}

static int has(const nw_sbuf_t *b, const char *s) {
    size_t n = strlen(s), i;
    for (i = 0; b->p && i + n <= b->len; i++)
        if (memcmp(b->p + i, s, n) == 0)
            return 1;
    return 0;
}

UNIT_TEST(ring_keeps_last_200) {
    nw_inspect_t *ins = nw_inspect_new(0);
    nw_sbuf_t b = {0};
    uint64_t i, id = 0;
    char t[32];
    CHECK(ins);
    for (i = 0; i < 250; i++) {
        snprintf(t, sizeof(t), "/r%llu", (unsigned long long)i);
        id = begin(ins, 100, t);
        CHECK_EQ(id, i + 1);
    }
    CHECK(nw_inspect_get(ins, 50) == NULL); /* left the ring */
    CHECK(nw_inspect_get(ins, 51) != NULL);
    CHECK(nw_inspect_get(ins, 250) != NULL);
    CHECK(nw_inspect_get(ins, 251) == NULL);
    CHECK(nw_inspect_get(ins, 0) == NULL);
    CHECK_EQ(nw_inspect_list_json(ins, 0, &b), 0);
    CHECK(has(&b, "{\"inspect\":true,\"last\":250,\"requests\":[{\"id\":51,"));
    CHECK(has(&b, "\"/r50\"")); /* id 51 */
    CHECK(!has(&b, "\"/r49\""));
    CHECK(has(&b, "\"/r249\""));
    b.len = 0;
    CHECK_EQ(nw_inspect_list_json(ins, 248, &b), 0);
    CHECK(has(&b, "\"id\":249") && has(&b, "\"id\":250") && !has(&b, "\"id\":248"));
    nw_sbuf_free(&b);
    nw_inspect_free(ins);
}

UNIT_TEST(secrets_masked) {
    nw_inspect_t *ins = nw_inspect_new(0);
    nw_sbuf_t b = {0};
    nw_hdr_t resp[] = {H("Set-Cookie", "sid=zzz"), H("Content-Type", "text/plain")};
    nw_icap_t *c;
    c = nw_inspect_get(ins, begin(ins, 0, "/"));
    CHECK(c);
    nw_icap_resp_head(c, 200, resp, 2);
    nw_icap_end(c, 5, NULL);
    CHECK_EQ(nw_inspect_one_json(ins, c, &b), 0);
    CHECK(!has(&b, "s3cret") && !has(&b, "sid=abc") && !has(&b, "\"tok\"") &&
          !has(&b, "Basic x") && !has(&b, "sid=zzz"));
    CHECK(has(&b, "[\"Authorization\",\"***\"]"));
    CHECK(has(&b, "[\"Set-Cookie\",\"***\"]"));
    CHECK(has(&b, "[\"Accept\",\"text/plain\"]"));
    CHECK(has(&b, "\"status\":200") && has(&b, "\"state\":\"done\""));
    CHECK(has(&b, "\"duration_seconds\":0.005"));
    nw_sbuf_free(&b);
    nw_inspect_free(ins);
    /* INSPECT_SECRETS=1 */
    ins = nw_inspect_new(1);
    c = nw_inspect_get(ins, begin(ins, 0, "/"));
    CHECK_EQ(nw_inspect_one_json(ins, c, &b), 0);
    CHECK(has(&b, "Bearer s3cret") && has(&b, "sid=abc"));
    nw_sbuf_free(&b);
    nw_inspect_free(ins);
    CHECK(nw_inspect_secret("cOOkie", 6) && !nw_inspect_secret("Cookie2", 7));
}

UNIT_TEST(bodies_only_while_live) {
    nw_inspect_t *ins = nw_inspect_new(0);
    nw_icap_t *c;
    CHECK(!nw_inspect_live(ins, 0));
    c = nw_inspect_get(ins, begin(ins, 1000, "/a"));
    nw_icap_req_body(c, "hello", 5);
    CHECK_EQ(c->req_bytes, 5);
    CHECK_EQ(c->req_body.len, 0); /* no dashboard: sizes only */
    CHECK(!nw_icap_replayable(c));
    nw_inspect_touch(ins, 1000);
    CHECK(nw_inspect_live(ins, 1000 + NW_INSPECT_LIVE_MS - 1));
    CHECK(!nw_inspect_live(ins, 1000 + NW_INSPECT_LIVE_MS));
    c = nw_inspect_get(ins, begin(ins, 2000, "/b"));
    nw_icap_req_body(c, "hello", 5);
    CHECK_EQ(c->req_body.len, 5);
    CHECK(!nw_icap_replayable(c)); /* more of the body may come (n1) */
    nw_icap_req_end(c);
    CHECK(nw_icap_replayable(c));
    /* A bodiless request replays even without a dashboard. */
    c = nw_inspect_get(ins, begin(ins, 1000 + NW_INSPECT_LIVE_MS + 1, "/c"));
    nw_icap_req_end(c);
    CHECK(!c->bodies && nw_icap_replayable(c));
    nw_inspect_free(ins);
}

UNIT_TEST(body_cap_64k) {
    nw_inspect_t *ins = nw_inspect_new(0);
    static char big[40000];
    nw_sbuf_t b = {0};
    nw_icap_t *c;
    memset(big, 'x', sizeof(big));
    nw_inspect_touch(ins, 0);
    c = nw_inspect_get(ins, begin(ins, 0, "/up"));
    nw_icap_req_body(c, big, sizeof(big));
    nw_icap_req_body(c, big, sizeof(big));
    nw_icap_resp_body(c, big, 100);
    CHECK_EQ(c->req_bytes, 80000);
    CHECK_EQ(c->req_body.len, NW_INSPECT_BODY_MAX);
    CHECK(!nw_icap_replayable(c)); /* truncated: Replay answers 409 */
    nw_icap_end(c, 1, "local service closed mid-response");
    CHECK_EQ(nw_inspect_one_json(ins, c, &b), 0);
    CHECK(has(&b, "\"size\":80000,\"truncated\":true"));
    CHECK(has(&b, "\"size\":100,\"truncated\":false"));
    CHECK(has(&b, "\"state\":\"failed\""));
    CHECK(has(&b, "\"error\":\"local service closed mid-response\""));
    nw_sbuf_free(&b);
    nw_inspect_free(ins);
}

UNIT_TEST(text_or_hex) {
    nw_sbuf_t b = {0};
    CHECK(nw_inspect_is_text("h\xc3\xa9llo\r\n\t", 9));
    CHECK(!nw_inspect_is_text("a\0b", 3));
    CHECK(!nw_inspect_is_text("\xc3", 1));       /* cut short */
    CHECK(!nw_inspect_is_text("\xc0\xaf", 2));   /* overlong */
    CHECK(!nw_inspect_is_text("\xed\xa0\x80", 3)); /* surrogate */
    CHECK(!nw_inspect_is_text("\xff", 1));
    CHECK(nw_inspect_is_text("\xf0\x9f\x98\x80", 4));
    CHECK_EQ(nw_inspect_body_json(&b, "hi \"x\"", 6, 6), 0);
    CHECK(has(&b, "{\"text\":\"hi \\\"x\\\"\",\"size\":6,\"truncated\":false}"));
    b.len = 0;
    CHECK_EQ(nw_inspect_body_json(&b, "\x00\x01\xab", 3, 3), 0);
    CHECK(has(&b, "{\"hex\":\"0001ab\",\"size\":3,\"truncated\":false}"));
    b.len = 0;
    /* A capture cut inside a character is still text. */
    CHECK_EQ(nw_inspect_body_json(&b, "ab\xc3", 3, 4), 0);
    CHECK(has(&b, "{\"text\":\"ab\",\"size\":4,\"truncated\":true}"));
    b.len = 0;
    {
        static char bin[3000];
        memset(bin, 0xff, sizeof(bin));
        CHECK_EQ(nw_inspect_body_json(&b, bin, sizeof(bin), sizeof(bin)), 0);
        CHECK_EQ(b.len, strlen("{\"hex\":\"\",\"size\":3000,\"truncated\":false}") +
                            2 * NW_INSPECT_HEX_MAX);
    }
    nw_sbuf_free(&b);
}

UNIT_MAIN(UNIT_CASE(ring_keeps_last_200), UNIT_CASE(secrets_masked),
          UNIT_CASE(bodies_only_while_live), UNIT_CASE(body_cap_64k), UNIT_CASE(text_or_hex))
