/* util.c: error strings, allocation wrappers, small string helpers. */
#include <stdlib.h>
#include <uv.h>

#include "nw.h"

const char *nw_strerror(int err) {
    switch (err) {
#define NW_ERR_CASE(name, val, msg) \
    case NW_E##name:                \
        return msg;
        NW_ERRNO_MAP(NW_ERR_CASE)
#undef NW_ERR_CASE
    default:
        return err < 0 ? uv_strerror(err) : "success";
    }
}

/* Called for every field name against every name a layer looks for, so
 * the common cases are cheap: equal bytes, or a mismatch that is not a
 * letter's case (most calls end at the first byte). */
int nw_strieq(const char *a, size_t alen, const char *b) {
    size_t i;
    for (i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x == y) {
            if (y == 0)
                return 0; /* a holds a NUL where b ends */
            continue;
        }
        x |= 0x20;
        if (x != (y | 0x20) || x < 'a' || x > 'z')
            return 0;
    }
    return b[alen] == 0;
}

/* Test-only failure injection (test/unit/test_agent.c): when nonzero, the
 * allocation that counts it down to 0 fails. Always 0 outside tests. */
unsigned long nw__alloc_fail_in;

static int alloc_fails(void) { return nw__alloc_fail_in && --nw__alloc_fail_in == 0; }

void *nw_malloc(size_t n) { return alloc_fails() ? NULL : malloc(n ? n : 1); }
void *nw_calloc(size_t n, size_t sz) {
    return alloc_fails() ? NULL : calloc(n ? n : 1, sz ? sz : 1);
}
void *nw_realloc(void *p, size_t n) { return alloc_fails() ? NULL : realloc(p, n ? n : 1); }
void nw_free(void *p) { free(p); }

void nw_wipe(void *p, size_t n) {
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

char *nw_strndup(const char *s, size_t n) {
    char *p = nw_malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}
