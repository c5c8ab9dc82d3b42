/* test_http1.c: head accumulation (nw_hf_*), the header rewriting rules the
 * proxy applies (hop-by-hop, Connection-listed and explicit drops), target
 * normalisation, field syntax checks and Content-Length parsing.
 *
 * The last tests drive a real llhttp parser over sample messages split at
 * every byte offset. Each piece is a fresh heap copy freed right after
 * llhttp_execute, so if nw_hf_* kept a pointer into the read buffer instead
 * of copying, ASan would report the use after free. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "http1.h"
#include "unit.h"

/* ---- helpers ------------------------------------------------------------- */

#define BIG_MAX 65536

/* Add one whole field. Returns the first non-OK code. */
static int add_field(nw_hfields_t *h, const char *name, const char *value) {
    int rc = nw_hf_name(h, name, strlen(name));
    if (rc)
        return rc;
    return nw_hf_value(h, value, strlen(value));
}

/* Fill h from a NULL-terminated list of name, value pairs. */
static int add_fields(nw_hfields_t *h, const char *const *kv) {
    size_t i;
    int rc;
    for (i = 0; kv[i]; i += 2)
        if ((rc = add_field(h, kv[i], kv[i + 1])) != 0)
            return rc;
    return 0;
}

static int span_is(const char *p, size_t n, const char *s) {
    return n == strlen(s) && (n == 0 || memcmp(p, s, n) == 0);
}

static int hdr_is(const nw_hdr_t *f, const char *name, const char *value) {
    return span_is(f->name, f->name_len, name) && span_is(f->value, f->value_len, value);
}

static int field_is(const nw_hfields_t *h, size_t i, const char *name, const char *value) {
    nw_hdr_t f;
    if (i >= h->n)
        return 0;
    nw_hf_get(h, i, &f);
    return hdr_is(&f, name, value);
}

/* out[0..n) equals the NULL-terminated pair list want, in order. */
static int hdrs_are(const nw_hdr_t *out, int n, const char *const *want) {
    int i;
    for (i = 0; want[2 * i]; i++)
        if (i >= n || !hdr_is(&out[i], want[2 * i], want[2 * i + 1]))
            return 0;
    return i == n;
}

/* Filter a pair list through nw_http_filter and compare with want. */
static int filter_gives(const char *const *in, const char *const *drop,
                        const char *const *want) {
    nw_hfields_t h;
    nw_hdr_t out[64];
    int n, ok;
    nw_hf_init(&h, BIG_MAX);
    if (add_fields(&h, in) != 0) {
        nw_hf_free(&h);
        return 0;
    }
    n = nw_http_filter(&h, out, NW_ARRAY_LEN(out), drop);
    ok = n >= 0 && hdrs_are(out, n, want);
    if (!ok) {
        int i;
        fprintf(stderr, "  filter gave %d:", n);
        for (i = 0; i < n; i++)
            fprintf(stderr, " [%.*s: %.*s]", (int)out[i].name_len, out[i].name,
                    (int)out[i].value_len, out[i].value);
        fprintf(stderr, "\n");
    }
    nw_hf_free(&h);
    return ok;
}

/* ---- nw_hf_*: accumulation ----------------------------------------------- */

UNIT_TEST(test_hf_whole_fields) {
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(h.n, 0);
    CHECK_EQ(h.max, BIG_MAX);
    CHECK_EQ(nw_hf_first(&h, "/index.html", 11), NW_HF_OK);
    CHECK_EQ(add_field(&h, "Host", "example.com"), NW_HF_OK);
    CHECK_EQ(add_field(&h, "Accept", "*/*"), NW_HF_OK);
    CHECK_EQ(h.first_len, 11);
    CHECK(span_is(h.raw.p, h.first_len, "/index.html"));
    CHECK_EQ(h.n, 2);
    CHECK(field_is(&h, 0, "Host", "example.com"));
    CHECK(field_is(&h, 1, "Accept", "*/*"));
    nw_hf_free(&h);
    CHECK(h.raw.p == NULL);
}

UNIT_TEST(test_hf_first_in_pieces) {
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_first(&h, "/a/b", 4), NW_HF_OK);
    CHECK_EQ(nw_hf_first(&h, "", 0), NW_HF_OK);
    CHECK_EQ(nw_hf_first(&h, "?x=1", 4), NW_HF_OK);
    CHECK_EQ(h.first_len, 8);
    CHECK(span_is(h.raw.p, h.first_len, "/a/b?x=1"));
    CHECK_EQ(add_field(&h, "A", "b"), NW_HF_OK);
    CHECK(span_is(h.raw.p, h.first_len, "/a/b?x=1"));
    CHECK(field_is(&h, 0, "A", "b"));
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_name_split) {
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_name(&h, "Con", 3), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "tent-", 5), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "Type", 4), NW_HF_OK);
    CHECK_EQ(h.n, 1);
    CHECK_EQ(nw_hf_value(&h, "text/html", 9), NW_HF_OK);
    CHECK_EQ(h.n, 1);
    CHECK(field_is(&h, 0, "Content-Type", "text/html"));
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_value_split) {
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_name(&h, "Cookie", 6), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "a=1", 3), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "; b", 3), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "=2", 2), NW_HF_OK);
    CHECK_EQ(h.n, 1);
    CHECK(field_is(&h, 0, "Cookie", "a=1; b=2"));
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_value_then_name_starts_field) {
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_name(&h, "A", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "1", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "B", 1), NW_HF_OK);
    CHECK_EQ(h.n, 2);
    CHECK_EQ(nw_hf_name(&h, "b", 1), NW_HF_OK); /* continues "B" */
    CHECK_EQ(h.n, 2);
    CHECK_EQ(nw_hf_value(&h, "2", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "A", 1), NW_HF_OK); /* a repeat is a new field */
    CHECK_EQ(nw_hf_value(&h, "3", 1), NW_HF_OK);
    CHECK_EQ(h.n, 3);
    CHECK(field_is(&h, 0, "A", "1"));
    CHECK(field_is(&h, 1, "Bb", "2"));
    CHECK(field_is(&h, 2, "A", "3"));
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_empty_values) {
    nw_hfields_t h;
    nw_hdr_t f;
    nw_hf_init(&h, BIG_MAX);
    /* llhttp reports an empty value as one zero-length callback */
    CHECK_EQ(nw_hf_name(&h, "X-Empty", 7), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "", 0), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "Y", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "y", 1), NW_HF_OK);
    /* a name that never got a value at all (end of the head) */
    CHECK_EQ(nw_hf_name(&h, "Z", 1), NW_HF_OK);
    CHECK_EQ(h.n, 3);
    CHECK(field_is(&h, 0, "X-Empty", ""));
    CHECK(field_is(&h, 1, "Y", "y"));
    CHECK(field_is(&h, 2, "Z", ""));
    nw_hf_get(&h, 2, &f);
    CHECK(f.value != NULL);
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_zero_length_pieces) {
    /* llhttp re-opens a span at the start of each execute, so a split just
     * before ':' or CR yields a zero-length name or value callback. */
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_name(&h, "Host", 4), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "", 0), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "h", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "", 0), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "A", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "", 0), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "1", 1), NW_HF_OK);
    CHECK_EQ(h.n, 2);
    CHECK(field_is(&h, 0, "Host", "h"));
    CHECK(field_is(&h, 1, "A", "1"));
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_value_before_name_ignored) {
    nw_hfields_t h;
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_value(&h, "stray", 5), NW_HF_OK);
    CHECK_EQ(h.n, 0);
    CHECK_EQ(add_field(&h, "A", "1"), NW_HF_OK);
    CHECK_EQ(h.n, 1);
    CHECK(field_is(&h, 0, "A", "1"));
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_toobig) {
    nw_hfields_t h;
    /* "/abc" + "Host" + "xy" is exactly 10 bytes */
    nw_hf_init(&h, 10);
    CHECK_EQ(nw_hf_first(&h, "/abc", 4), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "Host", 4), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "x", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "y", 1), NW_HF_OK);
    CHECK_EQ(h.raw.len, 10);
    CHECK_EQ(nw_hf_value(&h, "", 0), NW_HF_OK); /* nothing added: still fits */
    CHECK_EQ(nw_hf_value(&h, "z", 1), NW_HF_TOOBIG);
    CHECK_EQ(h.raw.len, 10);
    CHECK(field_is(&h, 0, "Host", "xy")); /* the failed piece left no trace */
    nw_hf_free(&h);

    nw_hf_init(&h, 10);
    CHECK_EQ(nw_hf_first(&h, "/0123456789", 11), NW_HF_TOOBIG);
    CHECK_EQ(h.first_len, 0);
    CHECK_EQ(nw_hf_first(&h, "/012345678", 10), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "A", 1), NW_HF_TOOBIG);
    nw_hf_free(&h);

    nw_hf_init(&h, 6);
    CHECK_EQ(nw_hf_name(&h, "Abc", 3), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "defg", 4), NW_HF_TOOBIG);
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_toomany) {
    nw_hfields_t h;
    char name[16];
    size_t i;
    nw_hf_init(&h, BIG_MAX);
    for (i = 0; i < NW_HTTP_MAX_FIELDS; i++) {
        int len = snprintf(name, sizeof(name), "X-%zu", i);
        CHECK_EQ(nw_hf_name(&h, name, (size_t)len), NW_HF_OK);
        CHECK_EQ(nw_hf_value(&h, "v", 1), NW_HF_OK);
    }
    CHECK_EQ(h.n, NW_HTTP_MAX_FIELDS);
    CHECK_EQ(nw_hf_name(&h, "One-Too-Many", 12), NW_HF_TOOMANY);
    CHECK_EQ(h.n, NW_HTTP_MAX_FIELDS);
    CHECK(field_is(&h, 0, "X-0", "v"));
    CHECK(field_is(&h, NW_HTTP_MAX_FIELDS - 1, "X-199", "v"));
    nw_hf_free(&h);

    /* the last allowed field may still arrive in pieces */
    nw_hf_init(&h, BIG_MAX);
    for (i = 0; i + 1 < NW_HTTP_MAX_FIELDS; i++)
        CHECK_EQ(add_field(&h, "A", "1"), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "La", 2), NW_HF_OK);
    CHECK_EQ(nw_hf_name(&h, "st", 2), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "y", 1), NW_HF_OK);
    CHECK_EQ(nw_hf_value(&h, "es", 2), NW_HF_OK);
    CHECK_EQ(h.n, NW_HTTP_MAX_FIELDS);
    CHECK(field_is(&h, NW_HTTP_MAX_FIELDS - 1, "Last", "yes"));
    CHECK_EQ(nw_hf_name(&h, "B", 1), NW_HF_TOOMANY);
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_find) {
    nw_hfields_t h;
    static const char *const kv[] = {"Host", "h", "Set-Cookie", "a=1", "hostx", "no",
                                     "SET-COOKIE", "b=2", "Hos", "no", "set-cookie", "c=3",
                                     NULL};
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(nw_hf_find(&h, "host", 0), -1); /* empty */
    CHECK_EQ(add_fields(&h, kv), 0);
    CHECK_EQ(nw_hf_find(&h, "host", 0), 0);
    CHECK_EQ(nw_hf_find(&h, "HOST", 0), 0);
    CHECK_EQ(nw_hf_find(&h, "host", 1), -1); /* "hostx" and "Hos" differ */
    CHECK_EQ(nw_hf_find(&h, "set-cookie", 0), 1);
    CHECK_EQ(nw_hf_find(&h, "Set-Cookie", 1), 1);
    CHECK_EQ(nw_hf_find(&h, "set-cookie", 2), 3);
    CHECK_EQ(nw_hf_find(&h, "set-cookie", 4), 5);
    CHECK_EQ(nw_hf_find(&h, "set-cookie", 6), -1);
    CHECK_EQ(nw_hf_find(&h, "set-cookie", 1000), -1);
    CHECK_EQ(nw_hf_find(&h, "cookie", 0), -1);
    CHECK_EQ(nw_hf_find(&h, "", 0), -1);
    nw_hf_free(&h);
}

