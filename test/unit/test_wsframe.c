/* test_wsframe.c: WebSocket framing and masking (wire/wsframe.c) against
 * RFC 6455: header bytes written for each length form, round trips, every
 * byte-split of a frame read back in two pieces, masking in pieces. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "wsframe.h"

/* ---- helpers ------------------------------------------------------------- */

static const uint8_t key_a[4] = {0x37, 0xfa, 0x21, 0x3d}; /* RFC 6455 5.7 */

/* Build a whole frame in out: header, then payload (masked with key if any). */
static size_t build(uint8_t *out, unsigned b0, const uint8_t *pl, size_t len,
                    const uint8_t *key) {
    size_t h = nw_wsframe_put_hdr(out, b0, len, key);
    if (key)
        nw_wsframe_mask(out + h, pl, len, key, 0);
    else if (len)
        memcpy(out + h, pl, len);
    return h + len;
}

/* The plain byte-at-a-time XOR, as RFC 6455 5.3 writes it. */
static void mask_ref(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                     size_t phase) {
    size_t i;
    for (i = 0; i < n; i++)
        dst[i] = src[i] ^ key[(phase + i) & 3];
}

/* Read frame fr (n bytes) as it would arrive split at cut: the header is
 * collected with hdr_take from both pieces, the payload unmasked piece by
 * piece with the right phase. Returns 0 when header and payload match. */
static int read_split(const uint8_t *fr, size_t n, size_t cut, unsigned b0, const uint8_t *pl,
                      size_t len, const uint8_t *key) {
    static uint8_t got[70000];
    uint8_t h[NW_WSFRAME_MAX_HDR];
    size_t hlen = 0, glen = 0, piece;
    const uint8_t *parts[2] = {fr, fr + cut};
    size_t lens[2] = {cut, n - cut};
    nw_wsframe_hdr_t f;
    int have = 0;
    for (piece = 0; piece < 2; piece++) {
        const uint8_t *p = parts[piece];
        size_t m = lens[piece];
        if (!have) {
            size_t k = nw_wsframe_hdr_take(h, &hlen, p, m);
            if (k > m)
                return 1;
            p += k, m -= k;
            if (nw_wsframe_hdr_done(h, hlen)) {
                nw_wsframe_parse_hdr(h, &f);
                have = 1;
            } else if (m) {
                return 2; /* bytes left over but the header is not whole */
            }
        }
        if (have && m) {
            if (glen + m > f.len)
                return 3;
            if (f.masked)
                nw_wsframe_mask(got + glen, p, m, f.key, glen & 3);
            else
                memcpy(got + glen, p, m);
            glen += m;
        }
    }
    if (!have || f.hlen != hlen || f.len != len || glen != len)
        return 4;
    if (f.fin != ((b0 & NW_WSFRAME_FIN) != 0) || f.opcode != (b0 & 0x0f) || f.rsv != 0)
        return 5;
    if (f.masked != (key != NULL) || (key && memcmp(f.key, key, 4) != 0))
        return 6;
    return len && memcmp(got, pl, len) != 0 ? 7 : 0;
}

/* ---- tests --------------------------------------------------------------- */

/* RFC 6455 5.7: "Hello", unmasked and masked. */
UNIT_TEST(test_rfc_examples) {
    static const uint8_t plain[] = {0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f};
    static const uint8_t masked[] = {0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                     0x7f, 0x9f, 0x4d, 0x51, 0x58};
    uint8_t out[32];
    size_t n = build(out, NW_WSFRAME_FIN | NW_WSFRAME_TEXT, (const uint8_t *)"Hello", 5, NULL);
    CHECK_EQ(n, sizeof(plain));
    CHECK(memcmp(out, plain, n) == 0);
    n = build(out, NW_WSFRAME_FIN | NW_WSFRAME_TEXT, (const uint8_t *)"Hello", 5, key_a);
    CHECK_EQ(n, sizeof(masked));
    CHECK(memcmp(out, masked, n) == 0);
}

/* Each length form, at its edges; the header length follows from byte 1. */
UNIT_TEST(test_length_forms) {
    static const struct {
        uint64_t len;
        size_t hlen;
    } cases[] = {{0, 2}, {1, 2}, {125, 2}, {126, 4}, {127, 4}, {0xffff, 4},
                 {0x10000, 10}, {0xffffffffull, 10}, {0x100000000ull, 10},
                 {0x7fffffffffffffffull, 10}};
    size_t i;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint8_t h[NW_WSFRAME_MAX_HDR];
        nw_wsframe_hdr_t f;
        size_t n = nw_wsframe_put_hdr(h, NW_WSFRAME_FIN | NW_WSFRAME_BINARY, cases[i].len, NULL);
        CHECK_EQ(n, cases[i].hlen);
        CHECK_EQ(nw_wsframe_hdr_len(h[1]), n);
        nw_wsframe_parse_hdr(h, &f);
        CHECK(f.len == cases[i].len);
        CHECK_EQ(f.hlen, n);
        CHECK_EQ(f.masked, 0);
        n = nw_wsframe_put_hdr(h, NW_WSFRAME_BINARY, cases[i].len, key_a);
        CHECK_EQ(n, cases[i].hlen + 4);
        CHECK_EQ(nw_wsframe_hdr_len(h[1]), n);
        nw_wsframe_parse_hdr(h, &f);
        CHECK(f.len == cases[i].len);
        CHECK_EQ(f.fin, 0);
        CHECK_EQ(f.masked, 1);
        CHECK(memcmp(f.key, key_a, 4) == 0);
    }
    /* The 16-bit form is big-endian. */
    {
        uint8_t h[NW_WSFRAME_MAX_HDR];
        nw_wsframe_put_hdr(h, 0x82, 0x1234, NULL);
        CHECK_EQ(h[1], 126);
        CHECK_EQ(h[2], 0x12);
        CHECK_EQ(h[3], 0x34);
    }
}

