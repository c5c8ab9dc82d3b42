/* tokens.c: serve's --tokens file (tokens.h): parsing, merging lines that
 * share a token, and the constant-time lookup. Pure: no libuv (SHA-256
 * comes from mbedTLS). Parsing runs at start-up and on SIGHUP; lookup runs
 * once per tunnel handshake. */
#include "tokens.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mbedtls/sha256.h>
#include <mbedtls/version.h>

#include "nw.h"

/* One distinct token and the union of its lines' patterns. */
typedef struct {
    char *tok;
    size_t len;
    unsigned char hash[32]; /* SHA-256 of tok: what nw_tokens_find compares */
    nw_route_pat_t *pats;
    size_t npats;
    size_t line;            /* first line (0: CONN_TOKEN), for a stable order */
} entry_t;

struct nw_tokens {
    entry_t *e;
    size_t n, cap;
};

static int sha256(const char *s, size_t n, unsigned char out[32]) {
    static const char none = 0;
    if (!s)
        s = &none;
#if MBEDTLS_VERSION_MAJOR >= 3
    return mbedtls_sha256((const unsigned char *)s, n, out, 0);
#else
    return mbedtls_sha256_ret((const unsigned char *)s, n, out, 0);
#endif
}

static int is_blank(char c) { return c == ' ' || c == '\t'; }

void nw_tokens_free(nw_tokens_t *t) {
    size_t i;
    if (!t)
        return;
    for (i = 0; i < t->n; i++) {
        /* Do not leave the secrets in freed memory. */
        if (t->e[i].tok)
            memset(t->e[i].tok, 0, t->e[i].len);
        nw_free(t->e[i].tok);
        nw_free(t->e[i].pats);
    }
    nw_free(t->e);
    nw_free(t);
}

size_t nw_tokens_count(const nw_tokens_t *t) { return t ? t->n : 0; }

/* A new entry for tok (len bytes) with no patterns; NULL when out of memory. */
static entry_t *add_entry(nw_tokens_t *t, const char *tok, size_t len, size_t line) {
    entry_t *e;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        entry_t *ne = nw_realloc(t->e, cap * sizeof(*ne));
        if (!ne)
            return NULL;
        t->e = ne;
        t->cap = cap;
    }
    e = &t->e[t->n];
    memset(e, 0, sizeof(*e));
    e->tok = nw_malloc(len);
    if (!e->tok)
        return NULL;
    memcpy(e->tok, tok, len);
    e->len = len;
    e->line = line;
    if (sha256(tok, len, e->hash) != 0) {
        nw_free(e->tok);
        return NULL;
    }
    t->n++;
    return e;
}

static int add_pat(entry_t *e, const nw_route_pat_t *p, size_t *cap) {
    if (e->npats == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        nw_route_pat_t *np = nw_realloc(e->pats, nc * sizeof(*np));
        if (!np)
            return NW_ENOMEM;
        e->pats = np;
        *cap = nc;
    }
    e->pats[e->npats++] = *p;
    return 0;
}

/* The token field s (n bytes, no blanks): NULL if it may be a token, else
 * why not (the token is never quoted). */
static const char *token_bad(const char *s, size_t n) {
    size_t i;
    if (n > NW_TOKENS_TOKEN_MAX)
        return "token longer than 512 bytes";
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return "a token may hold only visible ASCII characters (blanks separate fields)";
    return n ? NULL : "empty token";
}

/* One line (no line end, no NUL): a comment, blank, or TOKEN PATTERN...
 * 0, or NW_ECONFIG/NW_ENOMEM with the reason in why. */
static int parse_line(nw_tokens_t *t, const char *s, size_t n, size_t line, const char *domain,
                      char *why, size_t whylen) {
    size_t i = 0, f, pcap = 0;
    const char *bad;
    entry_t *e = NULL;
    nw_route_pat_t p;

    while (i < n) {
        while (i < n && is_blank(s[i]))
            i++;
        if (i == n || s[i] == '#')
            break;
        for (f = i; i < n && !is_blank(s[i]); i++)
            ;
        if (!e) {
            if ((bad = token_bad(s + f, i - f)) != NULL) {
                snprintf(why, whylen, "%s", bad);
                return NW_ECONFIG;
            }
            if (!(e = add_entry(t, s + f, i - f, line))) {
                snprintf(why, whylen, "out of memory");
                return NW_ENOMEM;
            }
            continue;
        }
        if (nw_route_pat_parse(s + f, i - f, domain, &p, why, whylen) != 0)
            return NW_ECONFIG;
        if (add_pat(e, &p, &pcap) != 0) {
            snprintf(why, whylen, "out of memory");
            return NW_ENOMEM;
        }
    }
    if (e && e->npats == 0) {
        snprintf(why, whylen,
                 "a token needs at least one pattern (\"TOKEN PATTERN...\": \"*\", "
                 "\"*.alice.example.com\", \"alice.example.com\")");
        return NW_ECONFIG;
    }
    return 0;
}

