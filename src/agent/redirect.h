/* redirect.h: absolute URLs across the tunnel (redirect.c, pure): the
 * local service's redirects (Location, Content-Location, Refresh) made to
 * name the public origin, and the client's resource URLs (Destination, If)
 * made to name the local service. */
#ifndef NW_REDIRECT_H
#define NW_REDIRECT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* What a response URL is compared with, and what it becomes. */
typedef struct {
    int local_tls;          /* LOCAL_URL's scheme: https */
    const char *local_host; /* LOCAL_URL's host, no brackets */
    uint16_t local_port;    /* LOCAL_URL's port (explicit or default) */
    const char *sent;       /* the Host value sent to the service */
    size_t sent_len;
    const char *pub;        /* the public origin, "https://host[:port]" */
    size_t pub_len;
} nw_redirect_t;

/* Is name (case-insensitive) a field whose URL is rewritten? 1 for
 * Location and Content-Location, 2 for Refresh, else 0. */
int nw_redirect_field(const char *name, size_t len);

/* If the URL in value v (for Refresh: the one after "url=") points at
 * LOCAL_URL's origin or at the sent Host, append the value with that origin
 * replaced by the public one to out and return 1; else 0 (relative, foreign
 * or unparsable URLs stay as they are). -1 when out of memory. */
int nw_redirect_rewrite(const nw_redirect_t *rd, int kind, const char *v, size_t n,
                        nw_sbuf_t *out);

/* What a request URL is compared with, and what it becomes. */
typedef struct {
    int pub_tls;            /* the public scheme (X-Forwarded-Proto): https */
    const char *pub_host;   /* the public authority (X-Forwarded-Host) */
    size_t pub_host_len;
    int local_tls;          /* LOCAL_URL's scheme: https */
    const char *local_auth; /* the Host sent to the service */
    size_t local_auth_len;
    const char *base;       /* LOCAL_URL's base path ("" none) */
    size_t base_len;
} nw_requrl_t;

/* Is name a request field naming resources by URL? 1 for Destination (one
 * URL, RFC 4918 10.3), 2 for If (its Resource-Tags, 10.4), else 0. */
int nw_redirect_req_field(const char *name, size_t len);

/* If the URL in v (for If: any Resource-Tag's) names the public origin,
 * append the value with that origin replaced by local_tls://local_auth and
 * base before the path, and return 1; a path-absolute URL gets base before
 * it (when there is one). Else 0, out unchanged (relative, foreign or
 * unparsable URLs, a malformed If). -1 when out of memory. */
int nw_redirect_request(const nw_requrl_t *q, int kind, const char *v, size_t n,
                        nw_sbuf_t *out);

/* Is the Origin field value o (RFC 6454: "scheme://host[:port]") the
 * origin of host[:port] under https (tls) or http, a default port equal to
 * none? 1 or 0 ("null", other schemes, userinfo: 0). With url, o is a URL
 * (a Referer) whose origin is compared, its path, query and fragment
 * ignored; else a path is 0. A browser's same-origin request carries the
 * public origin; the agent uses this to tell the user why a service that
 * compares it with Host refused. */
int nw_redirect_origin_is(const char *o, size_t n, int url, int tls, const char *host,
                          size_t hlen);

#endif