UNIT_TEST(test_hf_reset_reuse) {
    nw_hfields_t h;
    char *before;
    nw_hf_init(&h, 64);
    CHECK_EQ(nw_hf_first(&h, "/first/request", 14), NW_HF_OK);
    CHECK_EQ(add_field(&h, "Host", "one.example"), NW_HF_OK);
    CHECK_EQ(add_field(&h, "X-Old", "stale"), NW_HF_OK);
    before = h.raw.p;

    nw_hf_reset(&h);
    CHECK_EQ(h.n, 0);
    CHECK_EQ(h.first_len, 0);
    CHECK_EQ(h.raw.len, 0);
    CHECK_EQ(h.max, 64);
    CHECK_EQ(nw_hf_find(&h, "x-old", 0), -1);
    /* the old name must not be continued: the next name starts a field */
    CHECK_EQ(nw_hf_name(&h, "Host", 4), NW_HF_OK);
    CHECK_EQ(h.n, 1);
    CHECK_EQ(nw_hf_value(&h, "two", 3), NW_HF_OK);
    CHECK(h.raw.p == before); /* storage is kept */
    CHECK(field_is(&h, 0, "Host", "two"));
    CHECK_EQ(h.first_len, 0);

    /* the cap counts from zero again */
    nw_hf_reset(&h);
    CHECK_EQ(nw_hf_first(&h, "/0123456789012345678901234567890123456789", 41), NW_HF_OK);
    CHECK_EQ(add_field(&h, "A", "0123456789012345678901"), NW_HF_OK); /* 64 */
    CHECK_EQ(nw_hf_value(&h, "!", 1), NW_HF_TOOBIG);

    /* reset in the middle of a name (a head abandoned mid-field): the next
     * name must start field 0, not continue the abandoned one */
    nw_hf_reset(&h);
    CHECK_EQ(nw_hf_name(&h, "X-Abandon", 9), NW_HF_OK);
    nw_hf_reset(&h);
    CHECK_EQ(nw_hf_name(&h, "Host", 4), NW_HF_OK);
    CHECK_EQ(h.n, 1);
    CHECK_EQ(nw_hf_value(&h, "h", 1), NW_HF_OK);
    CHECK(field_is(&h, 0, "Host", "h"));

    /* reset after a value also forgets "last" */
    nw_hf_reset(&h);
    CHECK_EQ(nw_hf_value(&h, "orphan", 6), NW_HF_OK);
    CHECK_EQ(h.n, 0);
    nw_hf_free(&h);
    nw_hf_free(&h); /* idempotent */
}

/* ---- hop-by-hop rules ---------------------------------------------------- */

UNIT_TEST(test_is_hop) {
    static const char *const hop[] = {
        "Connection", "connection", "CONNECTION", "Keep-Alive", "keep-alive", "TE",
        "te", "Trailer", "Transfer-Encoding", "transfer-encoding", "Upgrade",
        "Proxy-Connection", "Proxy-Authorization", "proxy-authenticate", "PROXY-X",
        "Proxy-", NULL};
    static const char *const e2e[] = {
        "Host", "Content-Length", "Set-Cookie", "Trailers", "T", "TEx", "Connections",
        "Keep", "Upgrade-Insecure-Requests", "Proxy", "Proxyx-Foo", "X-Proxy-Foo",
        "Authorization", "", NULL};
    size_t i;
    for (i = 0; hop[i]; i++)
        if (!nw_http_is_hop(hop[i], strlen(hop[i]))) {
            fprintf(stderr, "  not hop: %s\n", hop[i]);
            CHECK(0);
        }
    for (i = 0; e2e[i]; i++)
        if (nw_http_is_hop(e2e[i], strlen(e2e[i]))) {
            fprintf(stderr, "  hop: %s\n", e2e[i]);
            CHECK(0);
        }
    /* counted, not NUL-terminated */
    CHECK(nw_http_is_hop("TE: trailers", 2));
    CHECK(!nw_http_is_hop("TE: trailers", 3));
}

