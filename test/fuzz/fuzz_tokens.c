/* fuzz_tokens.c: libFuzzer target for serve's --tokens file
 * (src/serve/tokens.c).
 *
 * The input is lines: the first is serve's --domain (may be empty), the
 * second CONN_TOKEN (may be empty), the third a comma-separated list of
 * routes to ask about, and the rest is the tokens file, handed over in an
 * exact-size heap copy (no NUL) so that a read past its end lands in
 * ASan's redzone. A simple model of the file (split into lines and
 * fields here, each pattern parsed with nw_route_pat_parse) is the oracle:
 *   - the file parses exactly when the model finds no bad line, and a
 *     refusal names the first bad line ("line N: ...", or CONN_TOKEN);
 *   - a refusal never shows a token that holds a byte no message has
 *     (one of $&+;<=>@^|~`), otherwise only letters and digits, and
 *     appears nowhere else on its line;
 *   - every token of the file (and CONN_TOKEN) is found, equal tokens at
 *     one entry and different ones at different entries; the count is
 *     the number of distinct tokens;
 *   - a token cut by one byte, or with one byte more, is found only if
 *     the model has that token too;
 *   - each token grants a route exactly when one pattern on one of its
 *     lines does (or it is CONN_TOKEN, which grants everything). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nw.h"
#include "routes.h"
#include "tokens.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c)                                                                 \
    do {                                                                         \
        if (!(c)) {                                                              \
            fprintf(stderr, "fuzz_tokens: check failed at line %d: %s\n", __LINE__, #c); \
            abort();                                                             \
        }                                                                        \
    } while (0)

#define MAXL 4096 /* model lines (libFuzzer's default inputs are shorter) */
#define MAXP 64   /* patterns kept per line in the model */
#define MAXR 16   /* routes asked about */

typedef struct {
    const char *tok;
    size_t len;
    nw_route_pat_t pats[MAXP];
    size_t npats; /* patterns kept (a line may have more) */
} mline_t;

static const uint8_t *next_line(const uint8_t **p, const uint8_t *end, size_t *n) {
    const uint8_t *s = *p, *nl = memchr(s, '\n', (size_t)(end - s));
    *n = (size_t)((nl ? nl : end) - s);
    *p = nl ? nl + 1 : end;
    return s;
}

static int blank(char c) { return c == ' ' || c == '\t'; }

static int tok_ok(const char *s, size_t n) {
    size_t i;
    if (n == 0 || n > NW_TOKENS_TOKEN_MAX)
        return 0;
    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
            return 0;
    return 1;
}

/* Find tok (n bytes) through an exact-size heap copy. */
static int find(const nw_tokens_t *t, const char *tok, size_t n) {
    char *c = malloc(n ? n : 1);
    int i;
    if (!c)
        abort();
    memcpy(c, tok, n);
    i = nw_tokens_find(t, c, n);
    free(c);
    return i;
}

static int same(const char *a, size_t an, const char *b, size_t bn) {
    return an == bn && memcmp(a, b, an) == 0;
}

/* Does the model have token s (n bytes)? */
static int model_has(const mline_t *ml, size_t nl, const char *conn, const char *s, size_t n) {
    size_t i;
    if (conn[0] && same(conn, strlen(conn), s, n))
        return 1;
    for (i = 0; i < nl; i++)
        if (same(ml[i].tok, ml[i].len, s, n))
            return 1;
    return 0;
}

/* A token whose bytes are letters, digits and at least one byte no
 * message holds: if the message shows it, it shows it on purpose, not by
 * chance (a quoted pattern shows only bytes of its own field, '?' for the
 * rest, and no such token can span the quote). */
