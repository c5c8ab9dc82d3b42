/* test_mux.c: the frame codec against docs/protocol.md.
 *
 * Frames under test are copied to the very end of a global array (at_end),
 * so one byte read or written past a frame lands in ASan's redzone after the
 * global: the sanitizer, not luck, proves the decoder stays in bounds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux.h"
#include "unit.h"

/* ---- helpers ------------------------------------------------------------- */

static uint8_t arena[NW_MUX_MAX_FRAME + 64];
static nw_hdr_t g_hdrs[1024];
static nw_mux_frame_t g_f;
static char big[65536]; /* filler for long fields; its content doesn't matter */

static uint8_t *at_end(size_t n) {
    return arena + sizeof(arena) - n;
}

/* Decode a copy of p[0..n) that ends exactly where the arena ends. */
static int dec(const uint8_t *p, size_t n, size_t max_hdrs) {
    uint8_t *d = at_end(n);
    if (n)
        memmove(d, p, n);
    return nw_mux_decode(d, n, &g_f, g_hdrs, max_hdrs);
}

/* A frame builder for hand-made (often hostile) input. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} fb_t;

static void fb_u8(fb_t *w, unsigned v) {
    w->b[w->n++] = (uint8_t)v;
}
static void fb_u16(fb_t *w, unsigned v) {
    nw_put16(w->b + w->n, (uint16_t)v);
    w->n += 2;
}
static void fb_u32(fb_t *w, uint32_t v) {
    nw_put32(w->b + w->n, v);
    w->n += 4;
}
static void fb_mem(fb_t *w, const char *s, size_t n) {
    memcpy(w->b + w->n, s, n);
    w->n += n;
}
static void fb_str8(fb_t *w, const char *s) {
    fb_u8(w, (unsigned)strlen(s));
    fb_mem(w, s, strlen(s));
}
static void fb_str16(fb_t *w, const char *s) {
    fb_u16(w, (unsigned)strlen(s));
    fb_mem(w, s, strlen(s));
}
static void fb_start(fb_t *w, uint8_t type, uint8_t flags, uint32_t sid) {
    w->n = 0;
    fb_u8(w, type);
    fb_u8(w, flags);
    fb_u32(w, sid);
}
static int fb_dec(const fb_t *w) {
    return dec(w->b, w->n, NW_ARRAY_LEN(g_hdrs));
}

static int mem_is(const void *p, size_t n, const char *s) {
    return n == strlen(s) && (n == 0 || memcmp(p, s, n) == 0);
}

static int hdr_is(const nw_hdr_t *h, const char *name, const char *value) {
    return mem_is(h->name, h->name_len, name) && mem_is(h->value, h->value_len, value);
}

#define H(n, v) {(n), sizeof(n) - 1, (v), sizeof(v) - 1}

/* Headers with empty values, repeated names and non-text bytes. */
static const nw_hdr_t req_hdrs[] = {
    H("Host", "example.com"), H("X-Empty", ""), H("Set-Cookie", "a=1"),
    H("Set-Cookie", "b=2"),   H("X-Bin", "\x00\xff\r"), H("X-Empty", ""),
};

/* Re-encode a decoded frame; the round-trip half of the fuzz loop. */
static int reencode(const nw_mux_frame_t *f, uint8_t *out, size_t cap) {
    int rc;
    switch (f->type) {
    case NW_MUX_OPEN:
        return nw_mux_pack_open(out, cap, f->sid, f->flags, f->method, f->method_len, f->target,
                                f->target_len, f->hdrs, f->nhdrs);
    case NW_MUX_HEAD:
        return nw_mux_pack_head(out, cap, f->sid, f->flags, f->status, f->reason,
                                f->reason_len, f->hdrs, f->nhdrs);
    case NW_MUX_DATA:
        rc = nw_mux_pack_data_hdr(out, cap, f->sid, f->flags);
        if (rc < 0)
            return rc;
        if (cap - (size_t)rc < f->data_len)
            return NW_ENOSPC;
        if (f->data_len)
            memcpy(out + rc, f->data, f->data_len);
        return rc + (int)f->data_len;
    case NW_MUX_WINDOW:
        return nw_mux_pack_window(out, cap, f->sid, f->value);
    case NW_MUX_RST:
        return nw_mux_pack_rst(out, cap, f->sid, f->value);
    case NW_MUX_GOAWAY:
        return nw_mux_pack_goaway(out, cap, f->last_sid, f->value);
    }
    return NW_EINVAL;
}

/* ---- names --------------------------------------------------------------- */

UNIT_TEST(test_names) {
    CHECK_STR(nw_mux_type_name(NW_MUX_OPEN), "OPEN");
    CHECK_STR(nw_mux_type_name(NW_MUX_HEAD), "HEAD");
    CHECK_STR(nw_mux_type_name(NW_MUX_DATA), "DATA");
    CHECK_STR(nw_mux_type_name(NW_MUX_WINDOW), "WINDOW");
    CHECK_STR(nw_mux_type_name(NW_MUX_RST), "RST");
    CHECK_STR(nw_mux_type_name(NW_MUX_GOAWAY), "GOAWAY");
    CHECK_STR(nw_mux_type_name(0), "unknown");
    CHECK_STR(nw_mux_type_name(7), "unknown");
    CHECK_STR(nw_mux_type_name(255), "unknown");
    CHECK_STR(nw_mux_code_name(0), "NO_ERROR");
    CHECK_STR(nw_mux_code_name(NW_RST_CANCEL), "CANCEL");
    CHECK_STR(nw_mux_code_name(NW_RST_CONNECT), "CONNECT");
    CHECK_STR(nw_mux_code_name(NW_RST_UPSTREAM), "UPSTREAM");
    CHECK_STR(nw_mux_code_name(NW_RST_PROTOCOL), "PROTOCOL");
    CHECK_STR(nw_mux_code_name(NW_RST_FLOW), "FLOW");
    CHECK_STR(nw_mux_code_name(NW_RST_REFUSED), "REFUSED");
    CHECK_STR(nw_mux_code_name(NW_RST_INTERNAL), "INTERNAL");
    CHECK_STR(nw_mux_code_name(NW_RST_TIMEOUT), "TIMEOUT");
    CHECK_STR(nw_mux_code_name(NW_RST_TOOBIG), "TOOBIG");
    CHECK_STR(nw_mux_code_name(10), "unknown");
    CHECK_STR(nw_mux_code_name(0xffffffffu), "unknown");
}