UNIT_TEST(test_filter_drops_hop_fields) {
    static const char *const in[] = {
        "Host", "h",
        "Connection", "keep-alive",
        "Keep-Alive", "timeout=5",
        "TE", "trailers",
        "Trailer", "Expires",
        "Accept", "*/*",
        "Transfer-Encoding", "chunked",
        "Upgrade", "websocket",
        "Proxy-Connection", "keep-alive",
        "Proxy-Authorization", "Basic Zm9vOmJhcg==",
        "Proxy-Anything", "x",
        "proxy-authenticate", "Basic",
        "Content-Type", "text/plain",
        NULL};
    static const char *const want[] = {"Host", "h", "Accept", "*/*", "Content-Type",
                                       "text/plain", NULL};
    CHECK(filter_gives(in, NULL, want));
}

UNIT_TEST(test_filter_hop_case_insensitive) {
    static const char *const in[] = {"CONNECTION", "close", "keep-ALIVE", "1", "tE", "x",
                                     "TRANSFER-ENCODING", "gzip, chunked", "pRoXy-Foo", "y",
                                     "X-Kept", "z", NULL};
    static const char *const want[] = {"X-Kept", "z", NULL};
    CHECK(filter_gives(in, NULL, want));
}

/* Connection listing only hop-by-hop names (nginx's "keep-alive") takes
 * the short path in nw_http_filter; any other name in any Connection
 * field still removes that field, "close" included. */
UNIT_TEST(test_filter_connection_only_hop_names) {
    static const char *const ka[] = {"Server", "nginx", "Connection", "keep-alive",
                                     "Keep-Alive", "timeout=5", "ETag", "\"x\"", NULL};
    static const char *const ka_want[] = {"Server", "nginx", "ETag", "\"x\"", NULL};
    static const char *const mixed[] = {"Connection", "keep-alive", "X-A", "1",
                                        "Connection", " te , X-A", "X-B", "2", NULL};
    static const char *const mixed_want[] = {"X-B", "2", NULL};
    static const char *const cl[] = {"Close", "c", "Connection", "close", "X-C", "3", NULL};
    static const char *const cl_want[] = {"X-C", "3", NULL};
    static const char *const px[] = {"Connection", "Proxy-Foo,, ", "X-D", "4", NULL};
    static const char *const px_want[] = {"X-D", "4", NULL};
    CHECK(filter_gives(ka, NULL, ka_want));
    CHECK(filter_gives(mixed, NULL, mixed_want));
    CHECK(filter_gives(cl, NULL, cl_want));
    CHECK(filter_gives(px, NULL, px_want));
}

/* nw_strieq: ASCII case only, the whole of b, no match past a NUL. */
UNIT_TEST(test_strieq) {
    CHECK(nw_strieq("Content-Length", 14, "content-length"));
    CHECK(nw_strieq("", 0, ""));
    CHECK(!nw_strieq("", 0, "a"));
    CHECK(!nw_strieq("host", 4, "hos"));
    CHECK(!nw_strieq("hos", 3, "host"));
    CHECK(!nw_strieq("@", 1, "`")); /* differ by 0x20 but are not letters */
    CHECK(!nw_strieq("[", 1, "{"));
    CHECK(!nw_strieq("a ", 2, "a"));
    CHECK(!nw_strieq("a\0b", 3, "a"));
    CHECK(!nw_strieq("X", 1, "x\x80"));
    CHECK(nw_strieq("\xc0", 1, "\xc0"));
    CHECK(!nw_strieq("\xc0", 1, "\xe0"));
}

UNIT_TEST(test_filter_connection_listed) {
    /* several Connection fields, odd spacing, empty elements, any case */
    static const char *const in[] = {
        "Connection", " ,X-A ,, \tx-b\t,",
        "X-A", "1",
        "X-B", "2",
        "X-C", "3",
        "Connection", "X-c",
        "x-d", "4",
        "Connection", ",,,",
        "Connection", "",
        "X-D-Not", "5",
        "Connection", "\tX-D",
        "X-E", "6",
        "Connection", "x-e-not, not-x-e, x - e",
        NULL};
    static const char *const want[] = {"X-D-Not", "5", "X-E", "6", NULL};
    CHECK(filter_gives(in, NULL, want));
}

UNIT_TEST(test_filter_connection_listed_order_independent) {
    /* the Connection field may come after the fields it names */
    static const char *const in[] = {"X-Secret", "s", "Host", "h", "Connection", "close, X-SECRET",
                                     NULL};
    static const char *const want[] = {"Host", "h", NULL};
    CHECK(filter_gives(in, NULL, want));
}

UNIT_TEST(test_filter_connection_token_is_whole_element) {
    /* a name inside a token, or a token with inner spaces, is not a match */
    static const char *const in[] = {"Connection", "X-Ab, X-A B", "X-A", "1", "X-B", "2",
                                     "X-Abc", "3", NULL};
    static const char *const want[] = {"X-A", "1", "X-B", "2", "X-Abc", "3", NULL};
    CHECK(filter_gives(in, NULL, want));
}

UNIT_TEST(test_filter_drop_list) {
    static const char *const in[] = {"Host", "h", "X-Forwarded-For", "1.2.3.4", "Accept", "*/*",
                                     "x-forwarded-for", "5.6.7.8", "X-Real-IP", "9.9.9.9",
                                     "Forwarded", "for=1", NULL};
    static const char *const drop[] = {"X-FORWARDED-FOR", "x-real-ip", "forwarded", NULL};
    static const char *const want[] = {"Host", "h", "Accept", "*/*", NULL};
    static const char *const none[] = {NULL};
    static const char *const keep_all[] = {"Host", "h", "X-Forwarded-For", "1.2.3.4", "Accept",
                                           "*/*", "x-forwarded-for", "5.6.7.8", "X-Real-IP",
                                           "9.9.9.9", "Forwarded", "for=1", NULL};
    static const char *const prefix[] = {"X-Forwarded", "Hos", NULL};
    CHECK(filter_gives(in, drop, want));
    CHECK(filter_gives(in, none, keep_all));
    CHECK(filter_gives(in, NULL, keep_all));
    CHECK(filter_gives(in, prefix, keep_all)); /* names match whole, not by prefix */
}

UNIT_TEST(test_filter_keeps_order_and_multiplicity) {
    static const char *const in[] = {"Set-Cookie", "a=1; Path=/", "Connection", "close",
                                     "Vary", "Accept", "Set-Cookie", "b=2", "Vary", "Origin",
                                     "set-cookie", "c=3", "X-Empty", "", NULL};
    static const char *const want[] = {"Set-Cookie", "a=1; Path=/", "Vary", "Accept",
                                       "Set-Cookie", "b=2", "Vary", "Origin", "set-cookie",
                                       "c=3", "X-Empty", "", NULL};
    CHECK(filter_gives(in, NULL, want));
}

UNIT_TEST(test_filter_points_into_head) {
    nw_hfields_t h;
    nw_hdr_t out[4];
    nw_hf_init(&h, BIG_MAX);
    CHECK_EQ(add_field(&h, "Connection", "close"), 0);
    CHECK_EQ(add_field(&h, "A", "1"), 0);
    CHECK_EQ(nw_http_filter(&h, out, 4, NULL), 1);
    CHECK(out[0].name >= h.raw.p && out[0].name < h.raw.p + h.raw.len);
    CHECK(out[0].value >= h.raw.p && out[0].value < h.raw.p + h.raw.len);
    CHECK(hdr_is(&out[0], "A", "1"));
    nw_hf_free(&h);
}

UNIT_TEST(test_filter_capacity) {
    nw_hfields_t h;
    nw_hdr_t out[3];
    static const char *const kv[] = {"A", "1", "Connection", "close", "B", "2", "TE", "x",
                                     "C", "3", NULL};
    nw_hf_init(&h, BIG_MAX);
    /* nothing survives: cap 0 is enough */
    CHECK_EQ(add_field(&h, "Connection", "close"), 0);
    CHECK_EQ(nw_http_filter(&h, out, 0, NULL), 0);
    CHECK_EQ(nw_http_filter(&h, NULL, 0, NULL), 0);
    nw_hf_reset(&h);
    CHECK_EQ(nw_http_filter(&h, out, 0, NULL), 0); /* empty head */
    CHECK_EQ(add_fields(&h, kv), 0);
    /* three survivors: cap 3 fits exactly, anything less fails */
    CHECK_EQ(nw_http_filter(&h, out, 3, NULL), 3);
    CHECK(hdr_is(&out[0], "A", "1"));
    CHECK(hdr_is(&out[1], "B", "2"));
    CHECK(hdr_is(&out[2], "C", "3"));
    CHECK_EQ(nw_http_filter(&h, out, 2, NULL), -1);
    CHECK_EQ(nw_http_filter(&h, out, 1, NULL), -1);
    CHECK_EQ(nw_http_filter(&h, out, 0, NULL), -1);
    /* dropped fields do not count against the cap */
    {
        static const char *const drop[] = {"c", NULL};
        CHECK_EQ(nw_http_filter(&h, out, 2, drop), 2);
    }
    nw_hf_free(&h);
}

