/* fuzz_mux.c: libFuzzer target for the tunnel frame codec (src/wire/mux.c).
 *
 * Each input is used twice.
 *
 * 1. As one WebSocket message payload, exactly what the tunnel hands to
 *    nw_mux_decode. libFuzzer passes an exact-size heap copy and the header
 *    array is heap-allocated at exactly max_hdrs entries, so ASan flags any
 *    read past the frame or write past the array. Checked (mux.h / mux.c
 *    promise all of it):
 *    - a failed decode returns ETRUNC, EPROTO or ETOOBIG and clears every
 *      payload field (only type, flags and sid may survive); a "too many
 *      headers" ETOOBIG still carries the stream id, so the tunnel can RST
 *      that one stream;
 *    - a successful decode points only inside the input, and the matching
 *      nw_mux_pack_* re-encodes it to the same length and to fields that
 *      decode equal (pack -> decode is lossless). Every length on the wire
 *      is fixed-width and trailing bytes are refused, so the re-encoding
 *      must also equal the input byte for byte, except for the flag bits
 *      the decoder drops;
 *    - the header limit: k headers decode with max_hdrs == k and give
 *      ETOOBIG with k - 1;
 *    - an encoder given one byte too little room fails with ENOSPC and
 *      leaves the output untouched.
 *
 * 2. As arguments for an encoder (layout at enc_mode below), to cover the
 *    other direction: an encoder succeeds exactly when its arguments are in
 *    the ranges docs/protocol.md allows, never writes on failure, and what
 *    it produces decodes back to those arguments.
 *
 * Any broken invariant calls abort(), which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* abort() with a line number: the stack trace alone doesn't say which check. */
#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "fuzz_mux: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                           \
        }                                                                      \
    } while (0)

/* Byte spans compared without ever passing NULL to memcmp, which is
 * undefined even for length 0 (and UBSan says so). */