/* ---- round trips --------------------------------------------------------- */

UNIT_TEST(test_roundtrip_open) {
    static uint8_t buf[1024];
    size_t i;
    int n = nw_mux_pack_open(buf, sizeof(buf), 0x80000001u, NW_MUX_F_END, "PATCH", 5,
                             "/p?q=1&r", 8, req_hdrs, NW_ARRAY_LEN(req_hdrs));
    CHECK(n > 0);
    CHECK_EQ(dec(buf, (size_t)n, NW_MUX_MAX_HDRS), 0);
    CHECK_EQ(g_f.type, NW_MUX_OPEN);
    CHECK_EQ(g_f.flags, NW_MUX_F_END);
    CHECK_EQ(g_f.sid, 0x80000001u);
    CHECK(mem_is(g_f.method, g_f.method_len, "PATCH"));
    CHECK(mem_is(g_f.target, g_f.target_len, "/p?q=1&r"));
    CHECK(g_f.hdrs == g_hdrs);
    CHECK_EQ(g_f.nhdrs, NW_ARRAY_LEN(req_hdrs));
    for (i = 0; i < g_f.nhdrs; i++) {
        CHECK_EQ(g_f.hdrs[i].name_len, req_hdrs[i].name_len);
        CHECK_EQ(g_f.hdrs[i].value_len, req_hdrs[i].value_len);
        CHECK(memcmp(g_f.hdrs[i].name, req_hdrs[i].name, req_hdrs[i].name_len) == 0);
        CHECK(req_hdrs[i].value_len == 0 ||
              memcmp(g_f.hdrs[i].value, req_hdrs[i].value, req_hdrs[i].value_len) == 0);
    }

    /* No headers, no END, and NULL header array allowed when there are none. */
    n = nw_mux_pack_open(buf, sizeof(buf), 1, 0, "GET", 3, "/", 1, NULL, 0);
    CHECK_EQ(n, 6 + 1 + 3 + 2 + 1 + 2);
    CHECK_EQ(nw_mux_decode(buf, (size_t)n, &g_f, NULL, 0), 0);
    CHECK_EQ(g_f.flags, 0);
    CHECK_EQ(g_f.nhdrs, 0);
    CHECK(mem_is(g_f.target, g_f.target_len, "/"));
}

UNIT_TEST(test_roundtrip_head) {
    static uint8_t buf[1024];
    int n = nw_mux_pack_head(buf, sizeof(buf), 3, 0, 404, "Not Found", 9, req_hdrs + 1, 4);
    CHECK(n > 0);
    CHECK_EQ(dec(buf, (size_t)n, 4), 0);
    CHECK_EQ(g_f.type, NW_MUX_HEAD);
    CHECK_EQ(g_f.flags, 0);
    CHECK_EQ(g_f.sid, 3);
    CHECK_EQ(g_f.status, 404);
    CHECK(mem_is(g_f.reason, g_f.reason_len, "Not Found"));
    CHECK_EQ(g_f.nhdrs, 4);
    CHECK(hdr_is(&g_f.hdrs[0], "X-Empty", ""));
    CHECK(hdr_is(&g_f.hdrs[1], "Set-Cookie", "a=1"));
    CHECK(hdr_is(&g_f.hdrs[2], "Set-Cookie", "b=2"));
    CHECK_EQ(g_f.hdrs[3].value_len, 3);
    CHECK(memcmp(g_f.hdrs[3].value, "\x00\xff\r", 3) == 0);

    /* Empty reason (NULL pointer), END, extreme statuses. */
    n = nw_mux_pack_head(buf, sizeof(buf), 0xffffffffu, NW_MUX_F_END, 100, NULL, 0, NULL, 0);
    CHECK_EQ(n, 6 + 2 + 1 + 2);
    CHECK_EQ(dec(buf, (size_t)n, 0), 0);
    CHECK_EQ(g_f.sid, 0xffffffffu);
    CHECK_EQ(g_f.flags, NW_MUX_F_END);
    CHECK_EQ(g_f.status, 100);
    CHECK_EQ(g_f.reason_len, 0);
    n = nw_mux_pack_head(buf, sizeof(buf), 1, 0, 999, big, 255, NULL, 0);
    CHECK(n > 0);
    CHECK_EQ(dec(buf, (size_t)n, 0), 0);
    CHECK_EQ(g_f.status, 999);
    CHECK_EQ(g_f.reason_len, 255);
}

UNIT_TEST(test_roundtrip_data) {
    static uint8_t buf[NW_MUX_FRAME_HDR + NW_MUX_MAX_DATA];
    int n = nw_mux_pack_data_hdr(buf, sizeof(buf), 9, NW_MUX_F_END);
    CHECK_EQ(n, NW_MUX_FRAME_HDR);
    CHECK_EQ(dec(buf, 6, 0), 0); /* empty DATA with END is allowed */
    CHECK_EQ(g_f.type, NW_MUX_DATA);
    CHECK_EQ(g_f.flags, NW_MUX_F_END);
    CHECK_EQ(g_f.sid, 9);
    CHECK_EQ(g_f.data_len, 0);

    CHECK_EQ(nw_mux_pack_data_hdr(buf, sizeof(buf), 2, 0), NW_MUX_FRAME_HDR);
    memcpy(buf + 6, big, NW_MUX_MAX_DATA);
    buf[6] = 0; /* binary payload */
    CHECK_EQ(dec(buf, sizeof(buf), 0), 0);
    CHECK_EQ(g_f.flags, 0);
    CHECK_EQ(g_f.data_len, NW_MUX_MAX_DATA);
    CHECK(memcmp(g_f.data, buf + 6, NW_MUX_MAX_DATA) == 0);
}

