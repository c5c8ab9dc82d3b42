/* tokens.c: PROVISIONAL stand-in: CONN_TOKEN only (replaced at merge). */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "nw.h"
#include "tokens.h"
struct nw_tokens { char tok[600]; size_t n; };
int nw_tokens_parse(const char *text, size_t len, const char *domain, const char *conn_token,
                    nw_tokens_t **out, char *err, size_t errlen) {
    (void)text; (void)len; (void)domain; (void)err; (void)errlen;
    *out = calloc(1, sizeof(**out));
    if (conn_token) { (*out)->n = strlen(conn_token); memcpy((*out)->tok, conn_token, (*out)->n); }
    return 0;
}
int nw_tokens_load(const char *path, const char *domain, const char *conn_token,
                   nw_tokens_t **out, char *err, size_t errlen) {
    (void)path;
    return nw_tokens_parse("", 0, domain, conn_token, out, err, errlen);
}
void nw_tokens_free(nw_tokens_t *t) { free(t); }
int nw_tokens_find(const nw_tokens_t *t, const char *tok, size_t len) {
    return t->n && len == t->n && memcmp(tok, t->tok, len) == 0 ? 0 : -1;
}
int nw_tokens_grants(const nw_tokens_t *t, int idx, const nw_route_t *r) { (void)t; (void)r; return idx == 0; }
size_t nw_tokens_count(const nw_tokens_t *t) { return t->n ? 1 : 0; }
