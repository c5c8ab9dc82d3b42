/* fuzz_head.c: libFuzzer target for request-head parsing the way serve does
 * it: llhttp (HTTP_REQUEST, no lenient flags, compiled like the project's,
 * i.e. without -DLLHTTP_STRICT_MODE=1; see check_accumulator) with the span
 * callbacks accumulating into an nw_hfields_t (src/net/http1.c), then, once the
 * head is complete, the helpers serve's on_headers_complete applies to it and
 * the head builder pc_dispatch forwards with (nw_fwd_build, src/serve/fwd.c).
 * The length of the accumulated head picks nw_fwd_build's settings (trust
 * proxy, AUTH_TOKEN set, TLS), so each is reached.
 *
 * Input: byte 0 is a control byte, the rest is what the client sends.
 *   bits 0-6  where to split the bytes into two reads (0..127 scaled over
 *             the length), so spans reach the callbacks in pieces;
 *   bit 7     a 256-byte head limit instead of 64 KB, to reach the TOOBIG
 *             paths with short inputs.
 * Each read is a fresh heap copy freed right after llhttp_execute: if the
 * accumulator kept a pointer into a read buffer instead of copying, ASan
 * reports a use after free on the next read.
 *
 * Checked at every complete head (abort() on failure):
 *   - the accumulator's bookkeeping: raw within its limit, the start line
 *     first, fields in order, every name and value returned by nw_hf_get
 *     inside the accumulated buffer;
 *   - names llhttp accepted are made of token characters (plus the spaces
 *     llhttp 8.1 lets through, see check_accumulator), and values pass
 *     nw_http_value_ok;
 *   - nw_http_origin_form returns a suffix of the target of the promised
 *     shape ("/..." or "*" for 0; empty or "?..." for 1);
 *   - nw_hf_find returns the first field of that name, or -1 when none;
 *   - nw_http_parse_cl accepts only 1-19 digits, with their value, and a
 *     single Content-Length that llhttp accepted parses to the value llhttp
 *     saw (when it has at most 19 digits);
 *   - nw_fwd_build keeps at most every field, none of them hop-by-hop,
 *     Connection-listed or on serve's drop list (nw_fwd_drop_list), and adds
 *     one X-Forwarded-For ending with the client address, one
 *     X-Forwarded-Proto, at most one X-Forwarded-Host, and Connection and
 *     Upgrade only for an upgrade; nw_http_filter with that drop list and
 *     one slot too few fails; without the drop list it keeps at least as
 *     many;
 *   - nw_http_fields_ok agrees with nw_http_token_ok/nw_http_value_ok;
 *     nw_http_has_token on "connection" agrees with nw_http_conn_lists;
 *   - the OPEN frame serve would build from it (method, the forwarded
 *     target and fields) decodes back to the same method, target and
 *     fields.
 * Pipelined requests are parsed like serve does: the message-complete
 * callback pauses, the driver resumes at the position llhttp reports. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h>

#include "cfg.h"
#include "fwd.h"
#include "http1.h"
#include "mux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_head: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

#define SMALL_HEAD 256
#define BIG_HEAD 65536 /* serve's default --max-head */

/* nw_http_cb_* take p->data as an nw_hfields_t: it must come first. */
typedef struct {
    nw_hfields_t hf;
} head_ctx_t;

