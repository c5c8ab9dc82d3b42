/* wsframe.h: WebSocket framing and masking (RFC 6455), pure (no uv.h):
 * write a frame header, read one in pieces, mask and unmask payloads.
 * The tunnel (tunnel/tun.c) frames its data messages and pongs with these
 * and parses every frame that arrives with them; wslay keeps the close
 * handshake and outgoing pings. */
#ifndef NW_WSFRAME_H
#define NW_WSFRAME_H

#include "nw.h"

/* First header byte: FIN, reserved bits, opcode. */
#define NW_WSFRAME_FIN 0x80u
#define NW_WSFRAME_RSV 0x70u
#define NW_WSFRAME_CONT 0x0u
#define NW_WSFRAME_TEXT 0x1u
#define NW_WSFRAME_BINARY 0x2u
#define NW_WSFRAME_CLOSE 0x8u
#define NW_WSFRAME_PING 0x9u
#define NW_WSFRAME_PONG 0xau
/* Second byte: the mask bit. */
#define NW_WSFRAME_MASKED 0x80u

#define NW_WSFRAME_MAX_HDR 14 /* 2 + 8 (64-bit length) + 4 (key) */
#define NW_WSFRAME_MAX_CTRL 125 /* a control frame's payload, at most */

typedef struct {
    unsigned fin, rsv, opcode, masked;
    uint64_t len;     /* payload length */
    size_t hlen;      /* header length (2..14) */
    uint8_t key[4];   /* when masked */
} nw_wsframe_hdr_t;

/* Write a header for a len-byte payload into o (NW_WSFRAME_MAX_HDR bytes
 * of room); masked when key is not NULL. b0 is FIN | opcode. Returns its
 * length. Lengths take the shortest form. */
size_t nw_wsframe_put_hdr(uint8_t *o, unsigned b0, uint64_t len, const uint8_t *key);
/* The header's whole length, from its second byte. */
size_t nw_wsframe_hdr_len(uint8_t b1);
/* Collect a header that arrives in pieces: take what belongs to it from
 * p (n bytes) into h, *hlen bytes of which are already there. Returns the
 * bytes taken; the header is whole once nw_wsframe_hdr_done says so. */
size_t nw_wsframe_hdr_take(uint8_t h[NW_WSFRAME_MAX_HDR], size_t *hlen, const uint8_t *p,
                           size_t n);
static inline int nw_wsframe_hdr_done(const uint8_t *h, size_t hlen) {
    return hlen >= 2 && hlen == nw_wsframe_hdr_len(h[1]);
}
/* Read a whole header (any length form; no rule is checked here). */
void nw_wsframe_parse_hdr(const uint8_t *h, nw_wsframe_hdr_t *f);
/* XOR-copy n bytes with a 4-byte key starting at key byte phase (0..3):
 * masks and unmasks alike; a payload may be done in pieces, phase being the
 * offset of the piece. dst may be src. */
void nw_wsframe_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                     size_t phase);

#endif
