/* tun.h: one tunnel session over a WebSocket (tun.c: frames in and out, a
 * bound on what the tunnel queues, liveness pings, GOAWAY; strm.c: the
 * stream table and per-stream credit windows). Used by both serve (streams out) and agent (streams in).
 *
 * Ownership: the tunnel owns its streams. An owner (a public connection on
 * the server, a local request on the agent) may use a stream pointer until
 * it calls nw_strm_detach() or until on_reset() for it returns. */
#ifndef NW_TUN_H
#define NW_TUN_H

#include <uv.h>

#include "buf.h"
#include "conn.h"
#include "mux.h"
#include "wsframe.h"

typedef struct nw_tun_s nw_tun_t;
typedef struct nw_strm_s nw_strm_t;

/* Not wire codes: the tunnel itself went away under the stream, and
 * either its request may have reached the peer (LOST) or certainly did not
 * leave this process (UNSENT: safe to retry elsewhere). */
#define NW_RST_TUNNEL_LOST 0x100u
#define NW_RST_UNSENT 0x101u

typedef struct {
    /* agent: the server opened stream s. The owner sets s->data, or
     * detaches it with a code. */
    void (*on_open)(nw_tun_t *t, nw_strm_t *s, const nw_mux_frame_t *f);
    /* server: the response head (f->flags & NW_MUX_F_END: no body). */
    void (*on_head)(nw_strm_t *s, const nw_mux_frame_t *f);
    /* body bytes; end is 1 on the last call (len may then be 0). */
    void (*on_data)(nw_strm_t *s, const uint8_t *p, size_t len, int end);
    /* the stream is aborted; it is freed when this returns. */
    void (*on_reset)(nw_strm_t *s, uint32_t code);
    /* everything queued by nw_strm_send left: resume reading the source. */
    void (*on_drain)(nw_strm_t *s);
    /* the peer will open/accept no streams above last_sid. */
    void (*on_goaway)(nw_tun_t *t, uint32_t last_sid, uint32_t code);
    /* the tunnel is closing (streams already reset); it frees itself later. */
    void (*on_close)(nw_tun_t *t, int err);
} nw_tun_cbs_t;

typedef struct {
    uint32_t my_window;   /* what the peer may send us per stream */
    uint32_t peer_window; /* what we may send the peer per stream */
    uint64_t ping_interval_ms;
} nw_tun_cfg_t;

struct nw_strm_s {
    void *data; /* owner */
    nw_tun_t *tun;
    uint32_t sid;
    unsigned reset_by_peer : 1; /* on_reset: the peer sent RST (else we decided it) */
    /* private to tun.c and strm.c */
    int64_t _send_credit, _recv_credit;
    uint64_t _open_seq;    /* tunnel message number of the OPEN frame */
    size_t _open_len;      /* its OPEN's bytes, until the peer names the stream */
    size_t _unacked;       /* consumed but not yet granted back */
    nw_bufq_t _pending;    /* body bytes not yet framed: waiting for credit or their turn */
    nw_strm_t *_hnext;     /* hash chain */
    nw_strm_t *_rprev, *_rnext; /* ready ring (sched.c) */
    unsigned _local_end : 1, _remote_end : 1, _pending_end : 1, _reset : 1, _detached : 1,
        _head_recv : 1, _ready : 1;
};

