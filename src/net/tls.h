/* tls.h: mbedTLS sessions over memory buffers. No I/O and no libuv: the
 * connection layer feeds ciphertext in (nw_tls_feed), takes ciphertext out
 * (nw_tls_take_out) and moves plaintext with nw_tls_read / nw_tls_write.
 * Configurations are reference-counted so a reload (SIGHUP) can swap the
 * server's certificate while live sessions keep the one they started with. */
#ifndef NW_TLS_H
#define NW_TLS_H

#include <sys/types.h>
#include <sys/uio.h>

#include "nw.h"

#define NW_TLS_ERRLEN 256

typedef struct nw_tls_conf_s nw_tls_conf_t;
typedef struct nw_tls_s nw_tls_t;

/* Server configuration from PEM files: a certificate chain (leaf first) and
 * its private key. TLS 1.2 minimum, 1.3 when the library has it; ALPN
 * "http/1.1" offered. NULL with a reason in err (names the file and what
 * is wrong: unreadable, not PEM, key does not match the certificate). */
nw_tls_conf_t *nw_tls_conf_server(const char *cert_file, const char *key_file, char *err,
                                  size_t errlen);
/* Client configuration: verify the peer against ca_file (PEM bundle; NULL
 * means the system bundle /etc/ssl/certs/ca-certificates.crt), or verify
 * nothing when insecure. TLS 1.2 minimum; ALPN "http/1.1". */
nw_tls_conf_t *nw_tls_conf_client(const char *ca_file, int insecure, char *err, size_t errlen);
nw_tls_conf_t *nw_tls_conf_ref(nw_tls_conf_t *c);
void nw_tls_conf_unref(nw_tls_conf_t *c);

/* A session. For clients, host is the name to send as SNI and to verify
 * the certificate against (an IP literal is verified as such); NULL for
 * servers. Takes its own reference on conf. NULL on allocation failure. */
nw_tls_t *nw_tls_new(nw_tls_conf_t *conf, const char *host);
void nw_tls_free(nw_tls_t *t);

/* Ciphertext that arrived from the network (copied). 0 or NW_ENOMEM. */
int nw_tls_feed(nw_tls_t *t, const void *p, size_t n);
/* Advance the handshake. 0 done; 1 needs more input (send what
 * nw_tls_take_out holds first); negative on failure, with nw_tls_error()
 * saying exactly why (e.g. "certificate verify failed: the certificate has
 * expired", "...: hostname mismatch (CN/SAN)", "...: not trusted (unknown
 * CA)", "peer does not speak TLS"). */
int nw_tls_handshake(nw_tls_t *t);
int nw_tls_handshake_done(const nw_tls_t *t);
/* Decrypt into buf. >0 bytes; 0 needs more input; NW_ECLOSED when the peer
 * sent close_notify; other negative values on failure. */
ssize_t nw_tls_read(nw_tls_t *t, void *buf, size_t cap);
/* Plaintext already decrypted and waiting (no more input needed). */
size_t nw_tls_pending(const nw_tls_t *t);
/* Was anything fed that has not come out of nw_tls_read yet: part of a
 * record, whole records not yet decrypted, or plaintext not yet read? */
int nw_tls_input_pending(const nw_tls_t *t);
/* Encrypt all n bytes into the outgoing buffer. 0 or negative. */
int nw_tls_write(nw_tls_t *t, const void *p, size_t n);
/* Encrypt plaintext from the concatenation of iov[0..n), starting skip
 * bytes in, as full-size records (pieces shorter than a record share one),
 * stopping after about max bytes (a whole number of records, at least
 * one). Returns the plaintext bytes consumed (the caller adds them to skip
 * and calls again until all is consumed), or a negative error. Taking the
 * ciphertext out between calls lets the peer decrypt one slice while this
 * side encrypts the next. */
ssize_t nw_tls_writev(nw_tls_t *t, const struct iovec *iov, size_t n, size_t skip, size_t max);
/* Queue a close_notify alert. */
void nw_tls_close_notify(nw_tls_t *t);
/* Hand over the ciphertext waiting to be sent (caller frees with nw_free);
 * NULL and *len == 0 when there is none. */
char *nw_tls_take_out(nw_tls_t *t, size_t *len);
/* Last failure, human-readable; "" when none. */
const char *nw_tls_error(const nw_tls_t *t);
/* Negotiated protocol version, e.g. "TLSv1.3", for logs. */
const char *nw_tls_version(const nw_tls_t *t);
/* Negotiated ciphersuite, e.g. "TLS-ECDHE-ECDSA-WITH-CHACHA20-POLY1305-
 * SHA256", for logs; "" before the handshake. */
const char *nw_tls_suite(const nw_tls_t *t);

#endif
