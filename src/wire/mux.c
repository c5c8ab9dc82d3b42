/* mux.c: pack and unpack natwrp tunnel frames (docs/protocol.md, section 2).
 *
 * The codec is pure: no I/O, no allocation, no libuv. One frame is exactly one
 * WebSocket message, so the decoder is handed a whole frame and must consume
 * every byte of it. Input comes from the peer and is hostile until proven
 * otherwise: every length is compared with what is left before anything is
 * read, and no field is trusted to stay inside the buffer.
 *
 * Encoders validate everything before writing anything, so a failed call
 * leaves the output buffer untouched, and they refuse to produce any frame
 * the decoder would reject. That keeps pack -> decode a lossless round trip. */
#include "mux.h"

/* ---- decoding ------------------------------------------------------------ */

/* A read cursor over the payload; 'left' is all that may ever be read. */
typedef struct {
    const uint8_t *p;
    size_t left;
} rd_t;

static int take(rd_t *r, size_t n, const uint8_t **out) {
    if (r->left < n)
        return NW_ETRUNC;
    *out = r->p;
    r->p += n;
    r->left -= n;
    return 0;
}

static int take8(rd_t *r, size_t *v) {
    const uint8_t *p;
    int rc = take(r, 1, &p);
    if (rc == 0)
        *v = p[0];
    return rc;
}

static int take16(rd_t *r, size_t *v) {
    const uint8_t *p;
    int rc = take(r, 2, &p);
    if (rc == 0)
        *v = nw_get16(p);
    return rc;
}

static int take32(rd_t *r, uint32_t *v) {
    const uint8_t *p;
    int rc = take(r, 4, &p);
    if (rc == 0)
        *v = nw_get32(p);
    return rc;
}

/* A string whose length was already read: n bytes, returned as chars. */
static int take_str(rd_t *r, size_t n, const char **s) {
    const uint8_t *p;
    int rc = take(r, n, &p);
    if (rc == 0)
        *s = (const char *)p;
    return rc;
}

/* The header block shared by OPEN and HEAD. Every field is walked even past
 * the caller's limit so that NW_ETOOBIG is only reported for an otherwise
 * well-formed frame: the tunnel can then answer with RST TOOBIG on that one
 * stream instead of treating it as a broken peer. */
static int decode_hdrs(rd_t *r, nw_mux_frame_t *f, nw_hdr_t *hdrs, size_t max_hdrs,
                       int *too_many) {
    size_t count, i, limit = NW_MIN(max_hdrs, (size_t)NW_MUX_MAX_HDRS);
    int rc;

    if ((rc = take16(r, &count)) < 0)
        return rc;
    for (i = 0; i < count; i++) {
        nw_hdr_t h;
        if ((rc = take16(r, &h.name_len)) < 0)
            return rc;
        if (h.name_len == 0)
            return NW_EPROTO;
        if ((rc = take_str(r, h.name_len, &h.name)) < 0 ||
            (rc = take16(r, &h.value_len)) < 0 ||
            (rc = take_str(r, h.value_len, &h.value)) < 0)
            return rc;
        if (i < limit)
            hdrs[i] = h;
    }
    *too_many = count > limit;
    f->hdrs = hdrs;
    f->nhdrs = *too_many ? 0 : count;
    return 0;
}

static int decode_open(rd_t *r, nw_mux_frame_t *f, nw_hdr_t *hdrs, size_t max_hdrs,
                       int *too_many) {
    int rc;

    if ((rc = take8(r, &f->method_len)) < 0)
        return rc;
    if (f->method_len == 0)
        return NW_EPROTO;
    if ((rc = take_str(r, f->method_len, &f->method)) < 0 ||
        (rc = take16(r, &f->target_len)) < 0)
        return rc;
    if (f->target_len == 0)
        return NW_EPROTO;
    if ((rc = take_str(r, f->target_len, &f->target)) < 0)
        return rc;
    return decode_hdrs(r, f, hdrs, max_hdrs, too_many);
}

