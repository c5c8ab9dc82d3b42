/* serve_int.h: what the files of serve in src/serve/ share: the public
 * connection, the server, limits, and the functions called across files. */
#ifndef NW_SERVE_INT_H
#define NW_SERVE_INT_H

#include <llhttp.h>
#include <regex.h>

#include "admin.h"
#include "cfg.h"
#include "conn.h"
#include "handshake.h"
#include "http1.h"
#include "metrics.h"
#include "routes.h"
#include "trim.h"
#include "tun.h"

#define LINGER_MS 2000          /* drain input this long after an error reply */
#define MAX_TUNNELS 1024        /* the array bound; --max-tunnels is at most this */
#define MAX_TRIES 3             /* dispatch attempts for a request never sent */
#define FRESH_DRAIN_MS 2000     /* draining: a connection with no request yet gets this long */
#define PIPELINE_MAX (64 * 1024) /* pipelined bytes held while a response runs */
#define DISCARD_MAX (1024 * 1024) /* request body read and dropped to keep a connection after an error */
#define OUT_MAX (64 * 1024)     /* unsent response bytes above which no next request is parsed */

typedef struct serve_s serve_t;
typedef struct nw_tokens nw_tokens_t;
typedef struct srv_ops_s srv_ops_t;     /* metrics and status pages (serve_ops.c) */
typedef struct srv_rstat_s srv_rstat_t; /* one route's counters (serve_ops.c) */

/* One Basic credential a tunnel's routes demand: "user:password". */
typedef struct {
    char *p;
    size_t n;
} srv_cred_t;

/* serve's side of a tunnel (tun->data), owned by the registry
 * (registry.c): what it was granted and with which token. Freed when the
 * tunnel closes. */
typedef struct srv_tun_s {
    nw_tun_t *tun;
    serve_t *srv;
    nw_route_t *routes;  /* the routes it serves (the default route without ROUTES) */
    size_t nroutes;
    int named;           /* the agent sent X-Natwrp-Routes */
    int attached;        /* its routes are in the table (until closed or revoked) */
    int revoked;         /* SIGHUP took its grant away: no new streams, closing */
    uint64_t revoked_at; /* loop time of that, for --grace */
    int revoked_shut;    /* its streams were done: our close frame is out */
    char *token;         /* the Bearer token it presented, or NULL */
    size_t toklen;
    char instance[NW_HS_INSTANCE_MAX + 1]; /* its X-Natwrp-Instance ("": none) */
    srv_cred_t *creds;   /* Basic credentials its routes demand (AUTH_BASIC) */
    size_t ncreds;
    /* For /api/status (serve_ops.c): */
    char peer[64];       /* the agent's address */
    int64_t since;       /* when it opened (Unix time) */
    uint64_t bytes_in;   /* request body bytes sent into it */
    uint64_t bytes_out;  /* response body bytes it delivered to clients */
    const char *last_error; /* the last stream failure on it (static string), or NULL */
} srv_tun_t;

/* What the access log says of the request in progress (accesslog.h). */
typedef struct {
    uint64_t t0;          /* uv_hrtime() at its first byte; 0: none, or already logged */
    uint64_t in, out;     /* request and response body bytes */
    uint64_t tun;         /* the tunnel it went to, or 0 */
    int status;           /* what the client got */
    int upstream;         /* the agent's status; 0: serve answered itself */
    char route[NW_ROUTE_HOST_MAX + NW_ROUTE_PATH_MAX + 4]; /* its route, or "" */
} pc_alog_t;

/* PC_QUEUED: the head is parsed, every tunnel is at --max-streams; the
 * parser is paused until a slot frees or --queue-timeout passes. Set only
 * through pc_set_state (pconn.c), which holds the allowed transitions. */
enum pc_state { PC_IDLE, PC_HEAD, PC_QUEUED, PC_WAIT, PC_STREAM, PC_LINGER, PC_CLOSED };

