/* conn.c: TCP connection object over libuv.
 *
 * Reads land in one thread-local scratch buffer: every reader consumes (or
 * copies) what it needs inside on_read, so no connection pins 64 KiB while
 * idle. Writes are copied once into a block freed by the write callback. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>
#include <string.h>
#ifdef __linux__
#include <linux/sockios.h>
#include <sys/ioctl.h>
#endif

#include "conn.h"
#include "log.h"

#define NW_READ_SIZE (64 * 1024)
#define NW_PROBE_MS 1000
#define NW_FLUSH_CLOSE_MS 5000 /* nw_conn_close_after_flush: the longest wait */
/* Pauses that are waiting on someone else; OWNER and DONE are deliberate. */
#define NW_PAUSE_WAITING (~(unsigned)(NW_PAUSE_OWNER | NW_PAUSE_DONE))

static _Thread_local char read_scratch[NW_READ_SIZE];

typedef struct {
    uv_write_t req;
    uv_buf_t buf;
    size_t credit;
    char *owned; /* freed after the write; NULL when data follows inline */
    char data[];
} wreq_t;

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    (void)h;
    (void)hint;
    *buf = uv_buf_init(read_scratch, sizeof(read_scratch));
}

static int submit_owned(nw_conn_t *c, char *p, size_t len, size_t credit);

static void report(nw_conn_t *c, ssize_t nread, const char *buf) {
    if (c->on_read)
        c->on_read(c, nread, buf);
}

/* Send whatever TLS produced (handshake flights, alerts, tickets). */
static void tls_flush(nw_conn_t *c) {
    size_t len = 0;
    char *p = nw_tls_take_out(c->tls, &len);
    if (p && len)
        submit_owned(c, p, len, 0);
    else
        nw_free(p);
}

/* Hand decrypted bytes to the owner while it wants them. */
static void tls_drain(nw_conn_t *c) {
    while (!c->closing && c->pause == 0) {
        ssize_t n = nw_tls_read(c->tls, read_scratch, sizeof(read_scratch));
        tls_flush(c);
        if (n == 0)
            return;
        if (n < 0) {
            report(c, n == NW_ECLOSED ? UV_EOF : NW_ETLS, NULL);
            return;
        }
        report(c, n, read_scratch);
    }
}

static void tls_input(nw_conn_t *c, const char *buf, size_t n) {
    int rc;
    if (nw_tls_feed(c->tls, buf, n) != 0) {
        report(c, NW_ENOMEM, NULL);
        return;
    }
    if (!c->tls_up) {
        rc = nw_tls_handshake(c->tls);
        tls_flush(c);
        if (rc < 0) {
            report(c, NW_ETLS, NULL);
            return;
        }
        if (rc > 0)
            return;
        c->tls_up = 1;
        if (c->on_handshake)
            c->on_handshake(c);
        if (c->closing)
            return;
    }
    tls_drain(c);
}

static void on_uv_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    nw_conn_t *c = nw_container_of(s, nw_conn_t, tcp);
    if (nread == 0 || c->closing)
        return;
    if (c->tls && nread > 0)
        tls_input(c, buf->base, (size_t)nread);
    else
        report(c, nread, buf->base);
}

int nw_conn_start_tls(nw_conn_t *c, nw_tls_conf_t *conf, const char *host) {
    int rc;
    c->tls = nw_tls_new(conf, host);
    if (!c->tls)
        return NW_ENOMEM;
    if (!host)
        return 0;
    rc = nw_tls_handshake(c->tls); /* the ClientHello */
    tls_flush(c);
    return rc < 0 ? NW_ETLS : 0;
}

const char *nw_conn_tls_error(const nw_conn_t *c) {
    return c->tls ? nw_tls_error(c->tls) : "";
}

int nw_conn_input_pending(const nw_conn_t *c) {
    return c->tls ? nw_tls_input_pending(c->tls) : 0;
}

/* With reads stopped and nothing to write, libuv does not watch the socket
 * at all, so a peer that resets or leaves would go unnoticed for as long
 * as the pause lasts. Peek at it now and then instead. */
static void on_probe(uv_timer_t *h) {
    nw_conn_t *c = nw_container_of(h, nw_conn_t, probe);
    uv_os_fd_t fd;
    char b;
    ssize_t n;
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    if (c->closing)
        return;
    if (c->pause == 0) { /* armed by a resume: plaintext may wait in TLS */
        if (c->tls && c->tls_up)
            tls_drain(c);
        return;
    }
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) != 0)
        return;
    /* A reset shows in SO_ERROR even when unread bytes are queued (recv
     * would hand those out first); a plain close shows as EOF. */
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr != 0) {
        if (c->on_read)
            c->on_read(c, -soerr, NULL);
        return;
    }
    n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 && c->on_read)
        c->on_read(c, UV_EOF, NULL);
    else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && c->on_read)
        c->on_read(c, -errno, NULL);
}

