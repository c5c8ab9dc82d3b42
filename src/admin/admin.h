/* admin.h: the admin listener both roles run beside their work (--admin
 * ADDR): plain HTTP/1.1 on its own socket, never proxied, nothing of it on
 * the public port. admin.c owns the listener, the connections, request
 * parsing, ADMIN_TOKEN and the path table; each role registers its pages
 * (serve: serve/serve_ops.c; agent: agent/agent_ops.c) and the shared ones come from
 * here (/livez, /readyz via a callback, /metrics via metrics.h, the
 * dashboard's embedded files). */
#ifndef NW_ADMIN_H
#define NW_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "buf.h"
#include "cfg.h"

typedef struct nw_admin_s nw_admin_t;
typedef struct nw_admin_req_s nw_admin_req_t;

/* One request on the admin listener, valid until it is answered
 * (nw_admin_respond) or aborted (on_abort). The body is read whole first
 * (at most NW_ADMIN_BODY_MAX, else 413). */
#define NW_ADMIN_BODY_MAX (128 * 1024)
struct nw_admin_req_s {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* NUL-terminated, without the query */
    const char *query;  /* NUL-terminated, "" when none (no '?') */
    const char *body;   /* body_len bytes (not NUL-terminated) */
    size_t body_len;
    /* Set by a handler that answers later (nw_admin_respond after this
     * callback returned): called instead if the client goes first; the
     * request is gone after it. */
    void (*on_abort)(nw_admin_req_t *req);
    void *data;         /* the handler's */
};

/* A page. It answers with nw_admin_respond, now or later. A HEAD request
 * reaches it as "GET" (the body of its answer is dropped). */
typedef void (*nw_admin_fn)(nw_admin_req_t *req, void *ud);

/* Methods a page takes (nw_admin_handle_methods); any other gets 405 with
 * Allow. */
#define NW_ADMIN_GET 1u  /* GET and HEAD */
#define NW_ADMIN_POST 2u

/* Start the admin listener on cfg->admin (cfg->admin.set must be 1) with
 * cfg->admin_token ("" = open). Logs "admin listening on http://ADDR".
 * 0 with *out set, or a negative error (the address cannot be bound). */
int nw_admin_start(uv_loop_t *loop, const nw_ops_cfg_t *cfg, nw_admin_t **out);

/* Register a page for an exact path ("/metrics"), or for every path under
 * a prefix when path ends with '/' ("/api/requests/"). A later
 * registration of the same path replaces the earlier one. 0 or NW_ENOMEM. */
int nw_admin_handle(nw_admin_t *a, const char *path, nw_admin_fn fn, void *ud);
/* The same with the methods the page takes (nw_admin_handle takes
 * NW_ADMIN_GET): e.g. NW_ADMIN_POST for "/api/requests/" (replay), which
 * then also sees POSTs to paths it has no use for and answers them. */
int nw_admin_handle_methods(nw_admin_t *a, const char *path, unsigned methods, nw_admin_fn fn,
                            void *ud);

/* /readyz asks this with the request's query ("" without one; e.g. serve's
 * "host=NAME" or "verbose"): 1 when the process is useful, else 0. It may
 * write the answer's body into out (lines of printable text, each ending
 * in '\n'); left empty, the body is "ready" or "not ready". 200 or 503
 * follows the result. Without one, /readyz answers 200 whenever /livez
 * does. */
typedef int (*nw_admin_ready_fn)(void *ud, const char *query, nw_sbuf_t *out);
void nw_admin_set_ready(nw_admin_t *a, nw_admin_ready_fn fn, void *ud);

/* Answer req: status, Content-Type (NULL: text/plain; charset=utf-8),
 * body (copied). Adds Content-Length, Cache-Control: no-store and
 * X-Content-Type-Options: nosniff. req is gone after this. */
void nw_admin_respond(nw_admin_req_t *req, int status, const char *ctype, const void *body,
                      size_t len);

/* Register /metrics: the text exposition of m (rendered at each scrape,
 * Content-Type text/plain; version=0.0.4). m must outlive a. 0 or
 * NW_ENOMEM. */
struct nw_metrics;
int nw_admin_metrics(nw_admin_t *a, struct nw_metrics *m);

/* The port the listener got (for --admin ADDR with port 0: the log line
 * says it too). */
int nw_admin_port(const nw_admin_t *a);

/* Close the listener and every admin connection (requests waiting on a
 * handler are aborted); frees a once its handles are closed. */
void nw_admin_stop(nw_admin_t *a);

#endif
