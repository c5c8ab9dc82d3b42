/* inspect.h: the agent's request inspector, pure (no libuv): a ring of the
 * last NW_INSPECT_RING exchanges with the local service (method, target,
 * status, duration, sizes, both heads, the first NW_INSPECT_BODY_MAX bytes
 * of each body) and their JSON for the admin API (/api/requests).
 *
 * Cost: heads are always kept (one copy of each); bodies only while a
 * dashboard asked within NW_INSPECT_LIVE_MS (nw_inspect_touch), so with no
 * dashboard open a request costs two small copies. Memory bound:
 * NW_INSPECT_RING x (heads + 2 x NW_INSPECT_BODY_MAX): 25 MiB of
 * bodies plus the heads (a request head as serve let it through, a
 * response head at most MAX_HEAD). Secret values
 * are kept (Replay sends them) but rendered as "***" unless secrets is
 * set. */
#ifndef NW_INSPECT_H
#define NW_INSPECT_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "mux.h"

#define NW_INSPECT_RING 200
#define NW_INSPECT_BODY_MAX (64 * 1024)
#define NW_INSPECT_HEX_MAX 1024
#define NW_INSPECT_LIVE_MS 10000

typedef struct nw_inspect_s nw_inspect_t;

/* One captured exchange. Headers are packed "name\0value\0" pairs. */
typedef struct nw_icap_s {
    uint64_t id;          /* 1, 2, ... (never reused) */
    double time;          /* wall clock at the request, Unix seconds */
    uint64_t t0_ms;       /* monotonic start (the caller's clock) */
    double duration;      /* seconds to the end, -1 while in flight */
    int status;           /* response status, 0 before the head */
    char *method, *target;
    nw_sbuf_t req_hdrs, resp_hdrs;
    size_t nreq_hdrs, nresp_hdrs;
    nw_sbuf_t req_body, resp_body; /* the first NW_INSPECT_BODY_MAX bytes */
    uint64_t req_bytes, resp_bytes; /* the whole bodies */
    unsigned bodies : 1;  /* bodies were captured (a dashboard was open) */
    unsigned done : 1;
    unsigned req_whole : 1; /* the request's body arrived to its end */
    char error[160];      /* why it failed, "" when it did not */
} nw_icap_t;

nw_inspect_t *nw_inspect_new(int secrets);
void nw_inspect_free(nw_inspect_t *ins);

/* A dashboard asked (now_ms on the caller's monotonic clock): capture
 * bodies for the next NW_INSPECT_LIVE_MS. */
void nw_inspect_touch(nw_inspect_t *ins, uint64_t now_ms);
int nw_inspect_live(const nw_inspect_t *ins, uint64_t now_ms);

/* A new capture (the oldest leaves the ring when it is full); its id, or
 * 0 when out of memory. hdrs are the request's fields. */
uint64_t nw_inspect_begin(nw_inspect_t *ins, double wall, uint64_t now_ms, const char *method,
                          size_t mlen, const char *target, size_t tlen, const nw_hdr_t *hdrs,
                          size_t n);
/* The request's body has arrived to its end (Replay needs it whole). */
void nw_icap_req_end(nw_icap_t *c);
/* The capture with this id while it is in the ring, else NULL. */
nw_icap_t *nw_inspect_get(nw_inspect_t *ins, uint64_t id);

void nw_icap_req_body(nw_icap_t *c, const void *p, size_t n);
void nw_icap_resp_head(nw_icap_t *c, int status, const nw_hdr_t *hdrs, size_t n);
void nw_icap_resp_body(nw_icap_t *c, const void *p, size_t n);
/* The exchange ended (error NULL or "" when it went well). */
void nw_icap_end(nw_icap_t *c, uint64_t now_ms, const char *error);
/* Can it be replayed: the whole request body was captured. */
int nw_icap_replayable(const nw_icap_t *c);

/* Is this a field whose value the inspector masks (Authorization,
 * Proxy-Authorization, Cookie, Set-Cookie, X-Auth-Token)? */
int nw_inspect_secret(const char *name, size_t len);

/* {"inspect":true,"last":ID,"requests":[...]} (oldest first) of the captures with id > after,
 * without bodies. 0 or NW_ENOMEM. */
int nw_inspect_list_json(const nw_inspect_t *ins, uint64_t after, nw_sbuf_t *out);
/* One capture with heads and bodies. */
int nw_inspect_one_json(const nw_inspect_t *ins, const nw_icap_t *c, nw_sbuf_t *out);
/* A body preview: {"text":"..."} when p is UTF-8 text, else {"hex":"..."}
 * (the first NW_INSPECT_HEX_MAX bytes), plus "size" (total bytes) and
 * "truncated" (total > captured). */
int nw_inspect_body_json(nw_sbuf_t *out, const char *p, size_t n, uint64_t total);
/* Packed headers as [["name","value"],...], secrets masked unless
 * secrets. */
int nw_inspect_hdrs_json(nw_sbuf_t *out, const nw_sbuf_t *packed, size_t n, int secrets);
/* Is p[0..n) text: valid UTF-8 with no control bytes but tab, CR, LF? */
int nw_inspect_is_text(const char *p, size_t n);

#endif