/* Same token first, then by first line. */
static int entry_cmp(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    int c = memcmp(x->hash, y->hash, sizeof(x->hash));
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    if ((c = memcmp(x->tok, y->tok, x->len)) != 0)
        return c;
    return x->line < y->line ? -1 : x->line > y->line;
}

static int line_cmp(const void *a, const void *b) {
    const entry_t *x = a, *y = b;
    return x->line < y->line ? -1 : x->line > y->line;
}

/* Lines with the same token become one entry: its patterns are the union.
 * Sorting keeps this O(n log n) for a file of 100000 lines. */
static int merge_same(nw_tokens_t *t) {
    size_t i, w = 0;
    if (t->n < 2)
        return 0;
    qsort(t->e, t->n, sizeof(*t->e), entry_cmp);
    for (i = 1; i < t->n; i++) {
        entry_t *d = &t->e[w], *s = &t->e[i];
        if (d->len == s->len && memcmp(d->hash, s->hash, sizeof(d->hash)) == 0 &&
            memcmp(d->tok, s->tok, d->len) == 0) {
            nw_route_pat_t *np = nw_realloc(d->pats, (d->npats + s->npats) * sizeof(*np));
            if (!np)
                return NW_ENOMEM; /* every entry is still whole: the caller frees t */
            memcpy(np + d->npats, s->pats, s->npats * sizeof(*np));
            d->pats = np;
            d->npats += s->npats;
            memset(s->tok, 0, s->len);
            nw_free(s->tok);
            nw_free(s->pats);
            s->tok = NULL;
            s->pats = NULL;
            s->npats = 0;
            s->len = 0;
        } else {
            t->e[++w] = *s;
            if (w != i) {
                s->tok = NULL;
                s->pats = NULL;
                s->len = 0;
            }
        }
    }
    t->n = w + 1;
    qsort(t->e, t->n, sizeof(*t->e), line_cmp); /* file order again */
    return 0;
}

/* err = "line N: why", or just why for line 0; returns rc. */
static int fail(char *err, size_t errlen, int rc, size_t line, const char *why) {
    if (err && errlen) {
        if (line)
            snprintf(err, errlen, "line %zu: %s", line, why);
        else
            snprintf(err, errlen, "%s", why);
    }
    return rc;
}

int nw_tokens_parse(const char *text, size_t len, const char *domain, const char *conn_token,
                    nw_tokens_t **out, char *err, size_t errlen) {
    char why[320];
    const char *p = text, *end = text + len;
    size_t line = 0;
    nw_tokens_t *t;
    int rc;

    *out = NULL;
    if (len > NW_TOKENS_FILE_MAX)
        return fail(err, errlen, NW_ECONFIG, 0, "larger than 1 MiB");
    if (!(t = nw_calloc(1, sizeof(*t))))
        return fail(err, errlen, NW_ENOMEM, 0, "out of memory");
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = (size_t)((nl ? nl : end) - p);
        line++;
        if (line > NW_TOKENS_LINES_MAX) {
            rc = fail(err, errlen, NW_ECONFIG, line, "more than 100000 lines");
            goto bad;
        }
        if (n && p[n - 1] == '\r')
            n--;
        if (memchr(p, 0, n)) {
            rc = fail(err, errlen, NW_ECONFIG, line, "NUL byte");
            goto bad;
        }
        if ((rc = parse_line(t, p, n, line, domain, why, sizeof(why))) != 0) {
            fail(err, errlen, rc, rc == NW_ENOMEM ? 0 : line, why);
            goto bad;
        }
        p = nl ? nl + 1 : end;
    }
    if (conn_token && conn_token[0]) {
        nw_route_pat_t any;
        size_t cap = 0, n = strlen(conn_token);
        entry_t *e;
        if (token_bad(conn_token, n)) {
            rc = fail(err, errlen, NW_ECONFIG, 0, "CONN_TOKEN: not a valid token");
            goto bad;
        }
        memset(&any, 0, sizeof(any));
        any.any = 1;
        if (!(e = add_entry(t, conn_token, n, 0)) || add_pat(e, &any, &cap) != 0) {
            rc = fail(err, errlen, NW_ENOMEM, 0, "out of memory");
            goto bad;
        }
    }
    if ((rc = merge_same(t)) != 0) {
        fail(err, errlen, rc, 0, "out of memory");
        goto bad;
    }
    *out = t;
    return 0;