UNIT_TEST(test_filter_full_head) {
    /* NW_HTTP_MAX_FIELDS fields, half of them hop-by-hop */
    nw_hfields_t h;
    nw_hdr_t out[NW_HTTP_MAX_FIELDS];
    char v[16];
    size_t i;
    int n;
    nw_hf_init(&h, BIG_MAX);
    for (i = 0; i < NW_HTTP_MAX_FIELDS; i++) {
        snprintf(v, sizeof(v), "%zu", i);
        CHECK_EQ(add_field(&h, i % 2 ? "Keep-Alive" : "X-N", v), 0);
    }
    n = nw_http_filter(&h, out, NW_ARRAY_LEN(out), NULL);
    CHECK_EQ(n, NW_HTTP_MAX_FIELDS / 2);
    for (i = 0; i < (size_t)n; i++) {
        snprintf(v, sizeof(v), "%zu", 2 * i);
        CHECK(hdr_is(&out[i], "X-N", v));
    }
    CHECK_EQ(nw_http_filter(&h, out, (size_t)n - 1, NULL), -1);
    nw_hf_free(&h);
}

UNIT_TEST(test_conn_lists) {
    nw_hfields_t h;
    static const char *const kv[] = {"Connection", "Keep-Alive,  Upgrade ", "X-A", "1",
                                     "CONNECTION", ",x-a,", NULL};
    nw_hf_init(&h, BIG_MAX);
    CHECK(!nw_http_conn_lists(&h, "x-a", 3));
    CHECK_EQ(add_fields(&h, kv), 0);
    CHECK(nw_http_conn_lists(&h, "keep-alive", 10));
    CHECK(nw_http_conn_lists(&h, "UPGRADE", 7));
    CHECK(nw_http_conn_lists(&h, "X-A", 3));
    CHECK(nw_http_conn_lists(&h, "X-Abc", 3)); /* counted */
    CHECK(!nw_http_conn_lists(&h, "X-Abc", 5));
    CHECK(!nw_http_conn_lists(&h, "x", 1));
    CHECK(!nw_http_conn_lists(&h, "", 0));
    CHECK(!nw_http_conn_lists(&h, "1", 1)); /* values of other fields */
    nw_hf_free(&h);
}

UNIT_TEST(test_has_token) {
    nw_hfields_t h;
    static const char *const kv[] = {
        "Connection", "keep-alive, Upgrade", "Upgrade", "WebSocket",
        "TE", "  ,deflate ,\t, trailers\t", "Accept-Encoding", "gzip;q=1.0, br",
        "Transfer-Encoding", "gzip", "transfer-encoding", "chunked",
        "X-Empty", "", NULL};
    nw_hf_init(&h, BIG_MAX);
    CHECK(!nw_http_has_token(&h, "connection", "close"));
    CHECK_EQ(add_fields(&h, kv), 0);
    CHECK(nw_http_has_token(&h, "connection", "upgrade"));
    CHECK(nw_http_has_token(&h, "Connection", "KEEP-ALIVE"));
    CHECK(!nw_http_has_token(&h, "connection", "close"));
    CHECK(!nw_http_has_token(&h, "connection", "keep"));
    CHECK(!nw_http_has_token(&h, "connection", "keep-alive, upgrade"));
    CHECK(nw_http_has_token(&h, "upgrade", "websocket"));
    CHECK(nw_http_has_token(&h, "te", "trailers"));
    CHECK(nw_http_has_token(&h, "te", "deflate"));
    CHECK(!nw_http_has_token(&h, "te", ""));
    /* parameters are part of the element */
    CHECK(!nw_http_has_token(&h, "accept-encoding", "gzip"));
    CHECK(nw_http_has_token(&h, "accept-encoding", "gzip;q=1.0"));
    CHECK(nw_http_has_token(&h, "accept-encoding", "br"));
    /* the second of two same-named fields counts too */
    CHECK(nw_http_has_token(&h, "transfer-encoding", "chunked"));
    CHECK(nw_http_has_token(&h, "transfer-encoding", "gzip"));
    CHECK(!nw_http_has_token(&h, "x-empty", ""));
    CHECK(!nw_http_has_token(&h, "x-missing", "x"));
    /* the token must not be found in another field */
    CHECK(!nw_http_has_token(&h, "upgrade", "keep-alive"));
    nw_hf_free(&h);
}

/* ---- target forms -------------------------------------------------------- */

static int of_is(const char *t, int want_rc, const char *want_out) {
    const char *out = (const char *)&out; /* sentinel: must be overwritten */
    size_t out_len = (size_t)-1;
    int rc = nw_http_origin_form(t, strlen(t), &out, &out_len);
    if (rc != want_rc) {
        fprintf(stderr, "  origin_form(\"%s\") = %d, want %d\n", t, rc, want_rc);
        return 0;
    }
    if (rc < 0)
        return 1;
    if (out_len == (size_t)-1 || (out_len && (out < t || out + out_len > t + strlen(t)))) {
        fprintf(stderr, "  origin_form(\"%s\"): out not inside target\n", t);
        return 0;
    }
    if (!span_is(out, out_len, want_out)) {
        fprintf(stderr, "  origin_form(\"%s\") -> \"%.*s\", want \"%s\"\n", t, (int)out_len,
                out, want_out);
        return 0;
    }
    return 1;
}

/* nw_http_authority(t) is want (NULL: no authority). */
static int auth_is(const char *t, const char *want) {
    size_t n = 0;
    const char *a = nw_http_authority(t, strlen(t), &n);
    if (!want ? a == NULL : (a && span_is(a, n, want)))
        return 1;
    fprintf(stderr, "  authority(\"%s\") = \"%.*s\", want %s\n", t, a ? (int)n : 4,
            a ? a : "NULL", want ? want : "NULL");
    return 0;
}

UNIT_TEST(test_authority) {
    CHECK(auth_is("http://a.example:8/x?y", "a.example:8"));
    CHECK(auth_is("HTTPS://u@B.example/", "u@B.example"));
    CHECK(auth_is("http://h?q=/x", "h"));
    CHECK(auth_is("http://[::1]:80/p", "[::1]:80"));
    CHECK(auth_is("https://h", "h"));
    CHECK(auth_is("/p", NULL));
    CHECK(auth_is("//h/p", NULL));
    CHECK(auth_is("*", NULL));
    CHECK(auth_is("http:///p", NULL));
    CHECK(auth_is("h:80", NULL));
    CHECK(auth_is("ftp://h/p", NULL));
    CHECK(auth_is("", NULL));
}

