/* ws.c: WebSocket handshake keys with mbedTLS SHA-1 and base64. */
#include <mbedtls/base64.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/sha1.h>
#include <mbedtls/version.h>

#include "ws.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int nw_ws_accept(const char *key, size_t key_len, char out[29]) {
    unsigned char buf[128], digest[20];
    size_t olen = 0;
    int rc;
    if (key_len + sizeof(ws_guid) > sizeof(buf))
        return NW_EINVAL;
    memcpy(buf, key, key_len);
    memcpy(buf + key_len, ws_guid, sizeof(ws_guid) - 1);
#if MBEDTLS_VERSION_MAJOR >= 3
    rc = mbedtls_sha1(buf, key_len + sizeof(ws_guid) - 1, digest);
#else
    rc = mbedtls_sha1_ret(buf, key_len + sizeof(ws_guid) - 1, digest);
#endif
    if (rc != 0 || mbedtls_base64_encode((unsigned char *)out, 29, &olen, digest, 20) != 0)
        return NW_EINVAL;
    out[olen] = 0;
    return 0;
}

int nw_ws_key_valid(const char *key, size_t len) {
    unsigned char raw[32];
    size_t olen = 0;
    if (len != 24)
        return 0;
    if (mbedtls_base64_decode(raw, sizeof(raw), &olen, (const unsigned char *)key, len) != 0)
        return 0;
    return olen == 16;
}

int nw_ws_new_key(char out[25]) {
    unsigned char raw[16];
    size_t olen = 0;
    if (nw_random(raw, sizeof(raw)) != 0)
        return NW_EINVAL;
    if (mbedtls_base64_encode((unsigned char *)out, 25, &olen, raw, sizeof(raw)) != 0)
        return NW_EINVAL;
    out[olen] = 0;
    return 0;
}

/* One generator per thread, seeded on first use. Masks are drawn often, so
 * bytes are taken from a small pool refilled in bulk. */
static _Thread_local struct {
    int ready;
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    unsigned char pool[1024];
    size_t left;
} rng;

int nw_random(void *buf, size_t n) {
    unsigned char *out = buf;
    if (!rng.ready) {
        mbedtls_entropy_init(&rng.ent);
        mbedtls_ctr_drbg_init(&rng.drbg);
        if (mbedtls_ctr_drbg_seed(&rng.drbg, mbedtls_entropy_func, &rng.ent,
                                  (const unsigned char *)"natwrp", 6) != 0)
            return NW_EINVAL;
        rng.ready = 1;
    }
    while (n) {
        size_t k;
        if (rng.left == 0) {
            if (mbedtls_ctr_drbg_random(&rng.drbg, rng.pool, sizeof(rng.pool)) != 0)
                return NW_EINVAL;
            rng.left = sizeof(rng.pool);
        }
        k = n < rng.left ? n : rng.left;
        memcpy(out, rng.pool + sizeof(rng.pool) - rng.left, k);
        rng.left -= k;
        out += k;
        n -= k;
    }
    return 0;
}