struct nw_tun_s {
    void *data;          /* owner */
    uint64_t id;         /* for logs */
    char agent[140];     /* tunnel id (AGENT_ID, or AGENT_ID-k with MAX_CONN), for logs */
    char group[140];     /* the AGENT_ID it belongs to (per-agent limits, balancing) */
    size_t nstreams;     /* streams not yet freed */
    size_t active;       /* streams the owner still holds (load balancing) */
    int is_client;
    int goaway_recv, goaway_sent;
    int interim;         /* agent: the server takes interim (1xx) HEADs (NW_HS_INTERIM) */
    /* private to tun.c and strm.c */
    nw_conn_t *_conn;
    void *_ws;           /* wslay_event_context_ptr */
    nw_tun_cbs_t _cbs;
    nw_tun_cfg_t _cfg;
    const char *_rx;
    size_t _rx_len;
    char *_wbuf;         /* control frames from wslay (pongs, close), ready to write */
    size_t _wlen;
    char *_obuf;         /* data messages, framed (and masked) by us, ready to write */
    size_t _olen, _ocap;
    uint64_t _msgs_out;  /* data messages handed to the connection so far */
    uint8_t _rnd[256];   /* masking keys, drawn in bulk */
    size_t _rnd_left;
    /* Receive side (see tun_on_read): data frames are parsed here, control
     * frames are handed whole to wslay. */
    uint8_t _hbuf[NW_WSFRAME_MAX_HDR], _fkey[4], _cbuf[NW_WSFRAME_MAX_HDR + NW_WSFRAME_MAX_CTRL];
    size_t _hlen, _clen;
    uint64_t _fleft, _fpos;
    int _rstate, _ffin, _in_msg;
    uint8_t *_msg;
    size_t _mlen, _mcap;
    nw_strm_t **_buckets;
    size_t _nbuckets;
    uint32_t _last_sid;
    nw_strm_t *_ready, *_ready_tail; /* streams with bytes and credit, in turn (sched.c) */
    uv_timer_t _ping;
    uv_idle_t _flush;    /* flushes queued frames at the next loop turn */
    uint64_t _last_rx;
    uint64_t _msgs;      /* data messages queued so far */
    int _handles, _depth, _close_err, _closing, _flush_armed, _shutdown;
    int _say_close;      /* a close frame for a protocol error: send it before closing */
    int _close_queued;   /* our close is queued: no data frame may follow it */
    /* Pings are answered here, not by wslay: one pong at a time is in the
     * connection's queue, and a ping that arrives meanwhile replaces the
     * payload of the one waiting behind it (a ping flood costs no memory). */
    uint8_t _pong[NW_WSFRAME_MAX_CTRL];
    size_t _pong_len;
    int _pong_pending, _pong_inflight;
    int _rx_full;        /* reads stopped: our output is over TUN_MAX */
    size_t _open_q;      /* OPEN bytes of streams the peer has not named yet */
    uint64_t _delivered;   /* nw_conn_delivered() at the last stall check */
    uint64_t _stall_since; /* output has waited without progress since then */
};

/* Create a tunnel around an upgraded connection (adopted here). Returns
 * NULL on allocation failure (the conn is then closed). */
nw_tun_t *nw_tun_new(uv_loop_t *loop, nw_conn_t *c, int is_client, const nw_tun_cfg_t *cfg,
                     const nw_tun_cbs_t *cbs, void *owner);
/* Start reading; leftover is what followed the handshake in the last read. */
int nw_tun_start(nw_tun_t *t, const char *leftover, size_t len);
/* Close the tunnel: streams are reset, on_close runs, then it is freed.
 * Safe inside any tunnel callback (the work is deferred). Idempotent. */
void nw_tun_close(nw_tun_t *t, int err);
/* Send GOAWAY: this side opens/accepts no stream above what it has seen. */
void nw_tun_goaway(nw_tun_t *t, uint32_t code);
/* Close gracefully: a WebSocket close (1001) goes out after everything
 * already queued; the tunnel closes when the peer answers. Idempotent. */
void nw_tun_shutdown(nw_tun_t *t);
/* Closing (nw_tun_close was called): open nothing more on it. */
static inline int nw_tun_closing(const nw_tun_t *t) { return t->_closing != 0; }

/* server: open a stream carrying a request head. NULL with *err set
 * (NW_ETOOBIG when the head does not fit in a frame). */
nw_strm_t *nw_tun_open(nw_tun_t *t, const char *method, size_t method_len, const char *target,
                       size_t target_len, const nw_hdr_t *hdrs, size_t nhdrs, int end,
                       int *err);
/* agent: send the response head. */
int nw_strm_head(nw_strm_t *s, uint16_t status, const char *reason, size_t reason_len,
                 const nw_hdr_t *hdrs, size_t nhdrs, int end);
/* Send body bytes (copied). Returns 0, 1 when the caller must stop reading
 * its source until on_drain, or a negative error. */
int nw_strm_send(nw_strm_t *s, const void *p, size_t len, int end);
/* n body bytes delivered by on_data have left our buffers: grant credit. */
void nw_strm_consumed(nw_strm_t *s, size_t n);
/* The owner is done with s. code 0: finish sending what is queued, then
 * close (reset with CANCEL if the peer is not finished); else reset now. */
void nw_strm_detach(nw_strm_t *s, uint32_t code);

#endif