UNIT_TEST(test_roundtrip_small) {
    uint8_t buf[32];
    CHECK_EQ(nw_mux_pack_window(buf, sizeof(buf), 5, 1), 10);
    CHECK_EQ(dec(buf, 10, 0), 0);
    CHECK_EQ(g_f.type, NW_MUX_WINDOW);
    CHECK_EQ(g_f.sid, 5);
    CHECK_EQ(g_f.value, 1);
    CHECK_EQ(nw_mux_pack_window(buf, sizeof(buf), 5, NW_MUX_MAX_WINDOW), 10);
    CHECK_EQ(dec(buf, 10, 0), 0);
    CHECK_EQ(g_f.value, NW_MUX_MAX_WINDOW);

    CHECK_EQ(nw_mux_pack_rst(buf, sizeof(buf), 77, NW_RST_TIMEOUT), 10);
    CHECK_EQ(dec(buf, 10, 0), 0);
    CHECK_EQ(g_f.type, NW_MUX_RST);
    CHECK_EQ(g_f.sid, 77);
    CHECK_EQ(g_f.value, NW_RST_TIMEOUT);
    /* Unknown codes pass the codec; the tunnel decides what they mean. */
    CHECK_EQ(nw_mux_pack_rst(buf, sizeof(buf), 1, 0xdeadbeefu), 10);
    CHECK_EQ(dec(buf, 10, 0), 0);
    CHECK_EQ(g_f.value, 0xdeadbeefu);

    CHECK_EQ(nw_mux_pack_goaway(buf, sizeof(buf), 0x12345678u, NW_RST_INTERNAL), 14);
    CHECK_EQ(dec(buf, 14, 0), 0);
    CHECK_EQ(g_f.type, NW_MUX_GOAWAY);
    CHECK_EQ(g_f.sid, 0);
    CHECK_EQ(g_f.last_sid, 0x12345678u);
    CHECK_EQ(g_f.value, NW_RST_INTERNAL);
    CHECK_EQ(nw_mux_pack_goaway(buf, sizeof(buf), 0, 0), 14);
    CHECK_EQ(dec(buf, 14, 0), 0);
    CHECK_EQ(g_f.last_sid, 0);
    CHECK_EQ(g_f.value, 0);
}

/* Reserved flag bits are sent as 0 and ignored on receipt; END only has a
 * meaning on OPEN, HEAD and DATA. */
UNIT_TEST(test_flags) {
    uint8_t buf[32];
    CHECK_EQ(nw_mux_pack_data_hdr(buf, sizeof(buf), 1, 0xff), 6);
    CHECK_EQ(buf[1], NW_MUX_F_END);
    buf[1] = 0xfe;
    CHECK_EQ(dec(buf, 6, 0), 0);
    CHECK_EQ(g_f.flags, 0);
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 1, 0x80, "GET", 3, "/", 1, NULL, 0), 15);
    CHECK_EQ(buf[1], 0);
    CHECK_EQ(nw_mux_pack_window(buf, sizeof(buf), 1, 1), 10);
    buf[1] = 0xff;
    CHECK_EQ(dec(buf, 10, 0), 0);
    CHECK_EQ(g_f.flags, 0);
}

/* An OPEN of exactly NW_MUX_MAX_FRAME bytes is fine both ways; one byte more
 * is refused both ways. */
UNIT_TEST(test_max_frame) {
    static uint8_t buf[NW_MUX_MAX_FRAME + 1];
    nw_hdr_t h[8];
    size_t base = 6 + 1 + 3 + 2 + 1 + 2, left = NW_MUX_MAX_FRAME - base, nh = 0;
    while (left > 0) {
        size_t v = NW_MIN(left - 5, (size_t)65535);
        h[nh].name = "x";
        h[nh].name_len = 1;
        h[nh].value = big;
        h[nh].value_len = v;
        left -= 5 + v;
        nh++;
    }
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 1, 0, "GET", 3, "/", 1, h, nh),
             NW_MUX_MAX_FRAME);
    CHECK_EQ(dec(buf, NW_MUX_MAX_FRAME, 8), 0);
    CHECK_EQ(g_f.nhdrs, nh);
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 1, 0, "GET", 3, "/a", 2, h, nh), NW_ETOOBIG);
    /* The decoder refuses on size alone, before looking at the bytes. */
    memset(buf, 0, sizeof(buf));
    CHECK_EQ(nw_mux_decode(buf, sizeof(buf), &g_f, g_hdrs, 8), NW_ETOOBIG);
    CHECK_EQ(nw_mux_decode(buf, (size_t)-1, &g_f, g_hdrs, 8), NW_ETOOBIG);
}

/* ---- docs/protocol.md section 6 ------------------------------------------ */

static char doc[256 * 1024];

static long read_doc(void) {
    static const char *const paths[] = {"docs/protocol.md", "../../docs/protocol.md"};
    size_t i, n;
    for (i = 0; i < NW_ARRAY_LEN(paths); i++) {
        FILE *fp = fopen(paths[i], "rb");
        if (!fp)
            continue;
        n = fread(doc, 1, sizeof(doc) - 1, fp);
        fclose(fp);
        if (n == sizeof(doc) - 1)
            return -1; /* suspiciously large: refuse rather than truncate */
        doc[n] = 0;
        return (long)n;
    }
    fprintf(stderr, "  cannot open docs/protocol.md: %s\n", strerror(errno));
    return -1;
}

/* Fails the example: prints why and returns -1 from the checker. */
#define REQ(cond, why)                                                     \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "  example \"%s\": %s\n", desc, why);          \
            return -1;                                                     \
        }                                                                  \
    } while (0)

static int parse_u32(const char *s, size_t n, uint32_t *v) {
    uint64_t x = 0;
    size_t i;
    if (n == 0 || n > 10)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(s[i] - '0');
    }
    if (x > 0xffffffffu)
        return -1;
    *v = (uint32_t)x;
    return 0;
}