static int decode_head(rd_t *r, nw_mux_frame_t *f, nw_hdr_t *hdrs, size_t max_hdrs,
                       int *too_many) {
    size_t status;
    int rc;

    if ((rc = take16(r, &status)) < 0)
        return rc;
    if (status < 100 || status > 999)
        return NW_EPROTO;
    f->status = (uint16_t)status;
    if ((rc = take8(r, &f->reason_len)) < 0 ||
        (rc = take_str(r, f->reason_len, &f->reason)) < 0)
        return rc;
    return decode_hdrs(r, f, hdrs, max_hdrs, too_many);
}

/* The payload is all that follows the header, so DATA can't be truncated. */
static int decode_data(rd_t *r, nw_mux_frame_t *f) {
    if (r->left > NW_MUX_MAX_DATA)
        return NW_EPROTO;
    f->data_len = r->left;
    return take(r, r->left, &f->data);
}

static int decode_window(rd_t *r, nw_mux_frame_t *f) {
    int rc = take32(r, &f->value);
    if (rc < 0)
        return rc;
    return f->value == 0 || f->value > NW_MUX_MAX_WINDOW ? NW_EPROTO : 0;
}

/* Codes are not checked against the known list: an unknown RST or GOAWAY
 * code still ends the stream or tunnel, which is what the peer asked for. */
static int decode_goaway(rd_t *r, nw_mux_frame_t *f) {
    int rc = take32(r, &f->last_sid);
    return rc < 0 ? rc : take32(r, &f->value);
}

/* On failure only type, flags and sid may be set (and only once the 6-byte
 * header was accepted); every payload field is cleared so a caller that
 * ignores the error at least sees no dangling pointers into the buffer. */
static int decode_fail(nw_mux_frame_t *f, int rc) {
    uint8_t type = f->type, flags = f->flags;
    uint32_t sid = f->sid;
    memset(f, 0, sizeof(*f));
    f->type = type;
    f->flags = flags;
    f->sid = sid;
    return rc;
}

int nw_mux_decode(const uint8_t *buf, size_t len, nw_mux_frame_t *f, nw_hdr_t *hdrs,
                  size_t max_hdrs) {
    uint8_t type;
    uint32_t sid;
    rd_t r;
    int rc, too_many = 0;

    memset(f, 0, sizeof(*f));
    /* Size first: a caller may hand us anything, and an oversized frame is
     * refused without looking at it. */
    if (len > NW_MUX_MAX_FRAME)
        return NW_ETOOBIG;
    if (len < NW_MUX_FRAME_HDR)
        return NW_ETRUNC;
    type = buf[0];
    sid = nw_get32(buf + 2);
    if (type < NW_MUX_OPEN || type > NW_MUX_GOAWAY)
        return NW_EPROTO;
    if ((type == NW_MUX_GOAWAY) != (sid == 0))
        return NW_EPROTO;
    f->type = type;
    /* END is the only flag and only OPEN, HEAD and DATA carry it; other bits
     * are ignored, so they are dropped here rather than passed upward. */
    f->flags = type <= NW_MUX_DATA ? (uint8_t)(buf[1] & NW_MUX_F_END) : 0;
    f->sid = sid;

    r.p = buf + NW_MUX_FRAME_HDR;
    r.left = len - NW_MUX_FRAME_HDR;
    switch (type) {
    case NW_MUX_OPEN:
        rc = decode_open(&r, f, hdrs, max_hdrs, &too_many);
        break;
    case NW_MUX_HEAD:
        rc = decode_head(&r, f, hdrs, max_hdrs, &too_many);
        break;
    case NW_MUX_DATA:
        rc = decode_data(&r, f);
        break;
    case NW_MUX_WINDOW:
        rc = decode_window(&r, f);
        break;
    case NW_MUX_RST:
        rc = take32(&r, &f->value);
        break;
    default: /* NW_MUX_GOAWAY, the only type left */
        rc = decode_goaway(&r, f);
        break;
    }
    if (rc < 0)
        return decode_fail(f, rc);
    if (r.left != 0)
        return decode_fail(f, NW_EPROTO);
    if (too_many)
        return decode_fail(f, NW_ETOOBIG);
    return 0;
}