static void update_reading(nw_conn_t *c) {
    int probe;
    if (c->closing || c->flush_deadline)
        return;
    if (c->pause == 0 && !c->reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_uv_read) == 0)
            c->reading = 1;
        if (c->tls && c->tls_up) {
            /* Records already decrypted or buffered would otherwise wait for
             * the next packet: drain them from the loop, not from here. */
            uv_timer_start(&c->probe, on_probe, 0, 0);
            c->probing = 0;
            return;
        }
    } else if (c->pause != 0 && c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = 0;
    }
    probe = !c->reading && (c->pause & NW_PAUSE_WAITING) != 0;
    if (probe && !c->probing)
        uv_timer_start(&c->probe, on_probe, NW_PROBE_MS, NW_PROBE_MS);
    else if (!probe && c->probing)
        uv_timer_stop(&c->probe);
    c->probing = probe ? 1 : 0;
}

nw_conn_t *nw_conn_new(uv_loop_t *loop) {
    nw_conn_t *c = nw_calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    if (uv_tcp_init(loop, &c->tcp) != 0) {
        nw_free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->probe);
    c->handles = 2;
    c->pause = NW_PAUSE_OWNER;
    return c;
}

void nw_conn_set_owner(nw_conn_t *c, void *owner, nw_conn_read_cb on_read,
                       nw_conn_written_cb on_written, nw_conn_close_cb on_close) {
    c->data = owner;
    c->on_read = on_read;
    c->on_written = on_written;
    c->on_close = on_close;
}

void nw_conn_ready(nw_conn_t *c) {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        }
    }
    snprintf(c->peer, sizeof(c->peer), ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip,
             port);
}

void nw_conn_pause(nw_conn_t *c, unsigned reason) {
    c->pause |= reason;
    update_reading(c);
}

void nw_conn_resume(nw_conn_t *c, unsigned reason) {
    c->pause &= ~reason;
    update_reading(c);
}

static void on_close_done(uv_handle_t *h) {
    nw_conn_t *c = h->data;
    if (--c->handles > 0)
        return;
    if (c->on_close)
        c->on_close(c);
    if (c->tls)
        nw_tls_free(c->tls);
    nw_free(c);
}

/* Writes that complete inside nw_conn_write (uv_try_write) need no
 * uv_write_t, no copy and no epoll_ctl; their credit still reaches the
 * owner asynchronously, as for uv_write, from this idle handle (one per
 * process: natwrp runs one loop). */
static uv_idle_t credit_idle;
static int credit_idle_init;
static nw_conn_t *credit_head;

static void credit_unlist(nw_conn_t *c) {
    if (!c->credit_listed)
        return;
    if (c->credit_prev)
        c->credit_prev->credit_next = c->credit_next;
    else
        credit_head = c->credit_next;
    if (c->credit_next)
        c->credit_next->credit_prev = c->credit_prev;
    c->credit_prev = c->credit_next = NULL;
    c->credit_listed = 0;
}

static void credit_on_idle(uv_idle_t *h) {
    uv_idle_stop(h);
    while (credit_head) {
        nw_conn_t *c = credit_head;
        size_t credit = c->credit_due;
        credit_unlist(c);
        c->credit_due = 0;
        if (!c->closing && c->on_written)
            c->on_written(c, credit);
    }
}

static void credit_add(nw_conn_t *c, size_t credit) {
    if (!credit)
        return;
    c->credit_due += credit;
    if (!c->credit_listed) {
        c->credit_listed = 1;
        c->credit_prev = NULL;
        c->credit_next = credit_head;
        if (credit_head)
            credit_head->credit_prev = c;
        credit_head = c;
    }
    if (!credit_idle_init) {
        uv_idle_init(c->tcp.loop, &credit_idle);
        uv_unref((uv_handle_t *)&credit_idle); /* never keeps the loop alive */
        credit_idle_init = 1;
    }
    uv_idle_start(&credit_idle, credit_on_idle);
}