static int starts(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* "`GET /a` with `Host: x` and `Accept: text/html`": the start line (method and
 * target for OPEN, status and reason for HEAD), then every header in order. */
static int check_head_phrase(const char *desc, const char *s, const nw_mux_frame_t *f) {
    const char *items[32], *ends[32], *sp;
    size_t nitems = 0, i;
    uint32_t status;

    while ((s = strchr(s, '`')) != NULL) {
        const char *e = strchr(s + 1, '`');
        REQ(e != NULL, "unbalanced backquote");
        REQ(nitems < NW_ARRAY_LEN(items), "too many quoted items");
        items[nitems] = s + 1;
        ends[nitems++] = e;
        s = e + 1;
    }
    REQ(nitems >= 1, "no start line");
    sp = memchr(items[0], ' ', (size_t)(ends[0] - items[0]));
    if (f->type == NW_MUX_OPEN) {
        REQ(sp != NULL, "OPEN start line needs `METHOD target`");
        REQ((size_t)(sp - items[0]) == f->method_len &&
                memcmp(items[0], f->method, f->method_len) == 0,
            "method differs");
        REQ((size_t)(ends[0] - sp - 1) == f->target_len &&
                memcmp(sp + 1, f->target, f->target_len) == 0,
            "target differs");
    } else if (f->type == NW_MUX_HEAD) {
        const char *rs = sp ? sp + 1 : ends[0];
        REQ(parse_u32(items[0], (size_t)((sp ? sp : ends[0]) - items[0]), &status) == 0,
            "bad status in description");
        REQ(status == f->status, "status differs");
        REQ((size_t)(ends[0] - rs) == f->reason_len &&
                (f->reason_len == 0 || memcmp(rs, f->reason, f->reason_len) == 0),
            "reason differs");
    } else {
        REQ(0, "a quoted start line only fits OPEN or HEAD");
    }
    REQ(nitems - 1 == f->nhdrs, "header count differs");
    for (i = 1; i < nitems; i++) {
        const nw_hdr_t *h = &f->hdrs[i - 1];
        const char *colon = strstr(items[i], ": ");
        REQ(colon != NULL && colon < ends[i], "header not written as `Name: value`");
        REQ((size_t)(colon - items[i]) == h->name_len &&
                memcmp(items[i], h->name, h->name_len) == 0,
            "header name differs");
        REQ((size_t)(ends[i] - colon - 2) == h->value_len &&
                (h->value_len == 0 || memcmp(colon + 2, h->value, h->value_len) == 0),
            "header value differs");
    }
    return 0;
}

/* Checks a decoded frame against its description, e.g. "DATA, stream 1, END,
 * body "hi"". Every phrase must be understood and every frame must say its
 * stream and its type-specific fields, so the prose can't drift either. */
static int check_example(const char *desc, const nw_mux_frame_t *f) {
    char buf[512], *tok, *p;
    int saw_end = 0, saw_sid = 0, saw_value = 0, saw_last = 0, saw_body = 0, saw_head = 0;
    uint32_t v, c;
    char quote = 0;

    REQ(strlen(desc) < sizeof(buf), "description too long");
    memcpy(buf, desc, strlen(desc) + 1);
    /* Split at commas that are not inside `...` or "...". */
    for (p = buf; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '`' || *p == '"') {
            quote = *p;
        } else if (*p == ',') {
            *p = '\n';
        }
    }
    for (tok = strtok(buf, "\n"); tok; tok = strtok(NULL, "\n")) {
        while (*tok == ' ')
            tok++;
        if (tok == buf) {
            REQ(strcmp(tok, nw_mux_type_name(f->type)) == 0, "type differs");
        } else if (strcmp(tok, "END") == 0) {
            saw_end = 1;
        } else if (starts(tok, "stream ")) {
            REQ(parse_u32(tok + 7, strlen(tok + 7), &v) == 0, "bad stream number");
            REQ(v == f->sid, "stream id differs");
            saw_sid = 1;
        } else if (starts(tok, "last stream ")) {
            REQ(f->type == NW_MUX_GOAWAY, "last stream on a non-GOAWAY");
            REQ(parse_u32(tok + 12, strlen(tok + 12), &v) == 0, "bad last stream");
            REQ(v == f->last_sid, "last stream differs");
            saw_last = 1;
        } else if (starts(tok, "increment ")) {
            REQ(f->type == NW_MUX_WINDOW, "increment on a non-WINDOW");
            REQ(parse_u32(tok + 10, strlen(tok + 10), &v) == 0, "bad increment");
            REQ(v == f->value, "increment differs");
            saw_value = 1;
        } else if (strcmp(tok, "graceful") == 0) {
            REQ(f->type == NW_MUX_GOAWAY, "graceful on a non-GOAWAY");
            REQ(f->value == 0, "code is not 0 (graceful)");
            saw_value = 1;
        } else if (starts(tok, "body \"")) {
            size_t n = strlen(tok + 6);
            REQ(f->type == NW_MUX_DATA, "body on a non-DATA");
            REQ(n > 0 && tok[6 + n - 1] == '"', "unterminated body");
            REQ(n - 1 == f->data_len && memcmp(tok + 6, f->data, n - 1) == 0,
                "body differs");
            saw_body = 1;
        } else if (tok[0] == '`') {
            if (check_head_phrase(desc, tok, f) < 0)
                return -1;
            saw_head = 1;
        } else {
            /* The last possibility: a code name, e.g. CANCEL. */
            for (c = 1; c <= NW_RST_TOOBIG; c++)
                if (strcmp(tok, nw_mux_code_name(c)) == 0)
                    break;
            REQ(c <= NW_RST_TOOBIG, "phrase not understood by the test");
            REQ(f->type == NW_MUX_RST || f->type == NW_MUX_GOAWAY, "code on wrong type");
            REQ(f->value == c, "code differs");
            saw_value = 1;
        }
    }
    REQ(saw_end == ((f->flags & NW_MUX_F_END) != 0), "END flag differs from description");
    switch (f->type) {
    case NW_MUX_OPEN:
    case NW_MUX_HEAD:
        REQ(saw_sid && saw_head, "stream and head must be described");
        break;
    case NW_MUX_DATA:
        REQ(saw_sid && (saw_body || f->data_len == 0), "stream and body must be described");
        break;
    case NW_MUX_WINDOW:
    case NW_MUX_RST:
        REQ(saw_sid && saw_value, "stream and value must be described");
        break;
    default:
        REQ(saw_last && saw_value, "last stream and code must be described");
        break;
    }
    return 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int is_space(char c) {
    return c == ' ' || c == '\n' || c == '\r' || c == '\t';
}

/* Two-digit hex bytes separated by white space, nothing else. */
static long parse_hex(const char *s, const char *end, uint8_t *out, size_t cap) {
    size_t n = 0;
    while (s < end) {
        if (is_space(*s)) {
            s++;
            continue;
        }
        if (end - s < 2 || n == cap || hexval(s[0]) < 0 || hexval(s[1]) < 0 ||
            (end - s > 2 && !is_space(s[2])))
            return -1;
        out[n++] = (uint8_t)(hexval(s[0]) << 4 | hexval(s[1]));
        s += 2;
    }
    return (long)n;
}

UNIT_TEST(test_doc_examples) {
    const char *sec, *sec_end, *p;
    size_t examples = 0;
    CHECK(read_doc() > 0);
    sec = strstr(doc, "\n## 6. Examples");
    CHECK(sec != NULL);
    sec++;
    sec_end = strstr(sec, "\n## ");
    if (!sec_end)
        sec_end = doc + strlen(doc);

    for (p = sec; (p = strstr(p, "```")) != NULL && p < sec_end;) {
        const char *body, *close, *ls, *le;
        char desc[512];
        uint8_t bytes[2048];
        long n;

        /* The description is the last non-empty line before the fence. */
        le = p - 1;
        while (le > sec && (*le == '\n' || *le == ' '))
            le--;
        ls = le;
        while (ls > sec && ls[-1] != '\n')
            ls--;
        CHECK(le > ls && (size_t)(le - ls) < sizeof(desc));
        memcpy(desc, ls, (size_t)(le - ls + 1));
        desc[le - ls + 1] = 0;
        CHECK(desc[strlen(desc) - 1] == ':');
        desc[strlen(desc) - 1] = 0;

        body = strchr(p, '\n');
        CHECK(body != NULL);
        close = strstr(body, "```");
        CHECK(close != NULL && close < sec_end);
        n = parse_hex(body, close, bytes, sizeof(bytes));
        if (n < 0)
            fprintf(stderr, "  example \"%s\": not hex\n", desc);
        CHECK(n > 0);
        if (dec(bytes, (size_t)n, NW_ARRAY_LEN(g_hdrs)) != 0)
            fprintf(stderr, "  example \"%s\": does not decode\n", desc);
        CHECK_EQ(dec(bytes, (size_t)n, NW_ARRAY_LEN(g_hdrs)), 0);
        CHECK_EQ(check_example(desc, &g_f), 0);
        examples++;
        p = close + 3;
    }
    CHECK(examples >= 6);
}

/* ---- hostile input ------------------------------------------------------- */

/* Every proper prefix of a valid frame is truncated, never anything worse. */
UNIT_TEST(test_truncation) {
    static uint8_t open[512], head[512];
    size_t i;
    int no = nw_mux_pack_open(open, sizeof(open), 1, 0, "GET", 3, "/x?y", 4, req_hdrs,
                              NW_ARRAY_LEN(req_hdrs));
    int nh = nw_mux_pack_head(head, sizeof(head), 1, 0, 200, "OK", 2, req_hdrs,
                              NW_ARRAY_LEN(req_hdrs));
    CHECK(no > 0 && nh > 0);
    for (i = 0; i < (size_t)no; i++)
        CHECK_EQ(dec(open, i, NW_MUX_MAX_HDRS), NW_ETRUNC);
    for (i = 0; i < (size_t)nh; i++)
        CHECK_EQ(dec(head, i, NW_MUX_MAX_HDRS), NW_ETRUNC);
    CHECK_EQ(dec(open, (size_t)no, NW_MUX_MAX_HDRS), 0);
    CHECK_EQ(dec(head, (size_t)nh, NW_MUX_MAX_HDRS), 0);

    /* The fixed-size frames, one byte short. */
    CHECK_EQ(nw_mux_pack_window(open, sizeof(open), 1, 1), 10);
    CHECK_EQ(dec(open, 9, 0), NW_ETRUNC);
    CHECK_EQ(nw_mux_pack_rst(open, sizeof(open), 1, 1), 10);
    CHECK_EQ(dec(open, 9, 0), NW_ETRUNC);
    CHECK_EQ(nw_mux_pack_goaway(open, sizeof(open), 1, 0), 14);
    CHECK_EQ(dec(open, 13, 0), NW_ETRUNC);
    CHECK_EQ(dec(open, 10, 0), NW_ETRUNC);
    CHECK_EQ(nw_mux_decode(NULL, 0, &g_f, NULL, 0), NW_ETRUNC);
}

UNIT_TEST(test_trailing) {
    static uint8_t buf[512];
    int n, k;
    for (k = 0; k < 5; k++) {
        switch (k) {
        case 0:
            n = nw_mux_pack_open(buf, sizeof(buf), 1, 0, "GET", 3, "/", 1, req_hdrs, 2);
            break;
        case 1:
            n = nw_mux_pack_head(buf, sizeof(buf), 1, 0, 204, "", 0, NULL, 0);
            break;
        case 2:
            n = nw_mux_pack_window(buf, sizeof(buf), 1, 100);
            break;
        case 3:
            n = nw_mux_pack_rst(buf, sizeof(buf), 1, NW_RST_CANCEL);
            break;
        default:
            n = nw_mux_pack_goaway(buf, sizeof(buf), 3, 0);
            break;
        }
        CHECK(n > 0);
        buf[n] = 0;
        CHECK_EQ(dec(buf, (size_t)n + 1, NW_MUX_MAX_HDRS), NW_EPROTO);
        CHECK_EQ(g_f.nhdrs, 0);
        CHECK(g_f.method == NULL && g_f.reason == NULL && g_f.hdrs == NULL);
    }
}

UNIT_TEST(test_hostile_header) {
    fb_t w;
    unsigned t;
    for (t = 0; t < NW_MUX_FRAME_HDR; t++) {
        memset(w.b, 0, sizeof(w.b));
        w.b[0] = NW_MUX_GOAWAY;
        CHECK_EQ(dec(w.b, t, 0), NW_ETRUNC);
    }
    /* Unknown types, even with a payload that would fit a known one. */
    for (t = 0; t < 256; t++) {
        if (t >= NW_MUX_OPEN && t <= NW_MUX_GOAWAY)
            continue;
        fb_start(&w, (uint8_t)t, 0, 1);
        fb_u32(&w, 1);
        CHECK_EQ(fb_dec(&w), NW_EPROTO);
        CHECK_EQ(g_f.type, 0);
    }
    /* Stream id 0 is only for GOAWAY, and GOAWAY only has 0. */
    fb_start(&w, NW_MUX_OPEN, 0, 0);
    fb_str8(&w, "GET");
    fb_str16(&w, "/");
    fb_u16(&w, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_HEAD, 0, 0);
    fb_u16(&w, 200);
    fb_str8(&w, "OK");
    fb_u16(&w, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_DATA, 0, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_WINDOW, 0, 0);
    fb_u32(&w, 1);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_RST, 0, 0);
    fb_u32(&w, 1);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_GOAWAY, 0, 1);
    fb_u32(&w, 0);
    fb_u32(&w, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_GOAWAY, 0, 0x80000000u);
    fb_u32(&w, 0);
    fb_u32(&w, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
}

