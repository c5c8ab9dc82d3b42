/* dial.h: resolve host, try each address in turn, with a timeout (and TLS). */
#ifndef NW_DIAL_H
#define NW_DIAL_H

#include <uv.h>

#include "conn.h"
#include "tls.h"

typedef struct nw_dial_s nw_dial_t;
/* c is a connected conn (owner must adopt it) or NULL with err < 0. */
typedef void (*nw_dial_cb)(nw_dial_t *d, nw_conn_t *c, int err, void *ud);
/* Start a dial; returns NULL on allocation failure. The dial object frees
 * itself after cb has run; cb is never called from inside nw_dial_start.
 * With tls, the TLS handshake (SNI and verification against host) is part
 * of the dial and its timeout. */
nw_dial_t *nw_dial_start(uv_loop_t *loop, const char *host, uint16_t port,
                         uint64_t timeout_ms, nw_tls_conf_t *tls, nw_dial_cb cb, void *ud);
/* The same, connecting to addr (an IP address) while host names the
 * server for TLS (SNI and certificate verification). */
nw_dial_t *nw_dial_start_at(uv_loop_t *loop, const char *host, const char *addr, uint16_t port,
                            uint64_t timeout_ms, nw_tls_conf_t *tls, nw_dial_cb cb, void *ud);
/* During cb: a readable reason for a failed dial (TLS details included). */
const char *nw_dial_strerror(const nw_dial_t *d);
/* Abandon a dial: cb is not called; any connection made is closed. */
void nw_dial_cancel(nw_dial_t *d);

#endif