static int telltale(const char *s, size_t n) {
    size_t i;
    int mark = 0;
    if (n < 4)
        return 0;
    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c && strchr("$&+;<=>@^|~`", c))
            mark = 1;
        else if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
            return 0;
    }
    return mark;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static mline_t ml[MAXL];
    static nw_route_t routes[MAXR];
    const uint8_t *p = data, *end = data + size, *s;
    char domain[256], conn[600], err[512], *text;
    size_t n, tlen, nl = 0, nr = 0, line = 0, bad_line = 0, i, j;
    int all_full = 1, rc;
    nw_tokens_t *t = NULL;

    s = next_line(&p, end, &n);
    if (n >= sizeof(domain))
        n = sizeof(domain) - 1;
    memcpy(domain, s, n);
    domain[n] = 0;
    if (strlen(domain) != n)
        domain[0] = 0; /* option strings hold no NUL */
    s = next_line(&p, end, &n);
    if (n >= sizeof(conn))
        n = sizeof(conn) - 1;
    memcpy(conn, s, n);
    conn[n] = 0;
    if (strlen(conn) != n)
        conn[0] = 0;
    s = next_line(&p, end, &n);
    {
        const uint8_t *q = s, *qe = s + n;
        while (q <= qe && nr < MAXR) {
            const uint8_t *c = memchr(q, ',', (size_t)(qe - q));
            size_t il = (size_t)((c ? c : qe) - q);
            if (il == 1 && q[0] == '=')
                nw_route_default(&routes[nr++]);
            else if (nw_route_parse((const char *)q, il, domain, &routes[nr], NULL, 0) == 0)
                nr++;
            if (!c)
                break;
            q = c + 1;
        }
    }
    tlen = (size_t)(end - p);
    text = malloc(tlen ? tlen : 1);
    if (!text)
        abort();
    memcpy(text, p, tlen);

    /* The model: lines, fields, the first bad line. */
    {
        const char *q = text, *qe = text + tlen;
        while (q < qe && !bad_line) {
            const char *nlp = memchr(q, '\n', (size_t)(qe - q));
            size_t ll = (size_t)((nlp ? nlp : qe) - q), k = 0;
            mline_t *m = nl < MAXL ? &ml[nl] : NULL;
            int have_tok = 0;
            size_t npat = 0;
            line++;
            if (line > NW_TOKENS_LINES_MAX) {
                bad_line = line;
                break;
            }
            if (ll && q[ll - 1] == '\r')
                ll--;
            if (memchr(q, 0, ll))
                bad_line = line;
            while (!bad_line && k < ll) {
                size_t f;
                while (k < ll && blank(q[k]))
                    k++;
                if (k == ll || q[k] == '#')
                    break;
                for (f = k; k < ll && !blank(q[k]); k++)
                    ;
                if (!have_tok) {
                    if (!tok_ok(q + f, k - f))
                        bad_line = line;
                    have_tok = 1;
                    if (m) {
                        m->tok = q + f;
                        m->len = k - f;
                        m->npats = 0;
                    }
                } else {
                    nw_route_pat_t pt;
                    if (nw_route_pat_parse(q + f, k - f, domain, &pt, NULL, 0) != 0)
                        bad_line = line;
                    else if (m && m->npats < MAXP)
                        m->pats[m->npats++] = pt;
                    else
                        all_full = 0; /* a pattern the model did not keep */
                    npat++;
                }
            }
            if (!bad_line && have_tok && npat == 0)
                bad_line = line;
            if (!bad_line && have_tok) {
                if (m)
                    nl++;
                else
                    all_full = 0;
            }
            q = nlp ? nlp + 1 : qe;
        }
    }

    err[0] = 0;
    rc = nw_tokens_parse(text, tlen, domain, conn, &t, err, sizeof(err));
    CHECK(memchr(err, 0, sizeof(err)) != NULL && !strchr(err, '\n'));
    if (tlen > NW_TOKENS_FILE_MAX) {
        CHECK(rc == NW_ECONFIG && t == NULL && strcmp(err, "larger than 1 MiB") == 0);
        goto out;
    }
    if (bad_line) {
        char want[32];
        CHECK(rc == NW_ECONFIG && t == NULL);
        snprintf(want, sizeof(want), "line %zu: ", bad_line);
        CHECK(strncmp(err, want, strlen(want)) == 0);
        /* The bad line's token, if it is one, is not shown. */
        {
            const char *q = text, *qe = text + tlen;
            size_t k = 1;
            while (k < bad_line) {
                q = memchr(q, '\n', (size_t)(qe - q)) + 1;
                k++;
            }
            {
                const char *nlp = memchr(q, '\n', (size_t)(qe - q));
                size_t ll = (size_t)((nlp ? nlp : qe) - q), f = 0, e;
                while (f < ll && blank(q[f]))
                    f++;
                for (e = f; e < ll && !blank(q[e]); e++)
                    ;
                if (telltale(q + f, e - f) && !memmem(q + e, ll - e, q + f, e - f))
                    CHECK(!memmem(err, strlen(err), q + f, e - f));
            }
        }
        goto out;
    }
    if (conn[0] && !tok_ok(conn, strlen(conn))) {
        CHECK(rc == NW_ECONFIG && t == NULL);
        CHECK(strcmp(err, "CONN_TOKEN: not a valid token") == 0);
        goto out;
    }
    CHECK(rc == 0 && t != NULL);

    /* Every token is found; equal tokens share an entry, others do not. */
    {
        size_t distinct = 0;
        int ci = conn[0] ? find(t, conn, strlen(conn)) : -1;
        if (conn[0]) {
            CHECK(ci >= 0);
            distinct++;
        }
        for (i = 0; i < nl; i++) {
            int ii = find(t, ml[i].tok, ml[i].len), first = 1;
            CHECK(ii >= 0 && (size_t)ii < nw_tokens_count(t));
            if (conn[0])
                CHECK((ii == ci) == same(ml[i].tok, ml[i].len, conn, strlen(conn)));
            for (j = 0; j < i; j++) {
                int eq = same(ml[i].tok, ml[i].len, ml[j].tok, ml[j].len);
                if (eq)
                    first = 0;
                if (i - j < 64) /* bounded work per input */
                    CHECK((ii == find(t, ml[j].tok, ml[j].len)) == eq);
            }
            if (first && !(conn[0] && same(ml[i].tok, ml[i].len, conn, strlen(conn))))
                distinct++;
            /* One byte less, one byte more. */
            if (ml[i].len > 1 && find(t, ml[i].tok, ml[i].len - 1) >= 0)
                CHECK(model_has(ml, nl, conn, ml[i].tok, ml[i].len - 1));
            {
                char more[NW_TOKENS_TOKEN_MAX + 2];
                memcpy(more, ml[i].tok, ml[i].len);
                more[ml[i].len] = 'x';
                if (find(t, more, ml[i].len + 1) >= 0)
                    CHECK(model_has(ml, nl, conn, more, ml[i].len + 1));
            }
            /* Grants: the union of the token's lines, or anything for CONN_TOKEN. */
            if (all_full && i < 64) /* bounded work per input */
                for (j = 0; j < nr; j++) {
                    int want = conn[0] && same(ml[i].tok, ml[i].len, conn, strlen(conn));
                    size_t a, b;
                    for (a = 0; a < nl && !want; a++)
                        if (same(ml[a].tok, ml[a].len, ml[i].tok, ml[i].len))
                            for (b = 0; b < ml[a].npats && !want; b++)
                                want = nw_route_pat_grants(&ml[a].pats[b], &routes[j]);
                    CHECK(nw_tokens_grants(t, ii, &routes[j]) == want);
                }
        }
        if (all_full)
            CHECK(nw_tokens_count(t) == distinct);
        if (conn[0])
            for (j = 0; j < nr; j++)
                CHECK(nw_tokens_grants(t, ci, &routes[j]));
    }
    CHECK(find(t, "", 0) == -1);
    CHECK(!nw_tokens_grants(t, -1, nr ? &routes[0] : NULL));
out:
    nw_tokens_free(t);
    free(text);
    return 0;
}