static int same(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* p[0..n) lies inside the accumulated bytes; an empty span may point at a
 * literal "" (nw_hf_get does that for empty values). */
static int in_raw(const nw_hfields_t *h, const char *p, size_t n) {
    return n == 0 ||
           (h->raw.p && p >= h->raw.p && p <= h->raw.p + h->raw.len &&
            n <= (size_t)(h->raw.p + h->raw.len - p));
}

static int is_dropped(const char *const *drop, const nw_hdr_t *f) {
    size_t k;
    for (k = 0; drop[k]; k++)
        if (nw_strieq(f->name, f->name_len, drop[k]))
            return 1;
    return 0;
}

/* A token, except that spaces are allowed and it may be empty: see the
 * comment where it is used. */
static int name_chars_ok(const char *p, size_t n) {
    size_t i;
    for (i = 0; i < n; i++)
        if (p[i] != ' ' && !nw_http_token_ok(p + i, 1))
            return 0;
    return 1;
}

static void check_accumulator(const nw_hfields_t *h) {
    size_t i, at = h->first_len;
    nw_hdr_t f;

    CHECK(h->raw.len <= h->max && h->first_len <= h->raw.len && h->n <= NW_HTTP_MAX_FIELDS);
    for (i = 0; i < h->n; i++) {
        /* Appended in order: name after the previous field, value after its
         * name; an empty value has no offset. */
        CHECK(h->f[i].no >= at && h->f[i].no + (size_t)h->f[i].nl <= h->raw.len);
        at = h->f[i].no + (size_t)h->f[i].nl;
        if (h->f[i].vl) {
            CHECK(h->f[i].vo >= at && h->f[i].vo + (size_t)h->f[i].vl <= h->raw.len);
            at = h->f[i].vo + (size_t)h->f[i].vl;
        }
        nw_hf_get(h, i, &f);
        CHECK(in_raw(h, f.name, f.name_len) && in_raw(h, f.value, f.value_len));
        CHECK(f.name_len == h->f[i].nl && f.value_len <= h->f[i].vl);
        /* What llhttp 8.1 (Debian 12) hands over, which is less than RFC
         * 9110 asks: the Makefile compiles it without
         * -DLLHTTP_STRICT_MODE=1, and then a name may hold spaces ("A B: v",
         * "Foo : v" gives "Foo ") unless it is one llhttp looks for itself
         * (Content-Length, Transfer-Encoding, Connection, ...); even strict
         * mode lets an empty name through (": v", nodejs/llhttp#257). So
         * the check is: tchars and spaces only. The empty name also makes
         * nw_mux_pack_open fail (see check_filter). */
        CHECK(name_chars_ok(f.name, f.name_len));
        /* Values never carry control bytes other than tab (an obs-fold
         * reaches us as two spans without the CRLF), so values at least
         * pass the agent's nw_http_fields_ok. */
        CHECK(nw_http_value_ok(f.value, f.value_len));
    }
}

static void check_target(int form, const char *t, size_t tlen, const char *o, size_t olen) {
    if (form < 0)
        return;
    CHECK(form == 0 || form == 1);
    /* A suffix of the target. */
    CHECK(o >= t && olen <= tlen && o + olen == t + tlen);
    if (form == 0)
        CHECK(olen > 0 && (o[0] == '/' || (olen == 1 && o[0] == '*' && tlen == 1)));
    else
        CHECK(olen == 0 || o[0] == '?');
}

/* nw_hf_find gives the first match or -1, ignoring case. */
static int check_find(const nw_hfields_t *h, const char *name) {
    int i = nw_hf_find(h, name, 0);
    size_t j, end;
    nw_hdr_t f;

    CHECK(i >= -1 && i < (int)h->n);
    end = i < 0 ? h->n : (size_t)i;
    for (j = 0; j < end; j++) {
        nw_hf_get(h, j, &f);
        CHECK(!nw_strieq(f.name, f.name_len, name));
    }
    if (i >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        CHECK(nw_strieq(f.name, f.name_len, name));
    }
    return i;
}

static void check_cl(const llhttp_t *p, const nw_hfields_t *h) {
    int i = check_find(h, "content-length"), rc;
    uint64_t cl = 0, v = 0;
    size_t k;
    nw_hdr_t f;

    if (i < 0)
        return;
    nw_hf_get(h, (size_t)i, &f);
    rc = nw_http_parse_cl(f.value, f.value_len, &cl);
    if (rc == 0) {
        CHECK(f.value_len >= 1 && f.value_len <= 19);
        for (k = 0; k < f.value_len; k++) {
            CHECK(f.value[k] >= '0' && f.value[k] <= '9');
            v = v * 10 + (uint64_t)(f.value[k] - '0');
        }
        CHECK(v == cl);
    } else {
        CHECK(rc == -1);
    }
    /* llhttp took this one Content-Length (a second is an error in strict
     * mode): our parser must read the same number. */
    if ((p->flags & F_CONTENT_LENGTH) && nw_hf_find(h, "content-length", (size_t)i + 1) < 0 &&
        f.value_len <= 19)
        CHECK(rc == 0 && cl == p->content_length);
}

/* A field serve itself adds to the forwarded head. */
static int is_added(const nw_hdr_t *f, const char *name) {
    return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0;
}

/* What nw_fwd_build adds after the kept fields. */
static void check_added(const nw_fwd_head_t *fh, size_t kept, const nw_fwd_in_t *in) {
    size_t i, xff = 0, proto = 0, host = 0, conn = 0, upg = 0, hostf = 0;
    for (i = kept; i < fh->n; i++) {
        const nw_hdr_t *f = &fh->hdrs[i];
        if (is_added(f, "X-Forwarded-For")) {
            xff++;
            CHECK(f->value_len >= in->iplen &&
                  memcmp(f->value + f->value_len - in->iplen, in->ip, in->iplen) == 0);
        } else if (is_added(f, "X-Forwarded-Proto")) {
            proto++;
        } else if (is_added(f, "X-Forwarded-Host")) {
            host++;
        } else if (is_added(f, "Host")) {
            hostf++; /* an absolute-form target's authority, in place of Host */
            CHECK(in->authority && same(f->value, f->value_len, in->authority, in->alen));
        } else if (is_added(f, "Connection")) {
            conn++;
            CHECK(same(f->value, f->value_len, "Upgrade", 7));
        } else {
            CHECK(is_added(f, "Upgrade"));
            upg++;
        }
    }
    CHECK(xff == 1 && proto == 1 && host <= 1 && conn == upg && upg <= 1);
    CHECK(hostf == (in->authority != NULL));
    CHECK(in->upgrade || upg == 0);
}

/* Build the forwarded head as pc_dispatch does, then what serve does with
 * the result. */
static void check_filter(const llhttp_t *p, const nw_hfields_t *h) {
    nw_hdr_t out2[NW_HTTP_MAX_FIELDS], *dh, *out;
    const char *method = llhttp_method_name((llhttp_method_t)p->method), *tgt;
    const char *drop[NW_FWD_MAX_DROP];
    nw_fwd_in_t in = {"192.0.2.7", 9, 0, 0, 0, 0, 0, 0, NULL, 0};
    nw_fwd_head_t *fh = malloc(sizeof(*fh));
    uint8_t *frame;
    size_t i, cap, kept, tlen;
    int n, all_ok = 1, rc, bad = 0;
    nw_mux_frame_t fr;

    if (!fh)
        abort();
    in.trust = h->raw.len & 1;
    in.auth_token = (h->raw.len >> 1) & 1;
    in.https = (h->raw.len >> 2) & 1;
    in.upgrade = p->upgrade;
    in.authority = nw_http_authority(h->raw.p ? h->raw.p : "", h->first_len, &in.alen);
    nw_fwd_drop_list(&in, drop);
    CHECK(nw_fwd_build(h, &in, fh) == 0);
    out = fh->hdrs;
    n = nw_http_filter(h, out2, NW_HTTP_MAX_FIELDS, drop);
    CHECK(n >= 0 && (size_t)n <= h->n && (size_t)n <= fh->n);
    kept = (size_t)n;
    for (i = 0; i < kept; i++) {
        CHECK(in_raw(h, out[i].name, out[i].name_len) && in_raw(h, out[i].value, out[i].value_len));
        CHECK(!nw_http_is_hop(out[i].name, out[i].name_len));
        CHECK(!nw_http_conn_lists(h, out[i].name, out[i].name_len));
        CHECK(!is_dropped(drop, &out[i]));
        all_ok &= nw_http_token_ok(out[i].name, out[i].name_len) &&
                  nw_http_value_ok(out[i].value, out[i].value_len);
    }
    check_added(fh, kept, &in);
    CHECK(nw_http_fields_ok(out, kept) == all_ok);
    if (n > 0)
        CHECK(nw_http_filter(h, out2, (size_t)n - 1, drop) == -1);
    CHECK(nw_http_filter(h, out2, NW_HTTP_MAX_FIELDS, NULL) >= n);

    /* The OPEN frame, from the target in origin form serve forwards. */
    tgt = fh->target;
    tlen = fh->tlen;
    CHECK(tlen == 0 || tgt[0] == '/' || (tlen == 1 && tgt[0] == '*'));
    cap = 64 + strlen(method) + tlen + h->raw.len + 4 * fh->n + 256;
    for (i = kept; i < fh->n; i++)
        cap += fh->hdrs[i].value_len;
    frame = malloc(cap);
    if (!frame)
        abort();
    rc = nw_mux_pack_open(frame, cap, 1, NW_MUX_F_END, method, strlen(method), tgt, tlen, out,
                          fh->n);
    /* The buffer is big enough, so the encoder may refuse only what the wire
     * can't carry: an empty target or name (the latter is what llhttp 8.1
     * lets through, above), or a target or field wider than 16 bits
     * (possible only with heads over 64 KB, i.e. -max_len above that). */
    for (i = 0; i < fh->n; i++)
        bad |= out[i].name_len == 0 || out[i].name_len > 0xffff || out[i].value_len > 0xffff;
    CHECK((rc > 0) == (tlen > 0 && tlen <= 0xffff && !bad));
    if (rc > 0) {
        dh = malloc(NW_MUX_MAX_HDRS * sizeof(*dh));
        if (!dh)
            abort();
        CHECK(nw_mux_decode(frame, (size_t)rc, &fr, dh, NW_MUX_MAX_HDRS) == 0);
        CHECK(fr.type == NW_MUX_OPEN && fr.sid == 1 && fr.flags == NW_MUX_F_END);
        CHECK(same(fr.method, fr.method_len, method, strlen(method)));
        CHECK(same(fr.target, fr.target_len, tgt, tlen));
        CHECK(fr.nhdrs == fh->n);
        for (i = 0; i < fh->n; i++)
            CHECK(same(fr.hdrs[i].name, fr.hdrs[i].name_len, out[i].name, out[i].name_len) &&
                  same(fr.hdrs[i].value, fr.hdrs[i].value_len, out[i].value,
                       out[i].value_len));
        free(dh);
    }
    free(frame);
    nw_fwd_free(fh);
    free(fh);
}

static int on_message_begin(llhttp_t *p) {
    nw_hf_reset(&((head_ctx_t *)p->data)->hf);
    return 0;
}

/* Mirrors serve's on_headers_complete closely enough that the same heads
 * are refused (-1), and tunnel/upgrade requests end the parse (2). */
static int on_headers_complete(llhttp_t *p) {
    const nw_hfields_t *h = &((head_ctx_t *)p->data)->hf;
    const char *t = h->raw.p ? h->raw.p : "", *target = NULL;
    size_t tlen = 0, plen;
    int form, host;

    check_accumulator(h);
    form = nw_http_origin_form(t, h->first_len, &target, &tlen);
    check_target(form, t, h->first_len, target, tlen);
    host = check_find(h, "host");
    check_cl(p, h);
    /* The same question asked two ways must get the same answer. */
    CHECK(nw_http_has_token(h, "connection", "close") == nw_http_conn_lists(h, "close", 5));
    CHECK(nw_http_has_token(h, "connection", "upgrade") == nw_http_conn_lists(h, "upgrade", 7));
    (void)nw_http_has_token(h, "upgrade", "websocket");
    (void)nw_http_has_token(h, "expect", "100-continue");
    if (form < 0)
        return -1;
    check_filter(p, h);
    if ((p->http_major == 1 && p->http_minor >= 1 && host < 0) ||
        (host >= 0 && nw_hf_find(h, "host", (size_t)host + 1) >= 0))
        return -1;
    for (plen = 0; plen < tlen && target[plen] != '?'; plen++)
        ;
    if ((form == 0 && nw_strieq(target, plen, NW_TUNNEL_PATH)) || p->upgrade)
        return 2;
    return 0;
}

/* Hold pipelined requests, as serve does until it has answered. */
static int on_message_complete(llhttp_t *p) {
    (void)p;
    return HPE_PAUSED;
}

/* One read. Returns 0 to go on, -1 once the parser is done (error,
 * upgrade): serve stops reading then too. */
static int feed(llhttp_t *p, const uint8_t *bytes, size_t n) {
    char *buf = malloc(n ? n : 1);
    const char *at, *end;
    llhttp_errno_t e;
    int rc = 0;

    if (!buf)
        abort();
    if (n)
        memcpy(buf, bytes, n);
    at = buf;
    end = buf + n;
    for (;;) {
        e = llhttp_execute(p, at, (size_t)(end - at));
        if (e != HPE_PAUSED) {
            rc = e == HPE_OK ? 0 : -1;
            break;
        }
        /* A request is complete: go on right after it. */
        at = llhttp_get_error_pos(p);
        CHECK(at >= buf && at <= end);
        llhttp_resume(p);
        if (at == end)
            break;
    }
    free(buf);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static llhttp_settings_t settings;
    static int ready;
    head_ctx_t ctx;
    llhttp_t parser;
    size_t n, split;

    if (size == 0)
        return 0;
    if (!ready) {
        llhttp_settings_init(&settings);
        settings.on_message_begin = on_message_begin;
        settings.on_url = nw_http_cb_first;
        settings.on_header_field = nw_http_cb_name;
        settings.on_header_value = nw_http_cb_value;
        settings.on_headers_complete = on_headers_complete;
        settings.on_message_complete = on_message_complete;
        ready = 1;
    }
    n = size - 1;
    split = (size_t)(data[0] & 0x7f) * n / 127;
    nw_hf_init(&ctx.hf, data[0] & 0x80 ? SMALL_HEAD : BIG_HEAD);
    llhttp_init(&parser, HTTP_REQUEST, &settings);
    parser.data = &ctx;
    if (feed(&parser, data + 1, split) == 0 && feed(&parser, data + 1 + split, n - split) == 0)
        (void)llhttp_finish(&parser); /* the client closed */
    nw_hf_free(&ctx.hf);
    return 0;
}