bad:
    nw_tokens_free(t);
    return rc;
}

int nw_tokens_load(const char *path, const char *domain, const char *conn_token,
                   nw_tokens_t **out, char *err, size_t errlen) {
    char why[384];
    FILE *f;
    char *buf;
    size_t n;
    int rc;

    *out = NULL;
    if (!(f = fopen(path, "rb"))) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NW_ECONFIG;
    }
    if (!(buf = nw_malloc(NW_TOKENS_FILE_MAX + 1))) {
        fclose(f);
        if (err && errlen)
            snprintf(err, errlen, "%s: out of memory", path);
        return NW_ENOMEM;
    }
    n = fread(buf, 1, NW_TOKENS_FILE_MAX + 1, f);
    if (ferror(f)) {
        if (err && errlen)
            snprintf(err, errlen, "%s: %s", path, strerror(errno ? errno : EIO));
        rc = NW_ECONFIG;
    } else if (n > NW_TOKENS_FILE_MAX) {
        if (err && errlen)
            snprintf(err, errlen, "%s: larger than 1 MiB", path);
        rc = NW_ECONFIG;
    } else {
        rc = nw_tokens_parse(buf, n, domain, conn_token, out, why, sizeof(why));
        if (rc && err && errlen)
            snprintf(err, errlen, "%s: %s", path, why);
    }
    fclose(f);
    memset(buf, 0, n); /* the secrets */
    nw_free(buf);
    return rc;
}

/* 1 when the 32-byte digests are equal, else 0, without a branch on
 * their bytes. */
static unsigned digest_eq(const unsigned char *a, const unsigned char *b) {
    unsigned d = 0;
    size_t i;
    for (i = 0; i < 32; i++)
        d |= (unsigned)(a[i] ^ b[i]);
    return (d - 1u) >> (sizeof(unsigned) * 8 - 1); /* d is 0..255: 1 only for 0 */
}

/* Constant time in the secret: every entry is compared, and the matching
 * one (if any) is picked with a mask, not a branch, so neither an early
 * return nor the position of the first differing byte tells anything.
 * Comparing digests rather than the tokens also keeps each entry's token
 * length out of the timing. The last check (against one entry, only when
 * a digest matched) rules out a SHA-256 collision. */
int nw_tokens_find(const nw_tokens_t *t, const char *tok, size_t len) {
    unsigned char h[32];
    volatile size_t found = 0; /* index + 1 of the match; 0: none */
    size_t i, f;
    const entry_t *e;
    unsigned d = 0;

    if (!t || t->n == 0 || sha256(tok, len, h) != 0)
        return -1;
    for (i = 0; i < t->n; i++) {
        size_t mask = (size_t)0 - (size_t)digest_eq(h, t->e[i].hash);
        found = (found & ~mask) | ((i + 1) & mask);
    }
    f = found;
    if (f == 0)
        return -1;
    e = &t->e[f - 1];
    if (e->len != len)
        return -1;
    for (i = 0; i < len; i++)
        d |= (unsigned)(unsigned char)(tok[i] ^ e->tok[i]);
    return d == 0 ? (int)(f - 1) : -1;
}

int nw_tokens_grants(const nw_tokens_t *t, int idx, const nw_route_t *r) {
    const entry_t *e;
    size_t i;
    if (!t || idx < 0 || (size_t)idx >= t->n)
        return 0;
    e = &t->e[idx];
    for (i = 0; i < e->npats; i++)
        if (nw_route_pat_grants(&e->pats[i], r))
            return 1;
    return 0;
}
