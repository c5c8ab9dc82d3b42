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

#endif
