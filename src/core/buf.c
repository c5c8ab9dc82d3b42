/* buf.c: growable string and chunk FIFO. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"

static int sbuf_reserve(nw_sbuf_t *b, size_t extra) {
    size_t need = b->len + extra + 1, cap = b->cap ? b->cap : 256;
    char *p;
    if (extra > SIZE_MAX / 4 - b->len)
        return NW_ENOMEM; /* would overflow the doubling below */
    if (need <= b->cap)
        return 0;
    while (cap < need)
        cap *= 2;
    p = nw_realloc(b->p, cap);
    if (!p)
        return NW_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int nw_sbuf_reserve(nw_sbuf_t *b, size_t extra) { return sbuf_reserve(b, extra); }

int nw_sbuf_append(nw_sbuf_t *b, const void *p, size_t n) {
    if (sbuf_reserve(b, n))
        return NW_ENOMEM;
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

int nw_sbuf_appends(nw_sbuf_t *b, const char *s) { return nw_sbuf_append(b, s, strlen(s)); }

int nw_sbuf_appendf(nw_sbuf_t *b, const char *fmt, ...) {
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || sbuf_reserve(b, (size_t)n))
        return NW_ENOMEM;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

void nw_sbuf_free(nw_sbuf_t *b) {
    nw_free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

char *nw_sbuf_take(nw_sbuf_t *b, size_t *len) {
    char *p = b->p;
    *len = b->len;
    b->p = NULL;
    b->len = b->cap = 0;
    return p;
}

int nw_bufq_push(nw_bufq_t *q, const void *p, size_t n) {
    nw_chunk_t *c;
    if (n == 0)
        return 0;
    c = nw_malloc(sizeof(*c) + n);
    if (!c)
        return NW_ENOMEM;
    c->next = NULL;
    c->len = n;
    c->off = 0;
    memcpy(c->data, p, n);
    if (q->tail)
        q->tail->next = c;
    else
        q->head = c;
    q->tail = c;
    q->bytes += n;
    return 0;
}

size_t nw_bufq_peek(nw_bufq_t *q, const char **p, size_t max) {
    size_t n;
    if (!q->head)
        return 0;
    n = q->head->len - q->head->off;
    *p = q->head->data + q->head->off;
    return n < max ? n : max;
}

void nw_bufq_drop(nw_bufq_t *q, size_t n) {
    while (n && q->head) {
        nw_chunk_t *c = q->head;
        size_t avail = c->len - c->off, k = n < avail ? n : avail;
        c->off += k;
        q->bytes -= k;
        n -= k;
        if (c->off == c->len) {
            q->head = c->next;
            if (!q->head)
                q->tail = NULL;
            nw_free(c);
        }
    }
}

void nw_bufq_clear(nw_bufq_t *q) { nw_bufq_drop(q, q->bytes); }
