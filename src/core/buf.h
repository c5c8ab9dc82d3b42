/* buf.h: a growable byte string with a hard cap, and a bounded FIFO of
 * byte chunks. No libuv. */
#ifndef NW_BUF_H
#define NW_BUF_H

#include "nw.h"

typedef struct {
    char *p;
    size_t len, cap;
} nw_sbuf_t;

int nw_sbuf_append(nw_sbuf_t *b, const void *p, size_t n); /* 0 or NW_ENOMEM */
int nw_sbuf_appends(nw_sbuf_t *b, const char *s);
/* Room for extra more bytes (and the NUL) now: a head built piece by piece
 * then costs one allocation, not a doubling per piece. */
int nw_sbuf_reserve(nw_sbuf_t *b, size_t extra);
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
int nw_sbuf_appendf(nw_sbuf_t *b, const char *fmt, ...);
void nw_sbuf_free(nw_sbuf_t *b);
/* Hand the bytes to the caller (who frees them with nw_free). */
char *nw_sbuf_take(nw_sbuf_t *b, size_t *len);

typedef struct nw_chunk_s {
    struct nw_chunk_s *next;
    size_t len, off;
    char data[];
} nw_chunk_t;

typedef struct {
    nw_chunk_t *head, *tail;
    size_t bytes;
} nw_bufq_t;

int nw_bufq_push(nw_bufq_t *q, const void *p, size_t n); /* copies */
/* Peek at the first contiguous run (up to max bytes); 0 when empty. */
size_t nw_bufq_peek(nw_bufq_t *q, const char **p, size_t max);
void nw_bufq_drop(nw_bufq_t *q, size_t n);
void nw_bufq_clear(nw_bufq_t *q);

#endif
