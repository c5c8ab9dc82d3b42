/* conn.h: one TCP connection with read-pause reasons, write accounting and
 * a close protocol. The object frees itself after its on_close callback;
 * owners hand it over by swapping the callbacks (nw_conn_set_owner). */
#ifndef NW_CONN_H
#define NW_CONN_H

#include <uv.h>

#include "nw.h"
#include "tls.h"

typedef struct nw_conn_s nw_conn_t;

/* nread > 0: bytes in buf, valid only during the call. nread < 0: EOF
 * (UV_EOF) or an error; the owner decides whether to close. */
typedef void (*nw_conn_read_cb)(nw_conn_t *c, ssize_t nread, const char *buf);
/* A write finished; credit is what the writer attached to it. */
typedef void (*nw_conn_written_cb)(nw_conn_t *c, size_t credit);
/* The handle is closed; the conn is freed right after this returns. */
typedef void (*nw_conn_close_cb)(nw_conn_t *c);

/* Read-pause reasons: reading resumes only when none is left. */
enum {
    NW_PAUSE_OWNER = 1u << 0,    /* not started / owner stopped it */
    NW_PAUSE_CREDIT = 1u << 1,   /* the stream behind has no credit */
    NW_PAUSE_PIPELINE = 1u << 2, /* previous request still in flight */
    NW_PAUSE_WRITEQ = 1u << 3,   /* our own write queue is full */
    NW_PAUSE_DONE = 1u << 4      /* nothing more will be read */
};

struct nw_conn_s {
    uv_tcp_t tcp;
    uv_timer_t probe; /* while reads are paused: notice a peer that left; once
                       * closing after a flush: its deadline */
    void *data; /* owner */
    nw_conn_read_cb on_read;
    nw_conn_written_cb on_written;
    nw_conn_close_cb on_close;
    unsigned pause;
    size_t wbytes; /* queued to libuv, not yet written */
    uint64_t wtotal; /* every byte ever written or queued to libuv */
    size_t credit_due; /* written at once (uv_try_write): reported next turn */
    nw_conn_t *credit_prev, *credit_next;
    int err;       /* first write error, if any */
    int handles;   /* open uv handles; freed at 0 */
    nw_tls_t *tls; /* NULL on plain TCP */
    void (*on_handshake)(nw_conn_t *c); /* TLS established (dialer's use) */
    unsigned closing : 1, shutting : 1, reading : 1, probing : 1, tls_up : 1, shut_done : 1,
        close_after_shut : 1, /* nw_conn_close_after_flush while a shutdown runs */
        credit_listed : 1,
        flush_deadline : 1; /* close after flush: probe is its deadline now */
    char peer[64]; /* "ip:port" of the peer, for logs */
};

/* Allocate and uv_tcp_init a conn; it starts paused with NW_PAUSE_OWNER. */
nw_conn_t *nw_conn_new(uv_loop_t *loop);
void nw_conn_set_owner(nw_conn_t *c, void *owner, nw_conn_read_cb on_read,
                       nw_conn_written_cb on_written, nw_conn_close_cb on_close);
/* Called once the socket is connected/accepted: sets TCP_NODELAY, peer. */
void nw_conn_ready(nw_conn_t *c);

/* A listening TCP socket on sa (SO_REUSEADDR; with reuseport also
 * SO_REUSEPORT, which lets a new process bind beside a draining one),
 * non-blocking and close-on-exec, for uv_tcp_open: libuv 1.44 has no flag
 * for SO_REUSEPORT. The socket, or a negative libuv error. */
struct sockaddr;
int nw_listen_socket(const struct sockaddr *sa, int reuseport, int backlog);
/* Run TLS on this connection from now on: a client (host != NULL, the name
 * to verify) starts the handshake at once; a server waits for the hello.
 * Owners then see plaintext only; a TLS failure reaches on_read as NW_ETLS
 * and nw_conn_tls_error() says why. */
int nw_conn_start_tls(nw_conn_t *c, nw_tls_conf_t *conf, const char *host);
const char *nw_conn_tls_error(const nw_conn_t *c);
/* TLS: did bytes arrive that have not reached the owner yet (part of a
 * record, or records not yet read)? Always 0 without TLS. */
int nw_conn_input_pending(const nw_conn_t *c);
void nw_conn_pause(nw_conn_t *c, unsigned reason);
void nw_conn_resume(nw_conn_t *c, unsigned reason);
/* Copy bufs into one block and queue it. 0 or a negative error. */
int nw_conn_write(nw_conn_t *c, const uv_buf_t *bufs, unsigned n, size_t credit);
/* Queue p (from nw_malloc); the conn frees it after the write. */
int nw_conn_write_owned(nw_conn_t *c, char *p, size_t len, size_t credit);
/* How many of the wtotal bytes the peer has taken: on Linux what its TCP
 * acknowledged (a peer that reads nothing stops acknowledging once its
 * receive buffer is full), elsewhere what the kernel accepted from us. */
uint64_t nw_conn_delivered(nw_conn_t *c);
/* Close once every queued byte is written (half-close first); a peer that
 * has not taken them within NW_FLUSH_CLOSE_MS loses them (closed anyway). */
void nw_conn_close_after_flush(nw_conn_t *c);
/* Half-close once every queued byte is written; reading goes on. */
void nw_conn_shutdown(nw_conn_t *c);
/* Close now; queued writes are dropped. Idempotent. */
void nw_conn_close(nw_conn_t *c);
/* Close with a TCP reset: the peer learns at once even when unsent bytes
 * are queued (a FIN would wait behind them). Idempotent. */
void nw_conn_abort(nw_conn_t *c);

/* The end of a role's main: close every handle still open, run the loop
 * until their close callbacks ran, close the loop (logged if that fails). */
void nw_loop_teardown(uv_loop_t *loop);

#endif
