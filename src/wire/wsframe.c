/* wsframe.c: WebSocket framing and masking (RFC 6455), pure. */
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