UNIT_TEST(test_hostile_open) {
    fb_t w;
    /* Method length 0. */
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_str8(&w, "");
    fb_str16(&w, "/");
    fb_u16(&w, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    /* Target length 0. */
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_str8(&w, "GET");
    fb_str16(&w, "");
    fb_u16(&w, 0);
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    /* Header name length 0, even with a value. */
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_str8(&w, "GET");
    fb_str16(&w, "/");
    fb_u16(&w, 1);
    fb_str16(&w, "");
    fb_str16(&w, "v");
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    /* Lengths that point past the end. */
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_u8(&w, 255);
    fb_mem(&w, "GET", 3);
    CHECK_EQ(fb_dec(&w), NW_ETRUNC);
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_str8(&w, "GET");
    fb_u16(&w, 0xffff);
    fb_mem(&w, "/", 1);
    CHECK_EQ(fb_dec(&w), NW_ETRUNC);
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_str8(&w, "GET");
    fb_str16(&w, "/");
    fb_u16(&w, 2);
    fb_str16(&w, "a");
    fb_str16(&w, "b");
    CHECK_EQ(fb_dec(&w), NW_ETRUNC); /* second header missing */
    fb_start(&w, NW_MUX_OPEN, 0, 1);
    fb_str8(&w, "GET");
    fb_str16(&w, "/");
    fb_u16(&w, 1);
    fb_str16(&w, "a");
    fb_u16(&w, 0xffff);
    CHECK_EQ(fb_dec(&w), NW_ETRUNC); /* value longer than the frame */
}

UNIT_TEST(test_hostile_head) {
    static const unsigned bad[] = {0, 1, 99, 1000, 0x8000, 0xffff};
    fb_t w;
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(bad); i++) {
        fb_start(&w, NW_MUX_HEAD, 0, 1);
        fb_u16(&w, bad[i]);
        fb_str8(&w, "X");
        fb_u16(&w, 0);
        CHECK_EQ(fb_dec(&w), NW_EPROTO);
    }
    fb_start(&w, NW_MUX_HEAD, 0, 1);
    fb_u16(&w, 200);
    fb_str8(&w, "");
    fb_u16(&w, 1);
    fb_str16(&w, "");
    fb_str16(&w, "");
    CHECK_EQ(fb_dec(&w), NW_EPROTO);
    fb_start(&w, NW_MUX_HEAD, 0, 1);
    fb_u16(&w, 200);
    fb_u8(&w, 3);
    fb_mem(&w, "OK", 2);
    CHECK_EQ(fb_dec(&w), NW_ETRUNC);
}

