/* nw.h: common macros, error codes and small helpers shared by every module.
 * Kept free of libuv so that pure modules (mux, cfg) build without it. */
#ifndef NW_H
#define NW_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define NW_VERSION "0.1.0"
#define NW_PROTO_VERSION 1

#define nw_container_of(ptr, type, field) \
    ((type *)((char *)(ptr) - offsetof(type, field)))
#define NW_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define NW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define NW_MAX(a, b) ((a) > (b) ? (a) : (b))

/* natwrp's own error codes live far below libuv's (which are -errno on
 * Unix) so both can travel through one int. */
#define NW_ERRNO_MAP(X)                                        \
    X(PROTO, -1001, "protocol violation")                      \
    X(TRUNC, -1002, "truncated frame")                         \
    X(TOOBIG, -1003, "value too large")                        \
    X(FLOW, -1004, "flow-control violation")                   \
    X(CONFIG, -1005, "invalid configuration")                  \
    X(NOSPC, -1006, "buffer too small")                        \
    X(NOMEM, -1007, "out of memory")                           \
    X(CLOSED, -1008, "closed")                                 \
    X(VERSION, -1009, "protocol version mismatch")             \
    X(HANDSHAKE, -1010, "tunnel handshake refused")            \
    X(TIMEOUT, -1011, "timed out")                             \
    X(RESET, -1012, "stream reset")                            \
    X(INVAL, -1013, "invalid argument")                       \
    X(TLS, -1014, "TLS failure")

enum {
#define NW_ERR_ENUM(name, val, msg) NW_E##name = (val),
    NW_ERRNO_MAP(NW_ERR_ENUM)
#undef NW_ERR_ENUM
};

/* Message for a natwrp or libuv error code. */
const char *nw_strerror(int err);

/* Big-endian helpers for the wire format. */
static inline void nw_put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void nw_put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint16_t nw_get16(const uint8_t *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t nw_get32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* ASCII case-insensitive compare of a counted string with a C string. */
int nw_strieq(const char *a, size_t alen, const char *b);

/* Allocation wrappers: one place to count and to fail in tests. */
/* Tests only: when non-zero, the allocation that counts it down to 0
 * fails (nw_malloc, nw_calloc, nw_realloc), so a test can fail each
 * allocation of a path in turn. Always 0 in the program. */
extern unsigned long nw__alloc_fail_in;
void *nw_malloc(size_t n);
void *nw_calloc(size_t n, size_t sz);
void *nw_realloc(void *p, size_t n);
void nw_free(void *p);
char *nw_strndup(const char *s, size_t n);
/* Overwrite a secret before its memory is freed (not optimised away). */
void nw_wipe(void *p, size_t n);

#endif
