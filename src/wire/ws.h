/* ws.h: RFC 6455 handshake helpers and the random source for keys/masks. */
#ifndef NW_WS_H
#define NW_WS_H

#include "nw.h"

#define NW_WS_SUBPROTO "natwrp.1"

/* base64(SHA-1(key + GUID)) into out (29 bytes incl. NUL). 0 or NW_EINVAL. */
int nw_ws_accept(const char *key, size_t key_len, char out[29]);
/* A fresh Sec-WebSocket-Key: base64 of 16 random bytes (25 incl. NUL). */
int nw_ws_new_key(char out[25]);
/* Does key look like base64 of exactly 16 bytes? */
int nw_ws_key_valid(const char *key, size_t len);
/* Cryptographically strong bytes (mbedTLS CTR-DRBG seeded from the OS). */
int nw_random(void *buf, size_t n);

#endif