UNIT_TEST(test_hostile_values) {
    static uint8_t buf[NW_MUX_FRAME_HDR + NW_MUX_MAX_DATA + 1];
    static const uint32_t bad_incr[] = {0, 0x80000000u, 0xffffffffu};
    fb_t w;
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(bad_incr); i++) {
        fb_start(&w, NW_MUX_WINDOW, 0, 1);
        fb_u32(&w, bad_incr[i]);
        CHECK_EQ(fb_dec(&w), NW_EPROTO);
    }
    /* A DATA payload one byte over the limit. */
    CHECK_EQ(nw_mux_pack_data_hdr(buf, sizeof(buf), 1, 0), 6);
    memset(buf + 6, 'd', NW_MUX_MAX_DATA + 1);
    CHECK_EQ(dec(buf, sizeof(buf), 0), NW_EPROTO);
    CHECK_EQ(dec(buf, sizeof(buf) - 1, 0), 0);
}

/* Too many headers is NW_ETOOBIG, reported only for an otherwise valid frame
 * and with type and stream kept so the tunnel can reset just that stream. */
UNIT_TEST(test_too_many_hdrs) {
    static uint8_t buf[1024];
    fb_t w;
    unsigned i;
    int n = nw_mux_pack_open(buf, sizeof(buf), 42, 0, "GET", 3, "/", 1, req_hdrs, 3);
    CHECK(n > 0);
    CHECK_EQ(dec(buf, (size_t)n, 3), 0);
    CHECK_EQ(dec(buf, (size_t)n, 2), NW_ETOOBIG);
    CHECK_EQ(g_f.type, NW_MUX_OPEN);
    CHECK_EQ(g_f.sid, 42);
    CHECK_EQ(g_f.nhdrs, 0);
    CHECK_EQ(dec(buf, (size_t)n, 0), NW_ETOOBIG);
    /* A later malformation still wins: it says the peer is broken. */
    buf[n] = 0;
    CHECK_EQ(dec(buf, (size_t)n + 1, 2), NW_EPROTO);
    CHECK_EQ(dec(buf, (size_t)n - 1, 2), NW_ETRUNC);

    n = nw_mux_pack_head(buf, sizeof(buf), 43, 0, 200, "OK", 2, req_hdrs, 3);
    CHECK(n > 0);
    CHECK_EQ(dec(buf, (size_t)n, 1), NW_ETOOBIG);
    CHECK_EQ(g_f.type, NW_MUX_HEAD);
    CHECK_EQ(g_f.sid, 43);

    /* 257 headers exceed the wire range whatever the caller's capacity. */
    fb_start(&w, NW_MUX_HEAD, 0, 1);
    fb_u16(&w, 200);
    fb_str8(&w, "");
    fb_u16(&w, NW_MUX_MAX_HDRS + 1);
    for (i = 0; i <= NW_MUX_MAX_HDRS; i++) {
        fb_str16(&w, "a");
        fb_str16(&w, "");
    }
    CHECK_EQ(dec(w.b, w.n, NW_ARRAY_LEN(g_hdrs)), NW_ETOOBIG);
    /* Exactly 256 is fine. */
    w.b[6 + 2 + 1] = 1;
    w.b[6 + 2 + 2] = 0;
    w.n -= 5;
    CHECK_EQ(dec(w.b, w.n, NW_ARRAY_LEN(g_hdrs)), 0);
    CHECK_EQ(g_f.nhdrs, NW_MUX_MAX_HDRS);
}

