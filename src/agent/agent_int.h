/* agent_int.h: what the agent's files share: the agent, its tunnel slots,
 * its local connections and requests, and the functions they call across
 * files (agent.c, slot.c, local.c, pool.c, admit.c). */
#ifndef NW_AGENT_INT_H
#define NW_AGENT_INT_H

#include <llhttp.h>

#include "admin.h"
#include "cfg.h"
#include "metrics.h"
#include "conn.h"
#include "dial.h"
#include "http1.h"
#include "log.h"
#include "trim.h"
#include "tun.h"

#define MAX_TUNS 8192 /* live tunnels: MAX_REMOTES x MAX_CONN slots, plus retiring ones */

#define NW_RESOLVE_MAX 64        /* addresses taken from one lookup */

typedef struct agent_s agent_t;
typedef struct lreq_s lreq_t;

/* One address of a REMOTE_URL: MAX_CONN slots go to it (remotes.c). */
typedef struct remote_s {
    unsigned url;       /* its URL in cfg->remotes */
    char addr[46];      /* the resolved address, as text */
    char url_str[1300]; /* "wss://host:port": /api/status, connect errors */
    char label[1400];   /* "wss://host:port (addr)": logs */
    char key[17];       /* random hex, new each time the address is added: its half of
                         * X-Natwrp-Instance (two addresses may reach one server) */
    unsigned missed;    /* lookups in a row whose answer lacked it (remotes.c) */
    int used;
} remote_t;

typedef struct lookup_s lookup_t; /* lookup.c */

/* One URL's lookup, at start and every RESOLVE_INTERVAL. */
typedef struct resolver_s {
    agent_t *ag;
    unsigned url;
    lookup_t *lk;         /* the lookup running (NULL: none) */
    uv_async_t async;     /* its thread says it is done */
    uv_timer_t retry;     /* after a failed lookup: sooner than RESOLVE_INTERVAL */
    unsigned failures;    /* failed lookups in a row (the retry's backoff) */
    int literal_done;     /* the host is an IP address, applied once (no lookup) */
    char last_error[200]; /* the failure last logged ("" resolving) */
    char left_out[600];   /* addresses MAX_REMOTES left out, as last logged */
} resolver_t;

/* One tunnel slot: the dial, the handshake, the tunnel, its backoff. */
typedef struct slot_s {
    nw_hfields_t hs_hf; /* first: the shared llhttp head callbacks find it here */
    agent_t *ag;
    remote_t *rem;      /* the address it dials (NULL: unused) */
    char name[140];     /* the tunnel's id: AGENT_ID, or AGENT_ID-k with MAX_CONN > 1 */
    nw_tun_t *tun;
    nw_dial_t *dial;
    nw_conn_t *hs;      /* connection while the handshake runs */
    llhttp_t hs_parser;
    nw_sbuf_t hs_body;
    char hs_key[25];
    int hs_done;
    uv_timer_t timer;   /* backoff, then handshake deadline */
    unsigned attempt;
    uint64_t up_since;
    /* For /api/status (agent_ops.c): the last reason it went down, when it
     * entered its state (Unix seconds), the routes its 101 granted. */
    char last_error[200];
    int64_t since;
    nw_sbuf_t granted; /* public URLs, comma-separated, as in X-Natwrp-Routes */
} slot_t;

/* One connection to the local service. */
typedef struct lconn_s {
    nw_hfields_t hf; /* first: the shared llhttp head callbacks find it here */
    agent_t *ag;
    nw_conn_t *conn;
    llhttp_t parser;
    lreq_t *req;
    const char *parse_end; /* end of the bytes being parsed */
    struct lconn_s *next; /* idle pool */
    unsigned reused : 1, got_bytes : 1, interim : 1, idle : 1, done : 1, piped : 1,
        stray : 1; /* bytes followed the response: never pooled */
} lconn_t;

