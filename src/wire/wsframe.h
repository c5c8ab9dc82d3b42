/* wsframe.h: WebSocket framing and masking (RFC 6455), pure (no uv.h). */
#ifndef NW_WSFRAME_H
#define NW_WSFRAME_H

#include "nw.h"

/* XOR-copy n bytes with a 4-byte key starting at key byte phase (0..3). */
void nw_wsframe_mask(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4],
                     size_t phase);

#endif