UNIT_TEST(test_origin_form) {
    CHECK(of_is("/p?q", 0, "/p?q"));
    CHECK(of_is("/", 0, "/"));
    CHECK(of_is("//x", 0, "//x"));
    CHECK(of_is("*", 0, "*"));
    CHECK(of_is("http://h:1/p?q", 0, "/p?q"));
    CHECK(of_is("http://h/", 0, "/"));
    CHECK(of_is("HTTPS://h/x", 0, "/x"));
    CHECK(of_is("HtTp://user@h:8080/a/b?c=d/e", 0, "/a/b?c=d/e"));
    CHECK(of_is("https://h/p?u=http://x/y", 0, "/p?u=http://x/y"));
    CHECK(of_is("http://h", 1, ""));
    CHECK(of_is("https://h:443", 1, ""));
    CHECK(of_is("http://h?q=1", 1, "?q=1"));
    CHECK(of_is("http://h?q=/x", 1, "?q=/x"));
    CHECK(of_is("http://", -1, ""));
    CHECK(of_is("https://", -1, ""));
    CHECK(of_is("http:///p", -1, ""));
    CHECK(of_is("http://?q", -1, ""));
    CHECK(of_is("h:80", -1, ""));
    CHECK(of_is("example.com:443", -1, ""));
    CHECK(of_is("", -1, ""));
    CHECK(of_is("**", -1, ""));
    CHECK(of_is("p", -1, ""));
    CHECK(of_is("http:/h/p", -1, ""));
    CHECK(of_is("ftp://h/p", -1, ""));
    CHECK(of_is("http:", -1, ""));
    CHECK(of_is("httpx://h/p", -1, ""));
    /* counted: the length, not a NUL, ends the target */
    {
        const char *out = NULL;
        size_t n = 0;
        CHECK_EQ(nw_http_origin_form("http://h/abc", 9, &out, &n), 0);
        CHECK(span_is(out, n, "/"));
        CHECK_EQ(nw_http_origin_form("http://h/abc", 8, &out, &n), 1);
        CHECK_EQ(n, 0);
        CHECK_EQ(nw_http_origin_form("*x", 1, &out, &n), 0);
        CHECK(span_is(out, n, "*"));
        CHECK_EQ(nw_http_origin_form("http://h", 7, &out, &n), -1);
    }
}

/* ---- syntax checks ------------------------------------------------------- */

UNIT_TEST(test_token_ok) {
    static const char *const good[] = {"Host", "x-y_z", "!#$%&'*+-.^_`|~", "0", "A9z", NULL};
    static const char sep[] = "\"(),/:;<=>?@[\\]{} \t";
    char t[4];
    size_t i;
    int c;
    for (i = 0; good[i]; i++)
        CHECK(nw_http_token_ok(good[i], strlen(good[i])));
    CHECK(!nw_http_token_ok("", 0));
    CHECK(!nw_http_token_ok("Host", 0));
    for (i = 0; sep[i]; i++) {
        t[0] = 'a';
        t[1] = sep[i];
        t[2] = 'b';
        CHECK(!nw_http_token_ok(t, 3));
        CHECK(!nw_http_token_ok(t + 1, 1));
    }
    /* every byte value: exactly the RFC 9110 tchar set passes */
    for (c = 0; c < 256; c++) {
        int want = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                   (c && strchr("!#$%&'*+-.^_`|~", c) != NULL);
        t[0] = 'x';
        t[1] = (char)c;
        if (nw_http_token_ok(t, 2) != want) {
            fprintf(stderr, "  token byte 0x%02x\n", c);
            CHECK(0);
        }
    }
    CHECK(!nw_http_token_ok("Ho\0st", 5));
    CHECK(!nw_http_token_ok("Host\r\nX", 7));
}

UNIT_TEST(test_value_ok) {
    int c;
    char v[3];
    CHECK(nw_http_value_ok("", 0));
    CHECK(nw_http_value_ok("text/html; charset=utf-8", 24));
    CHECK(nw_http_value_ok("a\tb", 3));
    CHECK(nw_http_value_ok("\t", 1));
    CHECK(nw_http_value_ok(" spaced ", 8));
    CHECK(nw_http_value_ok("\x80\xff caf\xc3\xa9", 8)); /* obs-text */
    CHECK(!nw_http_value_ok("a\rb", 3));
    CHECK(!nw_http_value_ok("a\nb", 3));
    CHECK(!nw_http_value_ok("a\r\nX-Injected: 1", 16));
    CHECK(!nw_http_value_ok("a\0b", 3));
    CHECK(!nw_http_value_ok("a\x7f", 2));
    CHECK(!nw_http_value_ok("\n", 1));
    CHECK(nw_http_value_ok("ok\r\n", 2)); /* counted */
    for (c = 0; c < 256; c++) {
        int want = !((c < 0x20 && c != '\t') || c == 0x7f);
        v[0] = 'a';
        v[1] = (char)c;
        v[2] = 'b';
        if (nw_http_value_ok(v, 3) != want) {
            fprintf(stderr, "  value byte 0x%02x\n", c);
            CHECK(0);
        }
    }
}

UNIT_TEST(test_fields_ok) {
    nw_hdr_t f[3] = {{"Host", 4, "h", 1}, {"X-A", 3, "a\tb", 3}, {"X-Empty", 7, "", 0}};
    CHECK(nw_http_fields_ok(f, 3));
    CHECK(nw_http_fields_ok(f, 0));
    CHECK(nw_http_fields_ok(NULL, 0));
    f[1].value = "a\r\nEvil: 1";
    f[1].value_len = 10;
    CHECK(!nw_http_fields_ok(f, 3));
    CHECK(nw_http_fields_ok(f, 1));
    f[1].value = "ok";
    f[1].value_len = 2;
    f[2].name = "Bad Name";
    f[2].name_len = 8;
    CHECK(!nw_http_fields_ok(f, 3));
    f[2].name = "";
    f[2].name_len = 0;
    CHECK(!nw_http_fields_ok(f, 3));
    f[2].name = "X:Y";
    f[2].name_len = 3;
    CHECK(!nw_http_fields_ok(f, 3));
}