/* One stream's exchange with the local service. */
struct lreq_s {
    agent_t *ag;
    nw_strm_t *strm;
    lconn_t *lc;
    nw_dial_t *dial;
    nw_sbuf_t head;   /* serialized request head, kept for one retry */
    nw_bufq_t early;  /* body that arrived before a connection was ready */
    nw_bufq_t held;   /* upgrade: the client's bytes, held until the service says 101 */
    nw_sbuf_t pub;    /* the public origin, "proto://host" ("" unknown: no rewriting) */
    nw_sbuf_t sent;   /* PRESERVE_HOST: the public Host sent to the service */
    nw_sbuf_t rw;     /* rewritten redirect values of the response head */
    uint64_t body_left; /* Content-Length (0 for an upgrade without one) not yet received */
    uint64_t wait_since; /* when it joined the wait queue (LOCAL_QUEUE_TIMEOUT) */
    uint64_t cap;     /* its capture in the inspector (0: none) */
    uint64_t t_open;  /* uv_hrtime() at its OPEN (natwrp_local_request_duration_seconds) */
    uint32_t rst;     /* the code its stream was reset with (agent_ops.c: the status the client sees) */
    unsigned interims; /* interim (1xx) heads forwarded (lc_interim) */
    lreq_t *prev, *next;
    lreq_t *wnext;    /* waiting for a local connection slot */
    unsigned req_end : 1, chunked : 1, body_sent : 1, is_head : 1, head_out : 1, resp_head : 1,
        resp_end : 1, retried : 1, admitted : 1, waiting : 1,
        upgrade : 1,  /* the request carries Upgrade: its bytes after the head are raw */
        piped : 1,    /* the local service answered 101: a raw pipe both ways */
        in_eof : 1,   /* piped: the server's side (the client) ended */
        has_cl : 1,   /* OPEN carried Content-Length: body_left bounds the body */
        pipe_slot : 1, /* counted in npipes (an upgrade request or a pipe) */
        counted : 1,   /* in natwrp_local_requests_total (agent_ops.c) */
        peer_reset : 1, /* the server reset its stream (the client went away) */
        origin_pub : 1,  /* its Origin (referer_pub: its Referer's) is the public
                          * origin while the Host sent is LOCAL_URL's: a refusal */
        referer_pub : 1; /* gets the PRESERVE_HOST hint (local.c) */
    uint64_t log_t0;  /* access log: uv_hrtime() at the OPEN */
    uint64_t log_in, log_out; /* access log: body (or pipe) bytes each way */
    uint64_t log_tun; /* access log: the tunnel's id */
    int log_status;   /* access log: what went back (0: nothing yet) */
    int log_upstream; /* access log: the local service's status, or 0 */
};

struct agent_s {
    uv_loop_t *loop;
    nw_agent_cfg_t *cfg;
    char remote_str[1400];
    char local_str[1400];
    char host_hdr[300]; /* LOCAL_URL's authority for Host */
    slot_t *slots;            /* MAX_CONN per remote, remote k's from k * MAX_CONN */
    unsigned nslots;          /* MAX_REMOTES * MAX_CONN */
    remote_t *remotes;        /* MAX_REMOTES of them */
    unsigned nremotes_seen;   /* remotes added so far (logs) */
    char instance[17];        /* random hex for this process: X-Natwrp-Instance's first half */
    resolver_t resolvers[NW_REMOTE_URLS_MAX];
    uv_timer_t rtimer;        /* RESOLVE_INTERVAL */
    uv_check_t reap;          /* closes a gone address's tunnels once idle */
    nw_tun_t *tuns[MAX_TUNS]; /* every live tunnel, current or retiring */
    size_t ntuns;
    uint64_t tun_seq;
    lconn_t *idle;
    size_t nidle;
    lreq_t *reqs;
    size_t nreqs;
    nw_trimmer_t trim;        /* returns memory after a burst of requests */
    size_t nlocal;            /* requests holding or dialling a local connection */
    size_t npipes;            /* upgrade requests and pipes (MAX_LOCAL_PIPES) */
    lreq_t *wait_head, *wait_tail; /* requests waiting for one, oldest first */
    size_t nwait;
    uv_timer_t qtimer;        /* LOCAL_QUEUE_TIMEOUT of the oldest waiting request */
    int admitting;
    uv_signal_t sig[2];
    uv_signal_t hup;          /* SIGHUP: reopen the access log */
    uv_timer_t grace;         /* SIGTERM: the deadline for in-flight requests */
    uv_check_t drain;         /* SIGTERM: checks after each I/O whether all is done */
    int stopping;             /* 1 draining, 2 closing everything */
    int drained;              /* draining: every request done, tunnels closing */
    int notified_ready;       /* systemd was told READY=1 (the first tunnel up) */
    int origin_hinted;        /* the PRESERVE_HOST hint was logged (local.c): once */
    uv_timer_t watchdog;      /* systemd's WATCHDOG=1 (notify.c) */
    nw_tls_conf_t *remote_tls; /* NULL for http:// */
    nw_tls_conf_t *local_tls;
    nw_metrics_t *metrics;    /* --admin: what /metrics shows (NULL without) */
    nw_admin_t *admin;        /* --admin: the admin listener (NULL without) */
    struct nw_inspect_s *ins; /* the request inspector (NULL: INSPECT=0 or no --admin) */
    unsigned nreplays;        /* inspector replays in flight (requests.c) */
    struct agent_ops_s *ops;  /* metrics and /api/status (agent_ops.c); NULL without --admin */
};

/* alog.c */
void lreq_alog(lreq_t *r);

/* h names the field lit (a literal): lengths first, as most names differ
 * there, then the case-blind compare. */
#define NAME_IS(h, lit) ((h)->name_len == sizeof(lit) - 1 && nw_strieq((h)->name, (h)->name_len, lit))

/* origin.c: the public origin of r (r->pub, r->sent) from its OPEN; its
 * Destination and If values made local, into r->rw; the response's
 * redirects made public. 0, or -1 when out of memory. */