/* ---- encoding ------------------------------------------------------------ */

static uint8_t *put_frame_hdr(uint8_t *p, uint8_t type, uint8_t flags, uint32_t sid) {
    p[0] = type;
    p[1] = flags;
    nw_put32(p + 2, sid);
    return p + NW_MUX_FRAME_HDR;
}

/* memcpy with a NULL source is undefined even for 0 bytes, and empty values
 * are commonly passed as (NULL, 0). */
static uint8_t *put_bytes(uint8_t *p, const void *s, size_t n) {
    if (n)
        memcpy(p, s, n);
    return p + n;
}

/* Validates a header block and returns its wire size in *size. An empty name
 * is NW_EINVAL rather than NW_ETOOBIG: it is never valid, whatever its width. */
static int hdrs_size(const nw_hdr_t *hdrs, size_t nhdrs, size_t *size) {
    size_t i, n = 2;

    if (nhdrs > NW_MUX_MAX_HDRS)
        return NW_ETOOBIG;
    for (i = 0; i < nhdrs; i++) {
        if (hdrs[i].name_len == 0)
            return NW_EINVAL;
        if (hdrs[i].name_len > 0xffff || hdrs[i].value_len > 0xffff)
            return NW_ETOOBIG;
        n += 4 + hdrs[i].name_len + hdrs[i].value_len;
    }
    *size = n; /* at most 2 + 256 * (4 + 2 * 65535): no overflow */
    return 0;
}

static uint8_t *put_hdrs(uint8_t *p, const nw_hdr_t *hdrs, size_t nhdrs) {
    size_t i;

    nw_put16(p, (uint16_t)nhdrs);
    p += 2;
    for (i = 0; i < nhdrs; i++) {
        nw_put16(p, (uint16_t)hdrs[i].name_len);
        p = put_bytes(p + 2, hdrs[i].name, hdrs[i].name_len);
        nw_put16(p, (uint16_t)hdrs[i].value_len);
        p = put_bytes(p + 2, hdrs[i].value, hdrs[i].value_len);
    }
    return p;
}

/* The checks every encoder ends with: a frame the decoder would refuse as too
 * big is never produced, and nothing is written unless all of it fits. */
static int fits(size_t need, size_t cap) {
    if (need > NW_MUX_MAX_FRAME)
        return NW_ETOOBIG;
    return need > cap ? NW_ENOSPC : 0;
}

int nw_mux_pack_open(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, const char *method,
                     size_t method_len, const char *target, size_t target_len,
                     const nw_hdr_t *hdrs, size_t nhdrs) {
    size_t hsize, need;
    uint8_t *p;
    int rc;

    if (sid == 0 || method_len == 0 || target_len == 0)
        return NW_EINVAL;
    if (method_len > 0xff || target_len > 0xffff)
        return NW_ETOOBIG;
    if ((rc = hdrs_size(hdrs, nhdrs, &hsize)) < 0)
        return rc;
    need = NW_MUX_FRAME_HDR + 1 + method_len + 2 + target_len + hsize;
    if ((rc = fits(need, cap)) < 0)
        return rc;

    p = put_frame_hdr(out, NW_MUX_OPEN, flags & NW_MUX_F_END, sid);
    *p++ = (uint8_t)method_len;
    p = put_bytes(p, method, method_len);
    nw_put16(p, (uint16_t)target_len);
    p = put_bytes(p + 2, target, target_len);
    put_hdrs(p, hdrs, nhdrs);
    return (int)need;
}

