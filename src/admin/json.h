/* json.h: writing JSON into a growable buffer, pure. Numbers and literals
 * go in with nw_sbuf_appendf; strings through nw_json_str, which escapes
 * them (RFC 8259) and replaces bytes that are not UTF-8 with U+FFFD. */
#ifndef NW_JSON_H
#define NW_JSON_H

#include <stddef.h>

#include "buf.h"

/* Append s (n bytes) as a quoted JSON string. 0 or NW_ENOMEM. */
int nw_json_str(nw_sbuf_t *b, const char *s, size_t n);
/* The same for a NUL-terminated string (NULL: null). */
int nw_json_cstr(nw_sbuf_t *b, const char *s);

/* UTF-8 (RFC 3629) at s, n > 0 bytes left: the length of the well-formed
 * sequence that starts there (1-4), or 0 when it is not one; then
 * nw_utf8_bad says how many bytes one U+FFFD replaces (the maximal
 * subpart, Unicode 3.9, so one per broken character). Also used by the
 * metrics exposition, whose label values must be UTF-8. */
size_t nw_utf8_len(const char *s, size_t n);
size_t nw_utf8_bad(const char *s, size_t n);

#endif