/* ---- encoders ------------------------------------------------------------ */

/* Packs frame kind k into out[0..cap); kinds cover every encoder. */
static int pack_kind(int k, uint8_t *out, size_t cap) {
    switch (k) {
    case 0:
        return nw_mux_pack_open(out, cap, 1, NW_MUX_F_END, "GET", 3, "/index.html", 11,
                                req_hdrs, NW_ARRAY_LEN(req_hdrs));
    case 1:
        return nw_mux_pack_head(out, cap, 1, 0, 200, "OK", 2, req_hdrs,
                                NW_ARRAY_LEN(req_hdrs));
    case 2:
        return nw_mux_pack_data_hdr(out, cap, 1, 0);
    case 3:
        return nw_mux_pack_window(out, cap, 1, 4096);
    case 4:
        return nw_mux_pack_rst(out, cap, 1, NW_RST_REFUSED);
    default:
        return nw_mux_pack_goaway(out, cap, 9, 0);
    }
}

/* Below the needed size every encoder says NW_ENOSPC and writes nothing; the
 * output sits at the arena's end so a write past cap trips ASan. */
UNIT_TEST(test_encoder_nospc) {
    int k, need, rc;
    size_t cap, i;
    for (k = 0; k < 6; k++) {
        need = pack_kind(k, arena, sizeof(arena));
        CHECK(need > 0);
        for (cap = 0; cap < (size_t)need; cap++) {
            uint8_t *out = at_end(cap);
            memset(out, 0xaa, cap);
            rc = pack_kind(k, out, cap);
            CHECK_EQ(rc, NW_ENOSPC);
            for (i = 0; i < cap; i++)
                CHECK_EQ(out[i], 0xaa);
        }
        CHECK_EQ(pack_kind(k, at_end((size_t)need), (size_t)need), need);
    }
}

UNIT_TEST(test_encoder_limits) {
    static uint8_t buf[512];
    nw_hdr_t h = {"a", 1, "b", 1};
    nw_hdr_t many[NW_MUX_MAX_HDRS + 1];
    size_t i;
    for (i = 0; i < NW_ARRAY_LEN(many); i++)
        many[i] = h;

    /* Zero stream ids and values that are never valid. */
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 0, 0, "GET", 3, "/", 1, NULL, 0), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_head(buf, sizeof(buf), 0, 0, 200, "", 0, NULL, 0), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_data_hdr(buf, sizeof(buf), 0, 0), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_window(buf, sizeof(buf), 0, 1), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_rst(buf, sizeof(buf), 0, 1), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 1, 0, "", 0, "/", 1, NULL, 0), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 1, 0, "GET", 3, "", 0, NULL, 0), NW_EINVAL);
    h.name_len = 0;
    CHECK_EQ(nw_mux_pack_open(buf, sizeof(buf), 1, 0, "GET", 3, "/", 1, &h, 1), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_head(buf, sizeof(buf), 1, 0, 200, "", 0, &h, 1), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_head(buf, sizeof(buf), 1, 0, 99, "", 0, NULL, 0), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_head(buf, sizeof(buf), 1, 0, 1000, "", 0, NULL, 0), NW_EINVAL);
    CHECK_EQ(nw_mux_pack_window(buf, sizeof(buf), 1, 0), NW_EINVAL);

    /* Fields wider than the wire allows; checked before capacity. */
    CHECK_EQ(nw_mux_pack_open(buf, 0, 1, 0, big, 256, "/", 1, NULL, 0), NW_ETOOBIG);
    CHECK_EQ(nw_mux_pack_open(buf, 0, 1, 0, "GET", 3, big, 65536, NULL, 0), NW_ETOOBIG);
    h.name = big;
    h.name_len = 65536;
    CHECK_EQ(nw_mux_pack_open(buf, 0, 1, 0, "GET", 3, "/", 1, &h, 1), NW_ETOOBIG);
    h.name_len = 1;
    h.value = big;
    h.value_len = 65536;
    CHECK_EQ(nw_mux_pack_head(buf, 0, 1, 0, 200, "", 0, &h, 1), NW_ETOOBIG);
    CHECK_EQ(nw_mux_pack_head(buf, 0, 1, 0, 200, big, 256, NULL, 0), NW_ETOOBIG);
    CHECK_EQ(nw_mux_pack_open(buf, 0, 1, 0, "GET", 3, "/", 1, many, NW_MUX_MAX_HDRS + 1),
             NW_ETOOBIG);
    CHECK_EQ(nw_mux_pack_head(buf, 0, 1, 0, 200, "", 0, many, NW_MUX_MAX_HDRS + 1),
             NW_ETOOBIG);
    CHECK_EQ(nw_mux_pack_head(buf, 0, 1, 0, 200, "", 0, many, NW_MUX_MAX_HDRS), NW_ENOSPC);
    CHECK_EQ(nw_mux_pack_window(buf, 0, 1, NW_MUX_MAX_WINDOW + 1), NW_ETOOBIG);
    /* Widest legal fields are accepted. */
    CHECK(nw_mux_pack_open(arena, sizeof(arena), 1, 0, big, 255, big, 65535, NULL, 0) > 0);
    h.value_len = 65535;
    CHECK(nw_mux_pack_head(arena, sizeof(arena), 1, 0, 200, big, 255, &h, 1) > 0);
}

