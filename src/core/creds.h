/* creds.h: the agent's Basic credentials (AUTH_BASIC, AUTH_BASIC_FILE):
 * "user:password" checked (RFC 7617) and kept as the base64 (RFC 4648)
 * that the handshake sends serve in X-Natwrp-Auth-Basic. Pure: no uv.h.
 * No message here ever holds a credential, a user name included. */
#ifndef NW_CREDS_H
#define NW_CREDS_H

#include <stddef.h>

#define NW_CREDS_MAX 64     /* credentials in all (NW_HS_BASIC_MAX) */
#define NW_CRED_LEN_MAX 255 /* bytes of one "user:password" */
#define NW_CRED_B64_MAX (4 * ((NW_CRED_LEN_MAX + 2) / 3))

typedef struct {
    char b64[NW_CREDS_MAX][NW_CRED_B64_MAX + 1]; /* base64 of "user:password", padded */
    size_t n;
} nw_creds_t;

/* Standard base64 of in[0..n) with padding into out (cap bytes, NUL
 * added). Its length, or 0 if out is too small (and n > 0). */
size_t nw_base64_encode(const void *in, size_t n, char *out, size_t cap);

/* Check "user:password" (n bytes) and add its base64 to c; an exact
 * duplicate is kept once. The user is non-empty with no ':'; the password
 * (after the first ':') is non-empty and may hold ':'; neither holds a
 * control byte; at most NW_CRED_LEN_MAX bytes. 0, or NW_ECONFIG with a
 * reason in err that never quotes the value. */
int nw_creds_add(nw_creds_t *c, const char *s, size_t n, char *err, size_t errlen);

/* Add every credential of a file's text (len bytes): one "user:password"
 * a line (LF or CRLF); blank lines and lines whose first non-blank byte is
 * '#' are skipped. 0, or NW_ECONFIG with "line N: reason" in err. */
int nw_creds_parse(nw_creds_t *c, const char *text, size_t len, char *err, size_t errlen);

#endif