int nw_mux_pack_head(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags, uint16_t status,
                     const char *reason, size_t reason_len, const nw_hdr_t *hdrs, size_t nhdrs) {
    size_t hsize, need;
    uint8_t *p;
    int rc;

    if (sid == 0 || status < 100 || status > 999)
        return NW_EINVAL;
    if (reason_len > 0xff)
        return NW_ETOOBIG;
    if ((rc = hdrs_size(hdrs, nhdrs, &hsize)) < 0)
        return rc;
    need = NW_MUX_FRAME_HDR + 2 + 1 + reason_len + hsize;
    if ((rc = fits(need, cap)) < 0)
        return rc;

    p = put_frame_hdr(out, NW_MUX_HEAD, flags & NW_MUX_F_END, sid);
    nw_put16(p, status);
    p[2] = (uint8_t)reason_len;
    p = put_bytes(p + 3, reason, reason_len);
    put_hdrs(p, hdrs, nhdrs);
    return (int)need;
}

/* The payload is not ours to see, so keeping it within NW_MUX_MAX_DATA is
 * the caller's job; the decoder on the far side enforces it. */
int nw_mux_pack_data_hdr(uint8_t *out, size_t cap, uint32_t sid, uint8_t flags) {
    if (sid == 0)
        return NW_EINVAL;
    if (cap < NW_MUX_FRAME_HDR)
        return NW_ENOSPC;
    put_frame_hdr(out, NW_MUX_DATA, flags & NW_MUX_F_END, sid);
    return NW_MUX_FRAME_HDR;
}

/* WINDOW, RST and GOAWAY: a header and one or two 32-bit fields. */
static int pack_u32s(uint8_t *out, size_t cap, uint8_t type, uint32_t sid, uint32_t a,
                     int two, uint32_t b) {
    size_t need = NW_MUX_FRAME_HDR + (two ? 8 : 4);
    uint8_t *p;

    if (cap < need)
        return NW_ENOSPC;
    p = put_frame_hdr(out, type, 0, sid);
    nw_put32(p, a);
    if (two)
        nw_put32(p + 4, b);
    return (int)need;
}

int nw_mux_pack_window(uint8_t *out, size_t cap, uint32_t sid, uint32_t incr) {
    if (sid == 0 || incr == 0)
        return NW_EINVAL;
    if (incr > NW_MUX_MAX_WINDOW)
        return NW_ETOOBIG;
    return pack_u32s(out, cap, NW_MUX_WINDOW, sid, incr, 0, 0);
}

int nw_mux_pack_rst(uint8_t *out, size_t cap, uint32_t sid, uint32_t code) {
    if (sid == 0)
        return NW_EINVAL;
    return pack_u32s(out, cap, NW_MUX_RST, sid, code, 0, 0);
}

int nw_mux_pack_goaway(uint8_t *out, size_t cap, uint32_t last_sid, uint32_t code) {
    return pack_u32s(out, cap, NW_MUX_GOAWAY, 0, last_sid, 1, code);
}

/* ---- names for logs ------------------------------------------------------ */

const char *nw_mux_type_name(uint8_t type) {
    static const char *const names[] = {"OPEN", "HEAD", "DATA", "WINDOW", "RST", "GOAWAY"};
    if (type < NW_MUX_OPEN || type > NW_MUX_GOAWAY)
        return "unknown";
    return names[type - NW_MUX_OPEN];
}

const char *nw_mux_code_name(uint32_t code) {
    /* Indexed by code; 0 is GOAWAY's graceful shutdown. */
    static const char *const names[] = {"NO_ERROR", "CANCEL",  "CONNECT",  "UPSTREAM",
                                        "PROTOCOL", "FLOW",    "REFUSED",  "INTERNAL",
                                        "TIMEOUT",  "TOOBIG"};
    if (code >= NW_ARRAY_LEN(names))
        return "unknown";
    return names[code];
}
