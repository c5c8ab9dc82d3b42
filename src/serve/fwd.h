/* fwd.h: the head serve forwards to the local service for a public
 * request, as a pure function of the parsed head (no uv.h): the fields
 * kept (hop-by-hop, Connection-listed and serve's own dropped), the
 * X-Forwarded-* it writes, the Upgrade it passes on, and the target in
 * origin form, with Host set to an absolute-form target's authority (RFC
 * 9112 3.2.2: the host it was routed by). pc_dispatch opens the stream with it; fuzz_head checks it. */
#ifndef NW_FWD_H
#define NW_FWD_H

#include "buf.h"
#include "http1.h"

/* What the forwarded head depends on beyond the request head. */
typedef struct {
    const char *ip; /* the client's address (no port, no brackets) */
    size_t iplen;
    int trust;      /* --trust-proxy: the client's X-Forwarded-* and the like are kept */
    int auth_token; /* AUTH_TOKEN is set: X-Auth-Token is serve's, never forwarded */
    int https;      /* the client came over TLS */
    int upgrade;    /* an upgrade request: Connection: Upgrade and its Upgrade go on */
    size_t auth_field; /* 1 + the index in the head of the Authorization field that
                          carried AUTH_TOKEN (serve's, never forwarded), or 0 */
    size_t route_auth; /* the same for a route's Basic credential (AUTH_BASIC), or 0 */
    const char *authority; /* set by nw_fwd_build: an absolute-form target's authority */
    size_t alen;
} nw_fwd_in_t;

/* The forwarded head. Names and values point into the request head, into
 * string literals, or into the two buffers here: keep the request head and
 * this object until the OPEN frame is packed, then nw_fwd_free. */
typedef struct {
    nw_hdr_t hdrs[NW_HTTP_MAX_FIELDS + 6];
    size_t n;
    const char *target; /* origin form ("/p?q" or "*") */
    size_t tlen;
    nw_sbuf_t xff, tgt; /* X-Forwarded-For's value; a target that needed a '/' */
} nw_fwd_head_t;

#define NW_FWD_MAX_DROP 12

/* The fields serve drops from a request before forwarding it (besides the
 * hop-by-hop ones): into drop, NULL-terminated; returns how many. */
size_t nw_fwd_drop_list(const nw_fwd_in_t *in, const char *drop[NW_FWD_MAX_DROP]);
/* Build the forwarded head of the parsed request h (its start line is the
 * target). 0, or -1 when the target is not one serve forwards (authority
 * form, garbage) or the fields do not fit. */
int nw_fwd_build(const nw_hfields_t *h, const nw_fwd_in_t *in, nw_fwd_head_t *out);
void nw_fwd_free(nw_fwd_head_t *out);

#endif