/* Reserved bits and opcodes come back as they were written (the reader
 * checks nothing: the session does). A longer form than needed is read. */
UNIT_TEST(test_parse_fields) {
    nw_wsframe_hdr_t f;
    static const uint8_t rsv[] = {0xf9, 0x00};
    static const uint8_t long_ping[] = {0x89, 0xfe, 0x00, 0x03, 1, 2, 3, 4};
    nw_wsframe_parse_hdr(rsv, &f);
    CHECK_EQ(f.fin, 1);
    CHECK_EQ(f.rsv, 0x70);
    CHECK_EQ(f.opcode, NW_WSFRAME_PING);
    CHECK_EQ(f.len, 0);
    nw_wsframe_parse_hdr(long_ping, &f);
    CHECK_EQ(f.opcode, NW_WSFRAME_PING);
    CHECK_EQ(f.len, 3);
    CHECK_EQ(f.hlen, 8);
    CHECK_EQ(f.masked, 1);
    CHECK_EQ(f.key[3], 4);
}

/* Frames of every length form, masked or not, read back split at every
 * byte offset. */
UNIT_TEST(test_every_split) {
    static uint8_t pl[70000], fr[70000 + NW_WSFRAME_MAX_HDR];
    static const size_t lens[] = {0, 1, 5, 125, 126, 300, 65535, 65536};
    size_t i, cut, m;
    for (i = 0; i < sizeof(pl); i++)
        pl[i] = (uint8_t)(i * 31 + 7);
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        for (m = 0; m < 2; m++) {
            const uint8_t *key = m ? key_a : NULL;
            size_t n = build(fr, NW_WSFRAME_FIN | NW_WSFRAME_BINARY, pl, lens[i], key);
            /* Every cut through short frames; through long ones, every cut
             * in and around the header and a stride through the payload. */
            for (cut = 0; cut <= n; cut += (lens[i] > 300 && cut > 32 && cut + 32 < n) ? 97 : 1) {
                int rc = read_split(fr, n, cut, NW_WSFRAME_FIN | NW_WSFRAME_BINARY, pl,
                                    lens[i], key);
                if (rc)
                    fprintf(stderr, "  len=%zu masked=%zu cut=%zu: %d\n", lens[i], m, cut, rc);
                CHECK_EQ(rc, 0);
            }
        }
}

/* Header bytes fed one at a time: nothing past the header is taken. */
UNIT_TEST(test_hdr_take_bytewise) {
    uint8_t fr[64], h[NW_WSFRAME_MAX_HDR];
    size_t n = build(fr, 0x82, (const uint8_t *)"abc", 3, key_a), hlen = 0, i;
    for (i = 0; i < n; i++) {
        size_t k = nw_wsframe_hdr_take(h, &hlen, fr + i, 1);
        if (i < 6)
            CHECK_EQ(k, 1);
        else
            CHECK_EQ(k, 0);
        CHECK_EQ(nw_wsframe_hdr_done(h, hlen), i >= 5);
    }
    CHECK_EQ(hlen, 6);
    /* All at once: the header only. */
    hlen = 0;
    CHECK_EQ(nw_wsframe_hdr_take(h, &hlen, fr, n), 6);
    CHECK(nw_wsframe_hdr_done(h, hlen));
    /* Nothing to take. */
    hlen = 0;
    CHECK_EQ(nw_wsframe_hdr_take(h, &hlen, fr, 0), 0);
    CHECK(!nw_wsframe_hdr_done(h, hlen));
}

/* The eight-byte masking loop equals the byte-wise XOR for every length,
 * phase and alignment; done in pieces, it equals the whole; twice, it is
 * the identity; in place works. */
UNIT_TEST(test_masking) {
    uint8_t src[80], a[80], b[80];
    size_t n, ph, off, cut;
    for (n = 0; n < sizeof(src); n++)
        src[n] = (uint8_t)(n * 13 + 1);
    for (n = 0; n <= 64; n++)
        for (ph = 0; ph < 4; ph++)
            for (off = 0; off < 8; off++) {
                nw_wsframe_mask(a + off, src + off, n, key_a, ph);
                mask_ref(b + off, src + off, n, key_a, ph);
                CHECK(memcmp(a + off, b + off, n) == 0);
                nw_wsframe_mask(a + off, a + off, n, key_a, ph); /* in place */
                CHECK(memcmp(a + off, src + off, n) == 0);
            }
    for (n = 0; n <= 40; n++)
        for (cut = 0; cut <= n; cut++) {
            nw_wsframe_mask(a, src, cut, key_a, 0);
            nw_wsframe_mask(a + cut, src + cut, n - cut, key_a, cut & 3);
            mask_ref(b, src, n, key_a, 0);
            CHECK(memcmp(a, b, n) == 0);
        }
}

UNIT_MAIN(UNIT_CASE(test_rfc_examples), UNIT_CASE(test_length_forms),
          UNIT_CASE(test_parse_fields), UNIT_CASE(test_every_split),
          UNIT_CASE(test_hdr_take_bytewise), UNIT_CASE(test_masking))