UNIT_TEST(test_parse_cl) {
    uint64_t v = 77;
    CHECK_EQ(nw_http_parse_cl("0", 1, &v), 0);
    CHECK_EQ(v, 0);
    CHECK_EQ(nw_http_parse_cl("123", 3, &v), 0);
    CHECK_EQ(v, 123);
    CHECK_EQ(nw_http_parse_cl("007", 3, &v), 0);
    CHECK_EQ(v, 7);
    CHECK_EQ(nw_http_parse_cl("1234567890123456789", 19, &v), 0);
    CHECK(v == UINT64_C(1234567890123456789));
    CHECK_EQ(nw_http_parse_cl("9999999999999999999", 19, &v), 0);
    CHECK(v == UINT64_C(9999999999999999999));
    CHECK_EQ(nw_http_parse_cl("123", 2, &v), 0); /* counted */
    CHECK_EQ(v, 12);

    v = 77;
    CHECK_EQ(nw_http_parse_cl("", 0, &v), -1);
    CHECK_EQ(nw_http_parse_cl("1a", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl("a1", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl("+1", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl("-1", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl(" 1", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl("1 ", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl("1,1", 3, &v), -1);
    CHECK_EQ(nw_http_parse_cl("0x10", 4, &v), -1);
    CHECK_EQ(nw_http_parse_cl("1\0", 2, &v), -1);
    CHECK_EQ(nw_http_parse_cl("12345678901234567890", 20, &v), -1);
    CHECK_EQ(nw_http_parse_cl("00000000000000000001", 20, &v), -1);
    CHECK_EQ(nw_http_parse_cl("18446744073709551615", 20, &v), -1);
    CHECK_EQ(v, 77); /* untouched on failure */
}

UNIT_TEST(test_reason) {
    CHECK_STR(nw_http_reason(200), "OK");
    CHECK_STR(nw_http_reason(404), "Not Found");
    CHECK_STR(nw_http_reason(502), "Bad Gateway");
    CHECK_STR(nw_http_reason(431), "Request Header Fields Too Large");
    CHECK_STR(nw_http_reason(299), "");
    CHECK_STR(nw_http_reason(0), "");
    CHECK_STR(nw_http_reason(-1), "");
}

/* ---- a real llhttp parser fed in pieces ---------------------------------- */

typedef struct {
    nw_hfields_t hf;
    int head_done, msg_done;
    char seen[2][64]; /* per message: "first|nfields|has x-only-first" */
} ctx_t;

static int cb_begin(llhttp_t *p) {
    nw_hf_reset(&((ctx_t *)p->data)->hf);
    return 0;
}

static int cb_first(llhttp_t *p, const char *at, size_t n) {
    return nw_hf_first(&((ctx_t *)p->data)->hf, at, n) == 0 ? 0 : -1;
}
static int cb_name(llhttp_t *p, const char *at, size_t n) {
    return nw_hf_name(&((ctx_t *)p->data)->hf, at, n) == 0 ? 0 : -1;
}
static int cb_value(llhttp_t *p, const char *at, size_t n) {
    return nw_hf_value(&((ctx_t *)p->data)->hf, at, n) == 0 ? 0 : -1;
}
static int cb_head(llhttp_t *p) {
    ctx_t *c = p->data;
    if (c->head_done < 2)
        snprintf(c->seen[c->head_done], sizeof(c->seen[0]), "%.*s|%zu|%d", (int)c->hf.first_len,
                 c->hf.raw.p ? c->hf.raw.p : "", c->hf.n, nw_hf_find(&c->hf, "x-only-first", 0) >= 0);
    c->head_done++;
    return 0;
}
static int cb_done(llhttp_t *p) {
    ((ctx_t *)p->data)->msg_done++;
    return 0;
}

typedef struct {
    llhttp_t p;
    llhttp_settings_t s;
    ctx_t c;
} run_t;

static void run_init(run_t *r, llhttp_type_t type, size_t max) {
    memset(r, 0, sizeof(*r));
    llhttp_settings_init(&r->s);
    if (type == HTTP_REQUEST)
        r->s.on_url = cb_first;
    else
        r->s.on_status = cb_first;
    r->s.on_message_begin = cb_begin;
    r->s.on_header_field = cb_name;
    r->s.on_header_value = cb_value;
    r->s.on_headers_complete = cb_head;
    r->s.on_message_complete = cb_done;
    llhttp_init(&r->p, type, &r->s);
    r->p.data = &r->c;
    nw_hf_init(&r->c.hf, max);
}

/* Feed msg[a..b) from a private heap copy that dies right after. */
static llhttp_errno_t run_feed(run_t *r, const char *msg, size_t a, size_t b) {
    char *copy;
    llhttp_errno_t e;
    if (llhttp_get_errno(&r->p) != HPE_OK)
        return llhttp_get_errno(&r->p);
    copy = malloc(b - a + 1);
    if (!copy)
        abort();
    memcpy(copy, msg + a, b - a);
    e = llhttp_execute(&r->p, copy, b - a);
    memset(copy, '#', b - a); /* a stale pointer would now see garbage */
    free(copy);
    return e;
}

/* Same first line and fields (byte for byte, in order)? */
static int hf_same(const nw_hfields_t *a, const nw_hfields_t *b) {
    size_t i;
    if (a->first_len != b->first_len || memcmp(a->raw.p, b->raw.p, a->first_len) != 0 ||
        a->n != b->n)
        return 0;
    for (i = 0; i < a->n; i++) {
        nw_hdr_t x, y;
        nw_hf_get(a, i, &x);
        nw_hf_get(b, i, &y);
        if (x.name_len != y.name_len || memcmp(x.name, y.name, x.name_len) != 0 ||
            x.value_len != y.value_len || (x.value_len && memcmp(x.value, y.value, x.value_len)))
            return 0;
    }
    return 1;
}

static const char sample_req[] =
    "POST http://app.example:8080/api/v1/items?sort=desc&x=%20 HTTP/1.1\r\n"
    "Host: app.example:8080\r\n"
    "User-Agent: unit/1.0 (test; +http://x)\r\n"
    "Connection: keep-alive, X-Hop-Custom\r\n"
    "Keep-Alive: timeout=5\r\n"
    "X-Hop-Custom: secret\r\n"
    "Proxy-Authorization: Basic dTpw\r\n"
    "TE: trailers\r\n"
    "Cookie: a=1\r\n"
    "Cookie: b=2\r\n"
    "X-Empty:\r\n"
    "X-Spaced: \t inner  value\r\n"
    "Content-Type: application/json\r\n"
    "Content-Length: 11\r\n"
    "\r\n"
    "{\"k\":\"v1\"}\n";

static const char *const sample_req_fields[] = {
    "Host", "app.example:8080",
    "User-Agent", "unit/1.0 (test; +http://x)",
    "Connection", "keep-alive, X-Hop-Custom",
    "Keep-Alive", "timeout=5",
    "X-Hop-Custom", "secret",
    "Proxy-Authorization", "Basic dTpw",
    "TE", "trailers",
    "Cookie", "a=1",
    "Cookie", "b=2",
    "X-Empty", "",
    "X-Spaced", "inner  value",
    "Content-Type", "application/json",
    "Content-Length", "11",
    NULL};

static const char *const sample_req_e2e[] = {
    "Host", "app.example:8080",
    "User-Agent", "unit/1.0 (test; +http://x)",
    "Cookie", "a=1",
    "Cookie", "b=2",
    "X-Empty", "",
    "X-Spaced", "inner  value",
    "Content-Type", "application/json",
    "Content-Length", "11",
    NULL};

static const char sample_resp[] =
    "HTTP/1.1 200 All Good Here\r\n"
    "Set-Cookie: sid=abc; Path=/; HttpOnly\r\n"
    "Transfer-Encoding: chunked\r\n"
    "Set-Cookie: theme=dark\r\n"
    "Connection: Vary-Me\r\n"
    "Vary-Me: x\r\n"
    "X-E:\r\n"
    "Cache-Control: no-cache\r\n"
    "\r\n"
    "5\r\nhello\r\n0\r\n\r\n";

static const char *const sample_resp_e2e[] = {
    "Set-Cookie", "sid=abc; Path=/; HttpOnly",
    "Set-Cookie", "theme=dark",
    "X-E", "",
    "Cache-Control", "no-cache",
    NULL};

/* Parse msg whole into ref and check it against the expected lists. */
static int parse_ref(run_t *ref, llhttp_type_t type, const char *msg, const char *first,
                     const char *const *fields, const char *const *e2e) {
    size_t len = strlen(msg), i;
    nw_hdr_t out[NW_HTTP_MAX_FIELDS];
    int n;
    run_init(ref, type, BIG_MAX);
    if (run_feed(ref, msg, 0, len) != HPE_OK || ref->c.head_done != 1 || ref->c.msg_done != 1)
        return 0;
    if (!span_is(ref->c.hf.raw.p, ref->c.hf.first_len, first))
        return 0;
    if (fields) {
        for (i = 0; fields[2 * i]; i++)
            if (!field_is(&ref->c.hf, i, fields[2 * i], fields[2 * i + 1])) {
                nw_hdr_t f;
                if (i < ref->c.hf.n) {
                    nw_hf_get(&ref->c.hf, i, &f);
                    fprintf(stderr, "  field %zu is [%.*s: %.*s]\n", i, (int)f.name_len, f.name,
                            (int)f.value_len, f.value);
                }
                return 0;
            }
        if (i != ref->c.hf.n)
            return 0;
    }
    n = nw_http_filter(&ref->c.hf, out, NW_ARRAY_LEN(out), NULL);
    return hdrs_are(out, n, e2e);
}

/* Every one-cut split gives the same head as the whole parse. */
static int split_all(llhttp_type_t type, const char *msg, const run_t *ref) {
    size_t len = strlen(msg), k;
    for (k = 0; k <= len; k++) {
        run_t r;
        int ok;
        run_init(&r, type, BIG_MAX);
        ok = run_feed(&r, msg, 0, k) == HPE_OK && run_feed(&r, msg, k, len) == HPE_OK &&
             r.c.head_done == 1 && r.c.msg_done == 1 && hf_same(&r.c.hf, &ref->c.hf);
        nw_hf_free(&r.c.hf);
        if (!ok) {
            fprintf(stderr, "  split at %zu differs\n", k);
            return 0;
        }
    }
    return 1;
}

UNIT_TEST(test_llhttp_request_every_split) {
    run_t ref;
    int ok = parse_ref(&ref, HTTP_REQUEST, sample_req,
                       "http://app.example:8080/api/v1/items?sort=desc&x=%20",
                       sample_req_fields, sample_req_e2e);
    if (ok)
        ok = split_all(HTTP_REQUEST, sample_req, &ref);
    nw_hf_free(&ref.c.hf);
    CHECK(ok);
}

UNIT_TEST(test_llhttp_request_two_cuts) {
    /* every pair of cuts in the head: three pieces each */
    run_t ref;
    size_t len = strlen(sample_req), head = strstr(sample_req, "\r\n\r\n") - sample_req + 4;
    size_t a, b;
    int ok = parse_ref(&ref, HTTP_REQUEST, sample_req,
                       "http://app.example:8080/api/v1/items?sort=desc&x=%20",
                       sample_req_fields, sample_req_e2e);
    for (a = 0; ok && a <= head; a += 3) {
        for (b = a; ok && b <= head; b += 2) {
            run_t r;
            run_init(&r, HTTP_REQUEST, BIG_MAX);
            ok = run_feed(&r, sample_req, 0, a) == HPE_OK &&
                 run_feed(&r, sample_req, a, b) == HPE_OK &&
                 run_feed(&r, sample_req, b, len) == HPE_OK && r.c.msg_done == 1 &&
                 hf_same(&r.c.hf, &ref.c.hf);
            nw_hf_free(&r.c.hf);
            if (!ok)
                fprintf(stderr, "  cuts at %zu,%zu differ\n", a, b);
        }
    }
    nw_hf_free(&ref.c.hf);
    CHECK(ok);
}

UNIT_TEST(test_llhttp_request_byte_at_a_time) {
    run_t ref, r;
    size_t len = strlen(sample_req), k;
    int ok = parse_ref(&ref, HTTP_REQUEST, sample_req,
                       "http://app.example:8080/api/v1/items?sort=desc&x=%20",
                       sample_req_fields, sample_req_e2e);
    run_init(&r, HTTP_REQUEST, BIG_MAX);
    for (k = 0; ok && k < len; k++)
        ok = run_feed(&r, sample_req, k, k + 1) == HPE_OK;
    ok = ok && r.c.msg_done == 1 && hf_same(&r.c.hf, &ref.c.hf);
    nw_hf_free(&r.c.hf);
    nw_hf_free(&ref.c.hf);
    CHECK(ok);
}

UNIT_TEST(test_llhttp_response_every_split) {
    run_t ref;
    int ok = parse_ref(&ref, HTTP_RESPONSE, sample_resp, "All Good Here", NULL,
                       sample_resp_e2e);
    if (ok)
        ok = split_all(HTTP_RESPONSE, sample_resp, &ref);
    nw_hf_free(&ref.c.hf);
    CHECK(ok);
}

UNIT_TEST(test_llhttp_keepalive_reset) {
    /* two requests on one connection; on_message_begin resets the head (as
     * serve and agent do), so nothing of the first leaks into the second */
    static const char two[] = "GET /one HTTP/1.1\r\nHost: a\r\nX-Only-First: 1\r\n\r\n"
                              "GET /two HTTP/1.1\r\nHost: b\r\n\r\n";
    size_t len = strlen(two), k;
    for (k = 0; k <= len; k++) {
        run_t r;
        int ok;
        run_init(&r, HTTP_REQUEST, BIG_MAX);
        ok = run_feed(&r, two, 0, k) == HPE_OK && run_feed(&r, two, k, len) == HPE_OK &&
             r.c.msg_done == 2 && r.c.head_done == 2 && strcmp(r.c.seen[0], "/one|2|1") == 0 &&
             strcmp(r.c.seen[1], "/two|1|0") == 0;
        if (!ok)
            fprintf(stderr, "  split at %zu: [%s] [%s]\n", k, r.c.seen[0], r.c.seen[1]);
        nw_hf_free(&r.c.hf);
        CHECK(ok);
    }
}

UNIT_TEST(test_llhttp_head_cap_every_split) {
    /* a cap one byte below the head's stored size fails at every split; the
     * exact size passes at every split */
    size_t len = strlen(sample_req), stored, k;
    run_t ref;
    CHECK(parse_ref(&ref, HTTP_REQUEST, sample_req,
                    "http://app.example:8080/api/v1/items?sort=desc&x=%20", sample_req_fields,
                    sample_req_e2e));
    stored = ref.c.hf.raw.len;
    nw_hf_free(&ref.c.hf);
    for (k = 0; k <= len; k++) {
        run_t r;
        llhttp_errno_t e;
        int ok;
        run_init(&r, HTTP_REQUEST, stored - 1);
        e = run_feed(&r, sample_req, 0, k);
        if (e == HPE_OK)
            e = run_feed(&r, sample_req, k, len);
        ok = e != HPE_OK && r.c.head_done == 0 && r.c.hf.raw.len <= stored - 1;
        if (!ok)
            fprintf(stderr, "  cap-1, split %zu: %s head_done=%d\n", k, llhttp_errno_name(e),
                    r.c.head_done);
        nw_hf_free(&r.c.hf);
        CHECK(ok);

        run_init(&r, HTTP_REQUEST, stored);
        ok = run_feed(&r, sample_req, 0, k) == HPE_OK &&
             run_feed(&r, sample_req, k, len) == HPE_OK && r.c.msg_done == 1;
        nw_hf_free(&r.c.hf);
        CHECK(ok);
    }
}

UNIT_TEST(test_llhttp_toomany) {
    /* NW_HTTP_MAX_FIELDS fields parse; one more fails */
    nw_sbuf_t m = {0};
    size_t i, extra;
    for (extra = 0; extra < 2; extra++) {
        run_t r;
        llhttp_errno_t e;
        m.len = 0;
        CHECK_EQ(nw_sbuf_appends(&m, "GET / HTTP/1.1\r\n"), 0);
        for (i = 0; i < NW_HTTP_MAX_FIELDS + extra; i++)
            CHECK_EQ(nw_sbuf_appendf(&m, "X-%zu: %zu\r\n", i, i), 0);
        CHECK_EQ(nw_sbuf_appends(&m, "\r\n"), 0);
        run_init(&r, HTTP_REQUEST, BIG_MAX);
        e = run_feed(&r, m.p, 0, m.len);
        if (extra == 0) {
            CHECK_EQ(e, HPE_OK);
            CHECK_EQ(r.c.hf.n, NW_HTTP_MAX_FIELDS);
            CHECK(field_is(&r.c.hf, 199, "X-199", "199"));
        } else {
            CHECK(e != HPE_OK);
            CHECK_EQ(r.c.head_done, 0);
        }
        nw_hf_free(&r.c.hf);
    }
    nw_sbuf_free(&m);
}

UNIT_TEST(test_llhttp_value_trailing_ows) {
    /* RFC 9110 5.5: a field value excludes leading and trailing whitespace.
     * llhttp strips the leading OWS but hands the trailing OWS over as part
     * of the value, so the head glue must drop it. Otherwise a valid
     * "Content-Length: 5 " is forwarded as "5 " and nw_http_parse_cl, or an
     * exact compare such as Sec-WebSocket-Version == "13", rejects it. */
    static const char msg[] = "POST /u HTTP/1.1\r\n"
                              "Host: h \r\n"
                              "Content-Length: 5 \r\n"
                              "Sec-WebSocket-Version: 13 \r\n"
                              "X-Inner: a b\t\r\n"
                              "\r\n"
                              "hello";
    run_t r;
    uint64_t cl = 0;
    nw_hdr_t f;
    char got[4][32];
    int ok_parse, ok_cl, i;
    run_init(&r, HTTP_REQUEST, BIG_MAX);
    ok_parse = run_feed(&r, msg, 0, strlen(msg)) == HPE_OK && r.c.msg_done == 1 && r.c.hf.n == 4;
    for (i = 0; i < 4; i++) {
        got[i][0] = 0;
        if (ok_parse) {
            nw_hf_get(&r.c.hf, (size_t)i, &f);
            snprintf(got[i], sizeof(got[i]), "%.*s", (int)f.value_len, f.value);
        }
    }
    ok_cl = ok_parse && nw_http_parse_cl(got[1], strlen(got[1]), &cl) == 0 && cl == 5;
    nw_hf_free(&r.c.hf);
    CHECK(ok_parse);
    CHECK_STR(got[0], "h");
    CHECK_STR(got[1], "5");
    CHECK_STR(got[2], "13");
    CHECK_STR(got[3], "a b");
    CHECK(ok_cl);
}

/* ---- head scanner ---------------------------------------------------------- */

/* Scan s in pieces of `piece` bytes; returns the scanner's final verdict
 * and, for 1, the offset just past the head. */
static int scan_pieces(const char *s, size_t piece, size_t *end, const char **why) {
    nw_headscan_t sc;
    size_t off = 0, n = strlen(s), used;
    int rc = 0;
    nw_headscan_init(&sc);
    while (off < n) {
        size_t k = n - off < piece ? n - off : piece;
        rc = nw_headscan(&sc, s + off, k, &used);
        if (rc != 0) {
            *end = off + used;
            *why = sc.why;
            return rc;
        }
        off += k;
    }
    *why = sc.why;
    return rc;
}

UNIT_TEST(test_headscan_accepts_good_heads) {
    static const char good[] = "GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\nBODY\nbare";
    const char *why;
    size_t end = 0, piece;
    for (piece = 1; piece <= sizeof(good); piece++) {
        CHECK_EQ(scan_pieces(good, piece, &end, &why), 1);
        CHECK_EQ(end, strlen("GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"));
    }
    /* RFC 9112 2.2: empty lines before the request line are ignored. */
    CHECK_EQ(scan_pieces("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 3, &end, &why), 1);
    /* A head not yet complete. */
    CHECK_EQ(scan_pieces("GET / HTTP/1.1\r\nHost: x\r\n", 5, &end, &why), 0);
}

UNIT_TEST(test_headscan_refuses_smuggling_shapes) {
    static const char *const bad[] = {
        "GET / HTTP/1.1\nHost: x\r\n\r\n",         /* bare LF after the request line */
        "GET / HTTP/1.1\r\nHost: x\n\r\n",         /* bare LF after a field */
        "GET / HTTP/1.1\r\nX-A: 1\r\n more\r\n\r\n", /* obs-fold, SP */
        "GET / HTTP/1.1\r\nX-A: 1\r\n\tmore\r\n\r\n", /* obs-fold, HTAB */
        "GET  / HTTP/1.1\r\n\r\n",                 /* double space */
        "GET /  HTTP/1.1\r\n\r\n",
        "GET /\tHTTP/1.1\r\n\r\n",                 /* tab */
        " GET / HTTP/1.1\r\n\r\n",                  /* leading space */
        "GET / HTTP/1.1 x\r\n\r\n",                 /* three parts */
        "GET /\r\n\r\n",                            /* HTTP/0.9 form */
        "GET / HTTP/1.1\r\nX-A: 1\rX\r\n\r\n",     /* bare CR */
    };
    size_t i, piece, end;
    const char *why;
    for (i = 0; i < NW_ARRAY_LEN(bad); i++)
        for (piece = 1; piece < 8; piece++) {
            if (scan_pieces(bad[i], piece, &end, &why) != -1) {
                fprintf(stderr, "  accepted: %zu (piece %zu)\n", i, piece);
                CHECK(0);
            }
            CHECK(why != NULL);
        }
}

UNIT_TEST(test_host_ok) {
    static const char *const good[] = {"", "example.com", "a-b.c:8080", "127.0.0.1:1",
                                       "[::1]", "[::1]:8000", "xn--80ak6aa92e.com", "h_1"};
    static const char *const bad[] = {"a b", "a/b", "a:", "a:99999999", "[::1", "[::1]x",
                                      "a:8o", "a@b", "a\tb", "[g::1]"};
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(good); i++)
        CHECK(nw_http_host_ok(good[i], strlen(good[i])));
    for (i = 0; i < NW_ARRAY_LEN(bad); i++) {
        if (nw_http_host_ok(bad[i], strlen(bad[i]))) {
            fprintf(stderr, "  accepted host '%s'\n", bad[i]);
            CHECK(0);
        }
    }
}

/* One Content-Length per head: a second one is refused even when equal. */
UNIT_TEST(test_take_cl) {
    int seen = 0;
    uint64_t v = 7;
    CHECK_EQ(nw_http_take_cl(&seen, "12", 2, &v), 0);
    CHECK_EQ(v, 12);
    CHECK_EQ(seen, 1);
    CHECK_EQ(nw_http_take_cl(&seen, "12", 2, &v), -1);
    seen = 0;
    CHECK_EQ(nw_http_take_cl(&seen, "1,2", 3, &v), -1);
    CHECK_EQ(seen, 0);
    CHECK_EQ(nw_http_take_cl(&seen, "+1", 2, &v), -1);
    CHECK_EQ(nw_http_take_cl(&seen, "", 0, &v), -1);
}

/* The chunk-size line matches printf's "%zx\r\n" for every size class. */
UNIT_TEST(test_chunk_line) {
    static const size_t sizes[] = {0, 1, 9, 10, 15, 16, 255, 256, 4095, 65536, 0xabcdef,
                                   (size_t)-1};
    char got[NW_HTTP_CHUNK_LINE + 1], want[64];
    size_t i, n;
    for (i = 0; i < NW_ARRAY_LEN(sizes); i++) {
        n = nw_http_chunk_line(got, sizes[i]);
        CHECK(n <= NW_HTTP_CHUNK_LINE);
        got[n] = 0;
        snprintf(want, sizeof(want), "%zx\r\n", sizes[i]);
        CHECK_STR(got, want);
    }
}

/* One header line, in the order given. */
UNIT_TEST(test_put_field) {
    nw_sbuf_t b = {0};
    nw_http_put_field(&b, "X-A", 3, "1 2", 3);
    nw_http_put_field(&b, "Empty", 5, "", 0);
    CHECK(b.p != NULL);
    CHECK_EQ(b.len, strlen("X-A: 1 2\r\nEmpty: \r\n"));
    CHECK(memcmp(b.p, "X-A: 1 2\r\nEmpty: \r\n", b.len) == 0);
    nw_sbuf_free(&b);
}

UNIT_MAIN(UNIT_CASE(test_headscan_accepts_good_heads),
          UNIT_CASE(test_headscan_refuses_smuggling_shapes), UNIT_CASE(test_host_ok),
          UNIT_CASE(test_hf_whole_fields), UNIT_CASE(test_hf_first_in_pieces),
          UNIT_CASE(test_hf_name_split), UNIT_CASE(test_hf_value_split),
          UNIT_CASE(test_hf_value_then_name_starts_field), UNIT_CASE(test_hf_empty_values),
          UNIT_CASE(test_hf_zero_length_pieces), UNIT_CASE(test_hf_value_before_name_ignored),
          UNIT_CASE(test_hf_toobig), UNIT_CASE(test_hf_toomany), UNIT_CASE(test_hf_find),
          UNIT_CASE(test_hf_reset_reuse), UNIT_CASE(test_is_hop),
          UNIT_CASE(test_filter_drops_hop_fields), UNIT_CASE(test_filter_hop_case_insensitive),
          UNIT_CASE(test_filter_connection_listed),
          UNIT_CASE(test_filter_connection_only_hop_names), UNIT_CASE(test_strieq),
          UNIT_CASE(test_filter_connection_listed_order_independent),
          UNIT_CASE(test_filter_connection_token_is_whole_element),
          UNIT_CASE(test_filter_drop_list), UNIT_CASE(test_filter_keeps_order_and_multiplicity),
          UNIT_CASE(test_filter_points_into_head), UNIT_CASE(test_filter_capacity),
          UNIT_CASE(test_filter_full_head), UNIT_CASE(test_conn_lists), UNIT_CASE(test_has_token),
          UNIT_CASE(test_origin_form), UNIT_CASE(test_authority), UNIT_CASE(test_token_ok), UNIT_CASE(test_value_ok),
          UNIT_CASE(test_fields_ok), UNIT_CASE(test_parse_cl), UNIT_CASE(test_reason),
          UNIT_CASE(test_llhttp_request_every_split), UNIT_CASE(test_llhttp_request_two_cuts),
          UNIT_CASE(test_llhttp_request_byte_at_a_time),
          UNIT_CASE(test_llhttp_response_every_split), UNIT_CASE(test_llhttp_keepalive_reset),
          UNIT_CASE(test_llhttp_head_cap_every_split), UNIT_CASE(test_llhttp_toomany),
          UNIT_CASE(test_llhttp_value_trailing_ows), UNIT_CASE(test_chunk_line), UNIT_CASE(test_take_cl),
          UNIT_CASE(test_put_field))
