/* wsframe.c: WebSocket framing and masking (RFC 6455), pure: frame headers
 * written and read in pieces, payloads masked eight bytes at a time. */
#include <string.h>

#include "wsframe.h"

/* XOR-copy with a 4-byte key, eight bytes at a time (RFC 6455 5.3). */
void nw_wsframe_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                     size_t phase) {
    uint8_t k8[8];
    uint64_t k, v;
    size_t i = 0, j;
    for (j = 0; j < 8; j++)
        k8[j] = key[(phase + j) & 3];
    memcpy(&k, k8, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, src + i, 8);
        v ^= k;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[(phase + i) & 3];
}

size_t nw_wsframe_put_hdr(uint8_t *o, unsigned b0, uint64_t len, const uint8_t *key) {
    size_t h = 0;
    o[h++] = (uint8_t)b0;
    if (len < 126) {
        o[h++] = (uint8_t)len;
    } else if (len <= 0xffff) {
        o[h++] = 126;
        nw_put16(o + h, (uint16_t)len);
        h += 2;
    } else {
        o[h++] = 127;
        nw_put32(o + h, (uint32_t)(len >> 32));
        nw_put32(o + h + 4, (uint32_t)len);
        h += 8;
    }
    if (key) {
        o[1] |= NW_WSFRAME_MASKED;
        memcpy(o + h, key, 4);
        h += 4;
    }
    return h;
}

size_t nw_wsframe_hdr_len(uint8_t b1) {
    uint8_t l7 = b1 & 0x7f;
    return 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) + ((b1 & NW_WSFRAME_MASKED) ? 4 : 0);
}

size_t nw_wsframe_hdr_take(uint8_t h[NW_WSFRAME_MAX_HDR], size_t *hlen, const uint8_t *p,
                           size_t n) {
    size_t k, used = 0;
    if (*hlen < 2) {
        used = NW_MIN(n, 2 - *hlen);
        memcpy(h + *hlen, p, used);
        *hlen += used;
        if (*hlen < 2)
            return used;
    }
    /* The first two bytes say how long the whole header is. */
    k = NW_MIN(n - used, nw_wsframe_hdr_len(h[1]) - *hlen);
    memcpy(h + *hlen, p + used, k);
    *hlen += k;
    return used + k;
}

void nw_wsframe_parse_hdr(const uint8_t *h, nw_wsframe_hdr_t *f) {
    uint64_t len = h[1] & 0x7f;
    size_t n = 2;
    if (len == 126) {
        len = nw_get16(h + 2);
        n = 4;
    } else if (len == 127) {
        len = ((uint64_t)nw_get32(h + 2) << 32) | nw_get32(h + 6);
        n = 10;
    }
    f->fin = (h[0] & NW_WSFRAME_FIN) != 0;
    f->rsv = h[0] & NW_WSFRAME_RSV;
    f->opcode = h[0] & 0x0f;
    f->masked = (h[1] & NW_WSFRAME_MASKED) != 0;
    f->len = len;
    if (f->masked) {
        memcpy(f->key, h + n, 4);
        n += 4;
    } else {
        memset(f->key, 0, 4);
    }
    f->hlen = n;
}
