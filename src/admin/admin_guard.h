/* admin_guard.h: the admin listener's checks on who asks (admin_guard.c). */
#ifndef NW_ADMIN_GUARD_H
#define NW_ADMIN_GUARD_H

#include <stddef.h>

#include "http1.h"

/* a equals b, in time that depends only on b's length (the secret's). */
int nw_admin_ct_eq(const char *a, size_t alen, const char *b, size_t blen);
/* The first Authorization field carries the token: "Bearer TOKEN", or
 * Basic with the token as password (any user). */
int nw_admin_authorized(const char *token, size_t token_len, const nw_hfields_t *hf);
/* The value of the first field called name (trimmed), or NULL. */
const char *nw_admin_field(const nw_hfields_t *hf, const char *name, size_t *len);
/* A Host value that no DNS rebinding can send: an IP literal, a one-label
 * name, or NAME.localhost (each with an optional port). */
int nw_admin_host_local(const char *v, size_t n);
/* A request whose Origin is not the Host it was sent to (any scheme). */
int nw_admin_cross_origin(const nw_hfields_t *hf);

#endif
