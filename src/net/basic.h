/* basic.h: the Basic authentication scheme (RFC 7617) as a pure function:
 * "Basic <token68>" decoded to user-id and password. No libuv. */
#ifndef NW_BASIC_H
#define NW_BASIC_H

#include <stddef.h>

enum {
    NW_BASIC_OK = 0,
    NW_BASIC_NOT = -1, /* not the Basic scheme: another credential */
    NW_BASIC_BAD = -2  /* Basic, but malformed: not authenticated */
};

/* Room the decoded credentials of a value of n bytes can need. */
#define NW_BASIC_CAP(n) ((n) / 4 * 3 + 3)

/* Decode the Authorization value v (n bytes) into out (cap bytes): the
 * scheme "Basic" in any case, one or more spaces, then base64 (RFC 4648,
 * padding optional, nothing after it but spaces). The decoded user-pass
 * is split at its first ':' (the user-id has none; the password may).
 * *pass and *plen are the password within out. NW_BASIC_BAD for bad
 * base64, no ':', nothing at all, a control character in either part
 * (RFC 7617 2), or more than cap bytes. */
int nw_basic_parse(const char *v, size_t n, char *out, size_t cap, const char **pass,
                   size_t *plen);

#endif
