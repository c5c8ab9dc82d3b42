/* tokens.h: serve's --tokens file (issue 11): which routes each agent
 * token may claim (tokens.c, pure: no uv.h). A line is
 * `TOKEN PATTERN...`; a pattern is a token pattern of routes.h ("*",
 * "*.alice.example.com", "alice.example.com", or a dot-less name under
 * --domain). Lines with the same token are one entry; CONN_TOKEN, when
 * given, is one more line `CONN_TOKEN *`. A token is looked up in time
 * that depends neither on which entry holds it nor on where it differs
 * from another (nw_tokens_find). */
#ifndef NW_TOKENS_H
#define NW_TOKENS_H

#include <stddef.h>

#include "routes.h"

#define NW_TOKENS_TOKEN_MAX 512         /* bytes in one token */
#define NW_TOKENS_LINES_MAX 100000      /* lines in a file, blank and comment lines included */
#define NW_TOKENS_FILE_MAX (1024 * 1024) /* bytes in a file */

typedef struct nw_tokens nw_tokens_t;

/* Parse the text of a tokens file (len bytes, not NUL-terminated; a NUL
 * byte is an error). domain: serve's --domain for dot-less patterns (NULL
 * or "": such a pattern is an error). conn_token: CONN_TOKEN or NULL/""
 * (adds a line "CONN_TOKEN *"). Syntax: fields separated by blanks (space,
 * tab); '#' at the start of a field starts a comment to the end of the
 * line; blank lines are ignored; LF or CRLF line ends; a token is 1-512
 * visible ASCII bytes and needs at least one pattern. 0 with *out set, or
 * NW_ECONFIG with err = "line N: reason" (the token itself is never in
 * it), or NW_ENOMEM. */
int nw_tokens_parse(const char *text, size_t len, const char *domain, const char *conn_token,
                    nw_tokens_t **out, char *err, size_t errlen);

/* Read (at most NW_TOKENS_FILE_MAX bytes) and parse the file path: err =
 * "FILE: line N: reason", "FILE: <strerror>" or "FILE: larger than 1 MiB".
 * Blocking file I/O: call it at start-up or on SIGHUP, not per request. */
int nw_tokens_load(const char *path, const char *domain, const char *conn_token,
                   nw_tokens_t **out, char *err, size_t errlen);

/* NULL is fine. */
void nw_tokens_free(nw_tokens_t *t);

/* The entry that holds token tok (len bytes), or -1 if none does. Every
 * entry is compared (a SHA-256 of tok against each entry's, without an
 * early exit and without a branch on the result), so the time taken
 * depends only on len and the number of entries. */
int nw_tokens_find(const nw_tokens_t *t, const char *tok, size_t len);

/* Entry idx grants route r: one of its patterns does (nw_route_pat_grants).
 * 0 for an idx out of range. */
int nw_tokens_grants(const nw_tokens_t *t, int idx, const nw_route_t *r);

/* Entries: distinct tokens. */
size_t nw_tokens_count(const nw_tokens_t *t);

#endif