int lreq_public(lreq_t *r, const nw_mux_frame_t *f);
int lreq_req_urls(lreq_t *r, const nw_mux_frame_t *f);
int lreq_redirects(lreq_t *r, nw_hdr_t *hdrs, size_t n);

/* agent.c: process lifecycle */
void agent_check_done(agent_t *ag);

/* remotes.c: resolving REMOTE_URL, one remote per address */
void remotes_init(agent_t *ag);  /* handles, once */
void remotes_start(agent_t *ag); /* first lookups, then every RESOLVE_INTERVAL */
void remotes_stop(agent_t *ag);  /* no more lookups (draining) */
void remotes_close(agent_t *ag); /* stop and close the handles */

/* lookup.c: a name's lookup on a thread of its own (getaddrinfo, A and
 * AAAA), signalling async when done. NULL: could not start. */
lookup_t *lookup_start(const char *host, uv_async_t *async);
/* Done? 1 with *res (NULL on failure, then *why) and lk freed; 0 not yet. */
struct addrinfo;
int lookup_take(lookup_t *lk, struct addrinfo **res, const char **why);
void lookup_abandon(lookup_t *lk); /* not wanted any more: freed when it ends */

/* slot.c: tunnel slots */
void slot_connect(slot_t *sl);
void slot_cancel(slot_t *sl);
void slot_random_hex(char out[17]); /* 16 random hex digits */
const char *slot_remote(const slot_t *sl); /* "wss://host:port (addr)" */
/* Append the tunnel upgrade request of slot sl with Sec-WebSocket-Key
 * key to req. 0 or NW_ENOMEM. */
int slot_hs_request(const slot_t *sl, const char *key, nw_sbuf_t *req);

/* local.c: stream <-> local request */
void lc_parser_init(lconn_t *lc);
void ag_on_open(nw_tun_t *t, nw_strm_t *s, const nw_mux_frame_t *f);
void ag_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end);
void ag_on_reset(nw_strm_t *s, uint32_t code);
void ag_on_drain(nw_strm_t *s);
void lreq_detach(lreq_t *r, uint32_t code);
void lreq_fail(lreq_t *r, uint32_t code, const char *why);
void lreq_start(lreq_t *r);
void lreq_free(lreq_t *r);

/* hint.c: the PRESERVE_HOST hint. note_origin at OPEN (host and proto: the
 * public Host and X-Forwarded-Proto), hint_refusal with the status. */
void lreq_note_origin(lreq_t *r, const nw_mux_frame_t *f, const char *host, size_t hlen,
                      const char *proto, size_t plen);
void lreq_hint_refusal(lreq_t *r, unsigned st);

/* requests.c: the request inspector's hooks (no-ops without one), its
 * admin pages (/api/requests...) and Replay */
struct nw_admin_s;
void ins_begin(lreq_t *r, const nw_mux_frame_t *f);
void ins_req_body(lreq_t *r, const void *p, size_t n);
void ins_req_end(lreq_t *r);
void ins_resp_head(lreq_t *r, int status, const nw_hdr_t *h, size_t n);
void ins_resp_body(lreq_t *r, const void *p, size_t n);
void ins_end(lreq_t *r, const char *why);
/* Create the inspector (INSPECT=1) and register its pages on a. Called
 * once the admin listener is up; ag_inspect_free after it stopped. */
int ag_inspect_start(agent_t *ag, struct nw_admin_s *a);
void ag_inspect_free(agent_t *ag);

/* pool.c: the keep-alive pool */
lconn_t *pool_take(agent_t *ag);
void lc_close(lconn_t *lc);
void lc_abort(lconn_t *lc);
void lreq_done(lreq_t *r);

/* agent_ops.c: the agent's metrics, /api/status and /readyz (with --admin; each
 * counting call costs one NULL check without it) */
int ops_start(agent_t *ag); /* families, pages, the ready check: 0 or NW_ENOMEM */
void ops_free(agent_t *ag);
void ops_reconnect(slot_t *sl, const char *reason, const char *why); /* why: for last_error */
void ops_local_error(agent_t *ag, const char *reason);
void ops_dial_error(agent_t *ag, int err);      /* connecting to the local service failed */
void ops_read_error(agent_t *ag, ssize_t err);  /* its connection failed */
void ops_response(lreq_t *r, unsigned status);  /* r's response head went out */
void ops_request_end(lreq_t *r);                 /* r is freed: counted if no head went out */
void ops_unparsed(agent_t *ag);                  /* an OPEN refused before it became a request */
void ops_bytes(agent_t *ag, int to_local, size_t n);

/* admit.c: admission to the local service */
void admit_waiters(agent_t *ag);
void lreq_admit(lreq_t *r);
int admit_pipe(lreq_t *r);
void admit_release(lreq_t *r);
void lreq_refuse(lreq_t *r, const char *body, size_t len);

#endif