/* ---- fuzz ---------------------------------------------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint32_t xorshift(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 32);
}

/* Mutates valid frames at random. Nothing may crash; a frame that decodes
 * must re-encode to the same bytes, up to the flag bits a receiver drops.
 * NW_ETOOBIG must only ever mean "too many headers for this caller". */
UNIT_TEST(test_fuzz) {
    static uint8_t seeds[8][512], work[1024], canon[1024], out[1024];
    static const uint8_t special[] = {0, 1, 2, 0x7f, 0x80, 0xfe, 0xff};
    static const size_t caps[] = {0, 1, 2, 3, NW_MUX_MAX_HDRS};
    size_t seed_len[8], nseeds = 0, len, i, ok = 0, k;
    int n, rc;
    long iter;

    for (k = 0; k < 6; k++) {
        n = pack_kind((int)k, seeds[nseeds], sizeof(seeds[0]));
        CHECK(n > 0);
        seed_len[nseeds++] = (size_t)n;
    }
    n = nw_mux_pack_data_hdr(seeds[nseeds], sizeof(seeds[0]), 3, NW_MUX_F_END);
    memcpy(seeds[nseeds] + n, "hello", 5);
    seed_len[nseeds++] = (size_t)n + 5;
    n = nw_mux_pack_head(seeds[nseeds], sizeof(seeds[0]), 1, 0, 301, "", 0, req_hdrs + 1, 1);
    CHECK(n > 0);
    seed_len[nseeds++] = (size_t)n;

    for (iter = 0; iter < 200000; iter++) {
        unsigned muts = 1 + xorshift() % 4, m;
        size_t s = xorshift() % nseeds, max_hdrs = caps[xorshift() % NW_ARRAY_LEN(caps)];
        len = seed_len[s];
        memcpy(work, seeds[s], len);
        for (m = 0; m < muts; m++) {
            size_t at = len ? xorshift() % len : 0, cnt = 1 + xorshift() % 8;
            switch (xorshift() % 7) {
            case 0:
                if (len)
                    work[at] ^= (uint8_t)(1u << (xorshift() % 8));
                break;
            case 1:
                if (len)
                    work[at] = (uint8_t)xorshift();
                break;
            case 2:
                if (len)
                    work[at] = special[xorshift() % sizeof(special)];
                break;
            case 3:
                len = len ? xorshift() % len : 0;
                break;
            case 4: /* append */
                for (i = 0; i < cnt && len < 600; i++)
                    work[len++] = (uint8_t)xorshift();
                break;
            case 5: /* delete */
                cnt = NW_MIN(cnt, len - at);
                memmove(work + at, work + at + cnt, len - at - cnt);
                len -= cnt;
                break;
            default: /* insert */
                if (len + cnt > 600)
                    break;
                memmove(work + at + cnt, work + at, len - at);
                for (i = 0; i < cnt; i++)
                    work[at + i] = (uint8_t)xorshift();
                len += cnt;
                break;
            }
        }

        rc = dec(work, len, max_hdrs);
        CHECK(rc == 0 || rc == NW_ETRUNC || rc == NW_EPROTO || rc == NW_ETOOBIG);
        if (rc == NW_ETOOBIG) {
            CHECK(g_f.type == NW_MUX_OPEN || g_f.type == NW_MUX_HEAD);
            rc = dec(work, len, NW_ARRAY_LEN(g_hdrs));
            CHECK(rc == 0 || rc == NW_ETOOBIG);
            continue;
        }
        if (rc != 0)
            continue;
        ok++;
        memcpy(canon, work, len);
        canon[1] = g_f.type <= NW_MUX_DATA ? (uint8_t)(canon[1] & NW_MUX_F_END) : 0;
        n = reencode(&g_f, out, len);
        CHECK_EQ(n, (long long)len);
        CHECK(memcmp(out, canon, len) == 0);
    }
    /* Guard against a fuzzer that only ever exercises the error paths. */
    CHECK(ok > 20000);
}

UNIT_MAIN(UNIT_CASE(test_names), UNIT_CASE(test_roundtrip_open), UNIT_CASE(test_roundtrip_head),
          UNIT_CASE(test_roundtrip_data), UNIT_CASE(test_roundtrip_small), UNIT_CASE(test_flags),
          UNIT_CASE(test_max_frame), UNIT_CASE(test_doc_examples), UNIT_CASE(test_truncation),
          UNIT_CASE(test_trailing), UNIT_CASE(test_hostile_header),
          UNIT_CASE(test_hostile_open), UNIT_CASE(test_hostile_head),
          UNIT_CASE(test_hostile_values), UNIT_CASE(test_too_many_hdrs),
          UNIT_CASE(test_encoder_nospc), UNIT_CASE(test_encoder_limits), UNIT_CASE(test_fuzz))