typedef struct pconn_s {
    serve_t *srv;
    nw_conn_t *conn;
    uv_timer_t timer;
    uint64_t due;            /* pc_arm's deadline (loop ms), 0: none; see pc_arm */
    uint64_t timer_due;      /* when the uv timer, if active, fires (<= due) */
    int handles;
    enum pc_state state;
    uint64_t id;
    llhttp_t parser;
    nw_hfields_t hf;
    nw_strm_t *strm;
    nw_sbuf_t pipeline;      /* bytes after a paused request */
    size_t body_inflight;    /* response body bytes queued to the client */
    size_t stale_credit;     /* of those, bytes that belong to a finished stream */
    uint64_t cl_left;        /* response Content-Length still to come */
    int err_status;          /* status chosen by a parser callback */
    const char *err_why;     /* its reason for the log, or NULL (see pc_parse_error) */
    int defer_status;        /* error to answer once the request body is read */
    struct pconn_s *prev, *next;
    struct pconn_s *qprev, *qnext; /* wait queue for a stream slot */
    struct pconn_s *hprev, *hnext; /* response heads not yet written */
    nw_sbuf_t head_out;      /* a response head held for its first body bytes */
    nw_sbuf_t out_pend;      /* body bytes held while a write is queued (pc_hold_body) */
    nw_sbuf_t body_acc;      /* request body pieces of this read, gathered (pc_send_body) */
    const char *body_at;     /* or the read's only piece, not copied: valid until */
    size_t body_n;           /* pc_feed's llhttp_execute returns (pc_body_add) */
    nw_headscan_t scan;      /* checks each request head before llhttp does */
    const char *feed_end;    /* end of the bytes llhttp is parsing now */
    uint64_t chunk_left;     /* request chunk data still to come */
    unsigned crlf_check;     /* bytes of the CRLF after chunk data in the next read */
    unsigned tries;          /* dispatch attempts for this request */
    unsigned route_auth;     /* 1 + the index of the Authorization field that carried a
                                route's Basic credential (not forwarded), or 0 */
    char realm[128];         /* a 401 for a route's Basic: the route's name (rt_pick) */
    char nohost[NW_ROUTE_HOST_MAX + 3]; /* a 404: the host no route serves (printable) */
    unsigned auth_field;     /* 1 + the index of the Authorization field that carried
                                AUTH_TOKEN (not forwarded), or 0 (pc_auth) */
    pc_alog_t alog;          /* the access log's facts (pc_alog) */
    unsigned req_done : 1, head_sent : 1, keep_alive : 1, is_head : 1, chunked_out : 1,
        has_cl : 1, tunnel : 1, upgrade : 1, minor : 1, in_feed : 1, paused : 1,
        again : 1, https : 1, used : 1, scanning : 1, head_pending : 1, end_at_open : 1, queued : 1, counted : 1, hold_parser : 1,
        body_started : 1,
        wait_busy : 1, /* queued because the route's tunnels were full (else: none) */
        piped : 1,   /* 101 answered: the stream is a raw byte pipe both ways */
        held_eof : 1, /* upgrade: the client ended before the 101; held with its bytes */
        req_body : 1, /* the request has a body (Content-Length or chunked) */
        out_wait : 1, /* the next request waits for the client to read what we sent */
        in_eof : 1,  /* piped: the client ended its side */
        out_eof : 1, /* piped: the local service ended its side */
        trailers : 1; /* past the last chunk: the trailer section is scanned */
    /* The current request's accounting (serve_ops.c): */
    srv_rstat_t *rstat;      /* its route's counters, once routed (NULL: "-") */
    uint64_t t_begin;        /* uv_hrtime() when its first byte was parsed */
    const char *err_reason;  /* why serve answers it itself (natwrp_errors_total), or NULL */
    int resp_status;         /* the proxied head's status, counted when written */
    int resp_counted;        /* its response head was counted */
} pconn_t;

struct serve_s {
    uv_loop_t *loop;
    nw_serve_cfg_t *cfg;
    uv_tcp_t listeners[NW_CFG_MAX_LISTEN];
    int listener_tls[NW_CFG_MAX_LISTEN];
    int nlisteners;
    uv_signal_t sig[3];
    nw_tls_conf_t *tls; /* current server certificate; swapped by SIGHUP */
    nw_tun_t *tuns[MAX_TUNNELS];
    size_t ntuns;
    size_t rr;
    uint64_t next_tun_id, next_pc_id;
    pconn_t *pconns;
    size_t npconns;               /* public connections counted against --max-conns */
    pconn_t *wq_head, *wq_tail;   /* requests waiting for a stream slot, oldest first */
    int wq_kick;                  /* the queue may move: run it at the next check */
    regex_t allow_re, auth_re;
    int has_allow, has_auth_rule;
    uv_timer_t grace;             /* SIGTERM: the drain deadline */
    uv_check_t wq_check;          /* runs the wait queue while it is not empty */
    pconn_t *heads;               /* pconns holding a response head (see pc_hold_head) */
    uv_idle_t heads_idle;         /* writes those heads at the next loop turn */
    nw_trimmer_t trim;            /* returns memory after a burst of connections */
    srv_ops_t *ops;               /* metrics and status (serve_ops.c), NULL without --admin */
    nw_routes_t *routes;          /* route -> tunnels (srv_tun_t), held routes included */
    nw_tokens_t *tokens;          /* --tokens and CONN_TOKEN; NULL: any agent, any route */
    uv_timer_t sweep;             /* held routes' expiry, revoked tunnels' --grace */
    uv_timer_t watchdog;          /* systemd's WATCHDOG=1 (notify.c) */
    int default_owned;            /* some tunnel has served the default route */
    int draining;
    int stopping;
    nw_metrics_t *metrics;        /* --admin: what /metrics shows (NULL without) */
    nw_admin_t *admin;            /* --admin: the admin listener (NULL without) */
};

extern const llhttp_settings_t pc_settings;


/* serve.c */
void srv_check_drained(serve_t *srv);
int nw_serve_main(int argc, char **argv);

/* listen.c */
void pc_accept(serve_t *srv, uv_stream_t *server, int fd, int tls);
int srv_listen_one(serve_t *srv, const nw_listen_t *l);