static int same(const void *a, size_t alen, const void *b, size_t blen) {
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* p[0..n) lies inside buf[0..len). Empty spans may point anywhere. */
static int inside(const void *p, size_t n, const uint8_t *buf, size_t len) {
    const uint8_t *q = p;
    return n == 0 || (q >= buf && q <= buf + len && n <= (size_t)(buf + len - q));
}

/* Field-by-field equality of two decoded frames (pointers differ, bytes
 * must not). Fields a type doesn't use are zero in both. */
static int same_frame(const nw_mux_frame_t *a, const nw_mux_frame_t *b) {
    size_t i;
    if (a->type != b->type || a->flags != b->flags || a->sid != b->sid ||
        a->status != b->status || a->value != b->value || a->last_sid != b->last_sid ||
        a->nhdrs != b->nhdrs)
        return 0;
    if (!same(a->method, a->method_len, b->method, b->method_len) ||
        !same(a->target, a->target_len, b->target, b->target_len) ||
        !same(a->reason, a->reason_len, b->reason, b->reason_len) ||
        !same(a->data, a->data_len, b->data, b->data_len))
        return 0;
    for (i = 0; i < a->nhdrs; i++)
        if (!same(a->hdrs[i].name, a->hdrs[i].name_len, b->hdrs[i].name, b->hdrs[i].name_len) ||
            !same(a->hdrs[i].value, a->hdrs[i].value_len, b->hdrs[i].value,
                  b->hdrs[i].value_len))
            return 0;
    return 1;
}

/* What decode_fail promises: nothing but type, flags and sid survives. */
static int cleared(const nw_mux_frame_t *f) {
    return f->method == NULL && f->method_len == 0 && f->target == NULL &&
           f->target_len == 0 && f->status == 0 && f->reason == NULL && f->reason_len == 0 &&
           f->hdrs == NULL && f->nhdrs == 0 && f->data == NULL && f->data_len == 0 &&
           f->value == 0 && f->last_sid == 0;
}

/* A header array of exactly n entries on the heap, so that ASan catches a
 * write at index n. malloc(0) gives a pointer with no usable bytes. */
static nw_hdr_t *hdr_array(size_t n) {
    nw_hdr_t *h = malloc(n ? n * sizeof(*h) : 1);
    if (!h)
        abort();
    return h;
}

/* Re-encode a decoded frame with the matching encoder. DATA's encoder only
 * writes the 6-byte header; the payload is the caller's, copied here when
 * it fits. Returns the encoder's result (frame length or error). */
static int repack(const nw_mux_frame_t *f, uint8_t *out, size_t cap) {
    int rc;
    switch (f->type) {
    case NW_MUX_OPEN:
        return nw_mux_pack_open(out, cap, f->sid, f->flags, f->method, f->method_len, f->target,
                                f->target_len, f->hdrs, f->nhdrs);
    case NW_MUX_HEAD:
        return nw_mux_pack_head(out, cap, f->sid, f->flags, f->status, f->reason, f->reason_len,
                                f->hdrs, f->nhdrs);
    case NW_MUX_DATA:
        rc = nw_mux_pack_data_hdr(out, cap, f->sid, f->flags);
        if (rc < 0 || cap - (size_t)rc < f->data_len)
            return rc < 0 ? rc : NW_ENOSPC;
        if (f->data_len)
            memcpy(out + rc, f->data, f->data_len);
        return rc + (int)f->data_len;
    case NW_MUX_WINDOW:
        return nw_mux_pack_window(out, cap, f->sid, f->value);
    case NW_MUX_RST:
        return nw_mux_pack_rst(out, cap, f->sid, f->value);
    default:
        return nw_mux_pack_goaway(out, cap, f->last_sid, f->value);
    }
}

/* The encoder alone, with exactly cap bytes of room: for the ENOSPC check.
 * DATA's room is for its header only, since the payload is not the
 * encoder's business. */
static int pack_only(const nw_mux_frame_t *f, uint8_t *out, size_t cap) {
    if (f->type == NW_MUX_DATA)
        return nw_mux_pack_data_hdr(out, cap, f->sid, f->flags);
    return repack(f, out, cap);
}

/* ---- mode 1: the input is a frame ---------------------------------------- */

static void decode_mode(const uint8_t *buf, size_t len) {
    nw_hdr_t *hdrs = hdr_array(NW_MUX_MAX_HDRS), *h2;
    nw_mux_frame_t f, g;
    uint8_t *out;
    size_t i, need;
    int rc, rc2;

    rc = nw_mux_decode(buf, len, &f, hdrs, NW_MUX_MAX_HDRS);
    /* Logging helpers must cope with any value the wire can carry. */
    CHECK(nw_mux_type_name(len ? buf[0] : 0) != NULL);
    CHECK(nw_mux_code_name(f.value) != NULL);
    if (rc != 0) {
        CHECK(rc == NW_ETRUNC || rc == NW_EPROTO || rc == NW_ETOOBIG);
        CHECK(cleared(&f));
        /* Too many headers in a well-formed frame: the stream is known. */
        if (rc == NW_ETOOBIG && len <= NW_MUX_MAX_FRAME)
            CHECK((f.type == NW_MUX_OPEN || f.type == NW_MUX_HEAD) && f.sid != 0);
        free(hdrs);
        return;
    }

    /* Everything the frame refers to lies inside the input. */
    CHECK(f.type >= NW_MUX_OPEN && f.type <= NW_MUX_GOAWAY);
    CHECK((f.flags & ~NW_MUX_F_END) == 0);
    CHECK((f.type == NW_MUX_GOAWAY) == (f.sid == 0));
    CHECK(inside(f.method, f.method_len, buf, len) && inside(f.target, f.target_len, buf, len) &&
          inside(f.reason, f.reason_len, buf, len) && inside(f.data, f.data_len, buf, len));
    CHECK(f.nhdrs <= NW_MUX_MAX_HDRS);
    for (i = 0; i < f.nhdrs; i++) {
        CHECK(f.hdrs[i].name_len > 0);
        CHECK(inside(f.hdrs[i].name, f.hdrs[i].name_len, buf, len) &&
              inside(f.hdrs[i].value, f.hdrs[i].value_len, buf, len));
    }

    /* Round trip: same length, same bytes but for dropped flag bits, and a
     * decode of the re-encoding equal field by field. */
    out = malloc(len);
    if (!out)
        abort();
    rc = repack(&f, out, len);
    CHECK(rc == (int)len);
    CHECK(out[0] == buf[0] && out[1] == f.flags && memcmp(out + 2, buf + 2, len - 2) == 0);
    h2 = hdr_array(NW_MUX_MAX_HDRS);
    CHECK(nw_mux_decode(out, len, &g, h2, NW_MUX_MAX_HDRS) == 0);
    CHECK(same_frame(&f, &g));
    free(h2);

    /* One byte short: ENOSPC, and the buffer is not written at all. */
    need = f.type == NW_MUX_DATA ? NW_MUX_FRAME_HDR : len;
    memset(out, 0xA5, len);
    rc = pack_only(&f, out, need - 1);
    CHECK(rc == NW_ENOSPC);
    for (i = 0; i < len; i++)
        CHECK(out[i] == 0xA5);
    free(out);

    /* The caller's header limit, at exactly the count and one below. */
    if (f.nhdrs > 0) {
        h2 = hdr_array(f.nhdrs);
        CHECK(nw_mux_decode(buf, len, &g, h2, f.nhdrs) == 0);
        CHECK(same_frame(&f, &g));
        free(h2);
        h2 = hdr_array(f.nhdrs - 1);
        rc2 = nw_mux_decode(buf, len, &g, h2, f.nhdrs - 1);
        CHECK(rc2 == NW_ETOOBIG && cleared(&g) && g.sid == f.sid && g.type == f.type);
        free(h2);
    }
    free(hdrs);
}

/* ---- mode 2: the input is encoder arguments ------------------------------ */

/* A reader over the argument bytes; reads past the end give zeros/empty. */
typedef struct {
    const uint8_t *p;
    size_t left;
} args_t;

/* An nbytes-wide big-endian number. */
static uint32_t arg_be(args_t *a, int nbytes) {
    uint32_t v = 0;
    int k;
    for (k = 0; k < nbytes; k++) {
        v = v << 8 | (a->left ? *a->p : 0);
        if (a->left)
            a->p++, a->left--;
    }
    return v;
}

/* A piece: 2-byte big-endian length (clamped to what is left), then bytes.
 * Two bytes reach every length the wire allows for a target or field. */
static const char *arg_piece(args_t *a, size_t *n) {
    const char *s;
    size_t want = arg_be(a, 2); /* not inside NW_MIN: it evaluates twice */
    *n = NW_MIN(want, a->left);
    s = (const char *)a->p;
    a->p += *n;
    a->left -= *n;
    return s;
}

/* Layout: sel(1) sid(4) flags(1) a(4) b(4), then pieces: for OPEN the
 * method, the target and name/value pairs; for HEAD the reason and pairs;
 * for DATA the rest is the payload. a is HEAD's status (low 16 bits),
 * WINDOW's increment, RST's code, GOAWAY's last stream id; b is GOAWAY's
 * code. */
static void enc_mode(const uint8_t *data, size_t size) {
    args_t a = {data, size};
    uint8_t type, flags, *out;
    uint32_t sid, va, vb;
    const char *s1 = NULL, *s2 = NULL;
    size_t n1 = 0, n2 = 0, nh = 0, i, cap, hcap, hbytes = 2;
    nw_hdr_t *hv, *hd;
    nw_mux_frame_t f;
    int rc, valid, names_ok = 1;

    if (size < 14)
        return;
    type = (uint8_t)(data[0] % 6 + 1);
    a.p++, a.left--;
    sid = arg_be(&a, 4);
    flags = (uint8_t)arg_be(&a, 1);
    va = arg_be(&a, 4);
    vb = arg_be(&a, 4);

    /* A pair costs 4 bytes of input (its two lengths), only the last one
     * may be cut short, so size / 4 + 1 entries always hold them all; with
     * inputs over 1 KB more than NW_MUX_MAX_HDRS pairs are reachable. */
    hcap = size / 4 + 1;
    hv = hdr_array(hcap);
    if (type == NW_MUX_OPEN)
        s1 = arg_piece(&a, &n1), s2 = arg_piece(&a, &n2);
    else if (type == NW_MUX_HEAD)
        s1 = arg_piece(&a, &n1);
    if (type == NW_MUX_OPEN || type == NW_MUX_HEAD) {
        while (a.left > 0 && nh < hcap) {
            hv[nh].name = arg_piece(&a, &hv[nh].name_len);
            hv[nh].value = arg_piece(&a, &hv[nh].value_len);
            names_ok &= hv[nh].name_len > 0;
            hbytes += 4 + hv[nh].name_len + hv[nh].value_len;
            nh++;
        }
    }

    /* More room than any frame from these arguments needs (names and
     * values together are at most size bytes). */
    cap = NW_MUX_FRAME_HDR + 16 + n1 + n2 + nh * 4 + size;
    out = malloc(cap);
    if (!out)
        abort();
    memset(out, 0xA5, cap);
    switch (type) {
    case NW_MUX_OPEN:
        valid = sid != 0 && n1 >= 1 && n1 <= 255 && n2 >= 1 && nh <= NW_MUX_MAX_HDRS &&
                names_ok && NW_MUX_FRAME_HDR + 1 + n1 + 2 + n2 + hbytes <= NW_MUX_MAX_FRAME;
        rc = nw_mux_pack_open(out, cap, sid, flags, s1, n1, s2, n2, hv, nh);
        break;
    case NW_MUX_HEAD:
        /* The codec allows 100..999; refusing 1xx is the stream layer's job. */
        valid = sid != 0 && (va & 0xffff) >= 100 && (va & 0xffff) <= 999 && n1 <= 255 &&
                nh <= NW_MUX_MAX_HDRS && names_ok &&
                NW_MUX_FRAME_HDR + 3 + n1 + hbytes <= NW_MUX_MAX_FRAME;
        rc = nw_mux_pack_head(out, cap, sid, flags, (uint16_t)va, s1, n1, hv, nh);
        break;
    case NW_MUX_DATA:
        /* Keeping the payload within NW_MUX_MAX_DATA is the caller's job
         * (mux.c), so a longer one is left out rather than sent. */
        if (a.left > NW_MUX_MAX_DATA)
            a.left = NW_MUX_MAX_DATA;
        valid = sid != 0;
        rc = nw_mux_pack_data_hdr(out, cap, sid, flags);
        if (rc > 0) {
            memcpy(out + rc, a.p, a.left);
            rc += (int)a.left;
        }
        break;
    case NW_MUX_WINDOW:
        valid = sid != 0 && va != 0 && va <= NW_MUX_MAX_WINDOW;
        rc = nw_mux_pack_window(out, cap, sid, va);
        break;
    case NW_MUX_RST:
        valid = sid != 0;
        rc = nw_mux_pack_rst(out, cap, sid, va);
        break;
    default:
        valid = 1;
        rc = nw_mux_pack_goaway(out, cap, va, vb);
        break;
    }
    CHECK(valid == (rc > 0));
    if (rc < 0) {
        CHECK(rc == NW_EINVAL || rc == NW_ETOOBIG);
        for (i = 0; i < cap; i++)
            CHECK(out[i] == 0xA5);
    } else {
        /* What was produced decodes back to exactly the arguments. */
        CHECK((size_t)rc <= cap && (size_t)rc <= NW_MUX_MAX_FRAME);
        hd = hdr_array(NW_MUX_MAX_HDRS);
        CHECK(nw_mux_decode(out, (size_t)rc, &f, hd, NW_MUX_MAX_HDRS) == 0);
        CHECK(f.type == type);
        CHECK(f.flags == (type <= NW_MUX_DATA ? (flags & NW_MUX_F_END) : 0));
        CHECK(f.sid == (type == NW_MUX_GOAWAY ? 0 : sid));
        switch (type) {
        case NW_MUX_OPEN:
            CHECK(same(f.method, f.method_len, s1, n1) && same(f.target, f.target_len, s2, n2));
            break;
        case NW_MUX_HEAD:
            CHECK(f.status == (uint16_t)va && same(f.reason, f.reason_len, s1, n1));
            break;
        case NW_MUX_DATA:
            CHECK(same(f.data, f.data_len, a.p, a.left));
            break;
        case NW_MUX_GOAWAY:
            CHECK(f.last_sid == va && f.value == vb);
            break;
        default:
            CHECK(f.value == va);
            break;
        }
        if (type == NW_MUX_OPEN || type == NW_MUX_HEAD) {
            CHECK(f.nhdrs == nh);
            for (i = 0; i < nh; i++)
                CHECK(same(f.hdrs[i].name, f.hdrs[i].name_len, hv[i].name, hv[i].name_len) &&
                      same(f.hdrs[i].value, f.hdrs[i].value_len, hv[i].value,
                           hv[i].value_len));
        }
        free(hd);
    }
    free(out);
    free(hv);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    decode_mode(data, size);
    enc_mode(data, size);
    return 0;
}
