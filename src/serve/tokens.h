/* tokens.h: PROVISIONAL (replaced by branch k2's module at merge). */
#ifndef NW_TOKENS_H
#define NW_TOKENS_H
#include <stddef.h>
#include "routes.h"
typedef struct nw_tokens nw_tokens_t;
int nw_tokens_parse(const char *text, size_t len, const char *domain, const char *conn_token,
                    nw_tokens_t **out, char *err, size_t errlen);
int nw_tokens_load(const char *path, const char *domain, const char *conn_token,
                   nw_tokens_t **out, char *err, size_t errlen);
void nw_tokens_free(nw_tokens_t *t);
int nw_tokens_find(const nw_tokens_t *t, const char *tok, size_t len);
int nw_tokens_grants(const nw_tokens_t *t, int idx, const nw_route_t *r);
size_t nw_tokens_count(const nw_tokens_t *t);
#endif