static void close_conn(nw_conn_t *c, int reset) {
    if (c->closing)
        return;
    credit_unlist(c);
    c->closing = 1;
    c->reading = 0;
    c->tcp.data = c;
    c->probe.data = c;
    uv_close((uv_handle_t *)&c->probe, on_close_done);
    if (!reset || c->shutting || uv_tcp_close_reset(&c->tcp, on_close_done) != 0)
        uv_close((uv_handle_t *)&c->tcp, on_close_done);
}

void nw_conn_close(nw_conn_t *c) { close_conn(c, 0); }
void nw_conn_abort(nw_conn_t *c) { close_conn(c, 1); }

typedef struct {
    uv_shutdown_t req;
} shut_t;

static void on_shutdown(uv_shutdown_t *req, int status) {
    shut_t *s = nw_container_of(req, shut_t, req);
    nw_conn_t *c = req->data;
    nw_free(s);
    c->shut_done = 1;
    if (status != UV_ECANCELED && !c->closing && c->close_after_shut)
        nw_conn_close(c);
}

static void shutdown_conn(nw_conn_t *c, int then_close) {
    shut_t *s;
    if (c->closing)
        return;
    if (c->shutting) {
        /* Already half-closed (or on the way): close once that is done. */
        if (then_close && c->shut_done)
            nw_conn_close(c);
        else if (then_close)
            c->close_after_shut = 1;
        return;
    }
    if (c->tls && c->tls_up) {
        nw_tls_close_notify(c->tls); /* a clean end, unlike a cut body */
        tls_flush(c);
    }
    c->shutting = 1;
    c->close_after_shut = then_close ? 1 : 0;
    s = nw_malloc(sizeof(*s));
    if (!s || uv_shutdown(&s->req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        nw_free(s);
        c->shut_done = 1;
        if (then_close)
            nw_conn_close(c);
        return;
    }
    s->req.data = c;
}

static void on_flush_deadline(uv_timer_t *h) {
    nw_conn_t *c = nw_container_of(h, nw_conn_t, probe);
    close_conn(c, 1);
}

/* A peer that never reads would keep the bytes queued, the shutdown
 * pending and the connection open for ever (and the loop running after
 * everything else has stopped): the wait has a deadline. */
void nw_conn_close_after_flush(nw_conn_t *c) {
    shutdown_conn(c, 1);
    if (c->closing || c->flush_deadline)
        return;
    c->flush_deadline = 1;
    c->probing = 0;
    uv_timer_start(&c->probe, on_flush_deadline, NW_FLUSH_CLOSE_MS, 0);
}
void nw_conn_shutdown(nw_conn_t *c) { shutdown_conn(c, 0); }

static void on_write(uv_write_t *req, int status) {
    wreq_t *w = nw_container_of(req, wreq_t, req);
    nw_conn_t *c = req->data;
    size_t len = w->buf.len, credit = w->credit;

    nw_free(w->owned);
    nw_free(w);
    c->wbytes -= len;
    if (status < 0) {
        if (!c->err)
            c->err = status;
        return; /* the read side (or the owner's close) reports it */
    }
    if (!c->closing && c->on_written)
        c->on_written(c, credit);
}

static int submit(nw_conn_t *c, wreq_t *w) {
    int rc;
    if (c->closing || c->shutting) {
        nw_free(w->owned);
        nw_free(w);
        return NW_ECLOSED;
    }
    w->req.data = c;
    rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &w->buf, 1, on_write);
    if (rc < 0) {
        nw_free(w->owned);
        nw_free(w);
        return rc;
    }
    c->wbytes += w->buf.len;
    c->wtotal += w->buf.len;
    return 0;
}

uint64_t nw_conn_delivered(nw_conn_t *c) {
    uint64_t d = c->wtotal - uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
#ifdef SIOCOUTQ
    uv_os_fd_t fd;
    int q = 0;
    if (!c->closing && uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0 &&
        ioctl(fd, SIOCOUTQ, &q) == 0 && q > 0 && (uint64_t)q <= d)
        d -= (uint64_t)q; /* in the kernel, not yet acknowledged */
#endif
    return d;
}

/* TLS output goes to the socket in slices of about this much plaintext
 * (whole records): the peer decrypts one slice while we encrypt the next,
 * instead of both sides taking turns over a whole batch (a tunnel's batch
 * is up to a stream window; the two ciphers then run one after the other).
 * 100 MiB through the wss tunnel on 2 quiet cores, interleaved: whole batch
 * 168/166 MB/s down/up, 128 KiB 193/204, 64 KiB 218/218, 32 KiB 268/239,
 * 16 KiB 270/241 (with half again the syscalls of 32 KiB); same CPU. */
#define NW_TLS_SLICE (32 * 1024)