/* pconn.c */
void pc_drop_strm(pconn_t *pc, uint32_t code);
void pc_set_state(pconn_t *pc, enum pc_state to);
int pc_write(pconn_t *pc, const void *p, size_t n, size_t credit);
void pc_arm(pconn_t *pc, uint64_t ms);
void pc_disarm(pconn_t *pc);
int pc_body_waiting(const pconn_t *pc);
void pc_send_timer(pconn_t *pc);
void pc_linger(pconn_t *pc);
void pc_parse_error(pconn_t *pc);
void pc_feed(pconn_t *pc, const char *data, size_t len);
void pc_maybe_free(pconn_t *pc);
void pc_on_conn_close(nw_conn_t *c);
void pc_on_timer_close(uv_handle_t *h);
void pc_close(pconn_t *pc);
void pc_body_timeout(pconn_t *pc);
void pc_on_read(nw_conn_t *c, ssize_t nread, const char *buf);
void pc_up_in(pconn_t *pc, const char *p, size_t n);
void pc_pipe_in(pconn_t *pc, const char *p, size_t n);
void pc_pipe_done(pconn_t *pc);
void pc_on_written(nw_conn_t *c, size_t credit);

/* request.c */
int pc_refuse(llhttp_t *p, int status, const char *why);
int pc_dispatch(pconn_t *pc);
void pc_sent(pconn_t *pc);
int pc_crlf_after_chunk(pconn_t *pc, const char *q, size_t avail);
int pc_send_body(pconn_t *pc, int end);
void pc_body_drop(pconn_t *pc);
static inline int pc_body_pending(const pconn_t *pc) { return pc->body_n || pc->body_acc.len; }

/* response.c */
void pc_heads_unlink(pconn_t *pc);
int pc_flush_head(pconn_t *pc);
void pc_reply(pconn_t *pc, int status, const char *msg);
void pc_response_done(pconn_t *pc);
void pc_alog(pconn_t *pc, int cut);
void pc_unpause(pconn_t *pc);
void srv_on_head(nw_strm_t *s, const nw_mux_frame_t *f);
int pc_flush_body(pconn_t *pc);
void srv_on_data(nw_strm_t *s, const uint8_t *p, size_t len, int end);
void srv_on_reset(nw_strm_t *s, uint32_t code);
void srv_on_drain(nw_strm_t *s);
const char *srv_status_msg(int status);
const char *pc_status_msg(pconn_t *pc, int status, char *buf, size_t cap);

/* access.c */
int srv_token_eq(const char *got, size_t glen, const char *want, size_t wlen);
int srv_auth_value(const nw_hdr_t *f, int bearer_only, const char **tok, size_t *len);
const char *pc_fields_why(pconn_t *pc);
int pc_auth(pconn_t *pc, const char *target, size_t tlen, const char *norm, char *buf);
int srv_upgrade_to_http(const nw_hfields_t *h);
const char *pc_screen(pconn_t *pc, const char *target, size_t tlen, char *norm);

/* upgrade.c */
void pc_take_over(pconn_t *pc, const char *rest, size_t rest_len);

/* routing.c */
int rt_init(serve_t *srv);
int rt_attach(srv_tun_t *st);
void rt_detach(srv_tun_t *st, const char *why);
void rt_sweep_start(serve_t *srv);
void rt_regrant(serve_t *srv);
int rt_route_of(pconn_t *pc, nw_route_hit_t *hit, char *host, size_t hostcap);
nw_tun_t *rt_pick(pconn_t *pc, const nw_route_hit_t *hit, const char *ip, size_t iplen,
                  int *any);
size_t rt_public_url(const nw_route_t *r, int https, char *out, size_t cap);
int rt_ready(serve_t *srv, const char *host, size_t hl, const char *path, size_t pl, char *name,
             size_t cap);

/* registry.c */
void reg_tun_free(srv_tun_t *st);
int reg_usable(serve_t *srv);
int reg_tun_usable(const nw_tun_t *t);
size_t reg_count_group(serve_t *srv, const char *group, const char *tok, size_t tlen);
void wq_remove(pconn_t *pc);
void wq_fail_if_hopeless(serve_t *srv);
extern const nw_tun_cbs_t srv_tun_cbs;
void wq_append(pconn_t *pc);
void wq_kick(serve_t *srv);

/* serve_ops.c: the metrics, /readyz and /api/status of serve. While srv->ops
 * is NULL (no --admin) the srv_ops_* calls count nothing. */
int srv_ops_init(serve_t *srv, nw_metrics_t *m, nw_admin_t *a);
void srv_ops_free(serve_t *srv);
void srv_ops_begin(pconn_t *pc, int start);
void srv_ops_route(pconn_t *pc, const nw_route_t *r);
void srv_ops_head(pconn_t *pc, int status, int own);
void srv_ops_bytes(pconn_t *pc, nw_strm_t *s, size_t in, size_t out);
void srv_ops_tunnel(serve_t *srv, const char *event);
void srv_ops_refused(serve_t *srv, const char *reason);
void srv_ops_queue_timeout(pconn_t *pc);
void srv_ops_strm_error(nw_strm_t *s, const char *reason);
const char *srv_ops_why_reason(const char *why);
const char *srv_ops_rst_reason(uint32_t code);

#endif