static int tls_write(nw_conn_t *c, const uv_buf_t *bufs, unsigned n, size_t credit) {
    /* uv_buf_t may be cast to struct iovec on Unix (uv/unix.h). */
    const struct iovec *iov = (const struct iovec *)bufs;
    size_t total = 0, done = 0, len = 0;
    unsigned i;
    char *p;
    if (!c->tls_up || c->closing || c->shutting)
        return NW_ECLOSED;
    for (i = 0; i < n; i++)
        total += bufs[i].len;
    while (done < total) {
        /* A short tail rides with the last slice, not in a write of its own
         * (a batch of whole 64 KiB DATA frames ends with their headers). */
        size_t max = total - done < NW_TLS_SLICE + NW_TLS_SLICE / 4 ? SIZE_MAX : NW_TLS_SLICE;
        ssize_t k = nw_tls_writev(c->tls, iov, n, done, max);
        int rc;
        if (k <= 0)
            return k == NW_ENOMEM ? NW_ENOMEM : NW_ETLS;
        done += (size_t)k;
        if (done == total)
            break;
        p = nw_tls_take_out(c->tls, &len);
        if (p && (rc = submit_owned(c, p, len, 0)) != 0)
            return rc;
    }
    p = nw_tls_take_out(c->tls, &len);
    if (!p)
        return credit ? NW_ENOMEM : 0;
    return submit_owned(c, p, len, credit);
}

int nw_conn_write(nw_conn_t *c, const uv_buf_t *bufs, unsigned n, size_t credit) {
    size_t total = 0, off = 0, skip = 0;
    unsigned i;
    wreq_t *w;

    if (c->tls)
        return tls_write(c, bufs, n, credit);

    for (i = 0; i < n; i++)
        total += bufs[i].len;
    if (c->wbytes == 0 && !c->closing && !c->shutting) {
        /* Nothing queued: try to write now, and only queue the rest. */
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (rc > 0)
            c->wtotal += (uint64_t)rc;
        if (rc > 0 && (size_t)rc == total) {
            credit_add(c, credit);
            return 0;
        }
        if (rc > 0)
            skip = (size_t)rc;
    }
    w = nw_malloc(sizeof(*w) + total - skip);
    if (!w)
        return NW_ENOMEM;
    for (i = 0; i < n; i++) {
        size_t k = bufs[i].len, drop = NW_MIN(skip, k);
        skip -= drop;
        memcpy(w->data + off, bufs[i].base + drop, k - drop);
        off += k - drop;
    }
    w->buf = uv_buf_init(w->data, (unsigned)off);
    w->credit = credit;
    w->owned = NULL;
    return submit(c, w);
}

int nw_conn_write_owned(nw_conn_t *c, char *p, size_t len, size_t credit) {
    if (c->tls) {
        uv_buf_t b = uv_buf_init(p, (unsigned)len);
        int rc = tls_write(c, &b, 1, credit);
        nw_free(p);
        return rc;
    }
    return submit_owned(c, p, len, credit);
}

static int submit_owned(nw_conn_t *c, char *p, size_t len, size_t credit) {
    wreq_t *w;
    size_t skip = 0;
    if (c->wbytes == 0 && !c->closing && !c->shutting) {
        uv_buf_t b = uv_buf_init(p, (unsigned)len);
        int rc = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        if (rc > 0)
            c->wtotal += (uint64_t)rc;
        if (rc > 0 && (size_t)rc == len) {
            nw_free(p);
            credit_add(c, credit);
            return 0;
        }
        if (rc > 0)
            skip = (size_t)rc;
    }
    w = nw_malloc(sizeof(*w));
    if (!w) {
        nw_free(p);
        return NW_ENOMEM;
    }
    w->buf = uv_buf_init(p + skip, (unsigned)(len - skip));
    w->credit = credit;
    w->owned = p;
    return submit(c, w);
}

static void on_walk_close(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

void nw_loop_teardown(uv_loop_t *loop) {
    uv_walk(loop, on_walk_close, NULL);
    uv_run(loop, UV_RUN_DEFAULT);
    if (uv_loop_close(loop) != 0)
        nw_err("event loop closed with handles still open");
}

int nw_listen_socket(const struct sockaddr *sa, int reuseport, int backlog) {
    int one = 1, fd, rc;
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return uv_translate_sys_error(errno);
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        bind(fd, sa, len) != 0 || listen(fd, backlog) != 0) {
        rc = uv_translate_sys_error(errno);
        close(fd);
        return rc;
    }
    return fd;
}
