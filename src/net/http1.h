/* http1.h: HTTP/1.x glue shared by serve and agent: bounded accumulation of
 * the head llhttp hands over in pieces, hop-by-hop filtering, target
 * normalisation. No libuv. */
#ifndef NW_HTTP1_H
#define NW_HTTP1_H

#include <llhttp.h>

#include "buf.h"
#include "mux.h"

#define NW_HTTP_MAX_FIELDS 200

typedef struct {
    uint32_t no, nl, vo, vl;
} nw_hf_ent_t;

/* The head of one message: start-line text (URL or reason) then fields.
 * Everything is copied, since llhttp points into a transient read buffer. */
typedef struct {
    nw_sbuf_t raw;
    size_t max;    /* cap on raw bytes: the head-size limit */
    size_t first_len; /* URL (requests) or reason (responses) at raw.p[0..) */
    nw_hf_ent_t f[NW_HTTP_MAX_FIELDS];
    size_t n;
    int last; /* 0 nothing, 1 name, 2 value: a new name starts a field */
} nw_hfields_t;

enum { NW_HF_OK = 0, NW_HF_TOOBIG = -1, NW_HF_TOOMANY = -2, NW_HF_NOMEM = -3 };

void nw_hf_init(nw_hfields_t *h, size_t max);
void nw_hf_reset(nw_hfields_t *h);
void nw_hf_free(nw_hfields_t *h);
int nw_hf_first(nw_hfields_t *h, const char *p, size_t n);
int nw_hf_name(nw_hfields_t *h, const char *p, size_t n);
int nw_hf_value(nw_hfields_t *h, const char *p, size_t n);
void nw_hf_get(const nw_hfields_t *h, size_t i, nw_hdr_t *out);
/* Index of the first field named name (case-insensitive) from start, or -1. */
int nw_hf_find(const nw_hfields_t *h, const char *name, size_t start);

/* llhttp span callbacks (on_url or on_status, on_header_field,
 * on_header_value) that accumulate into the nw_hfields_t which the parser's
 * data points at first: the owning struct must start with its nw_hfields_t.
 * They return -1 when a cap is hit. */
int nw_http_cb_first(llhttp_t *p, const char *at, size_t n);
int nw_http_cb_name(llhttp_t *p, const char *at, size_t n);
int nw_http_cb_value(llhttp_t *p, const char *at, size_t n);

/* Hop-by-hop by definition (RFC 9110 7.6.1 and the usual Proxy-*). */
int nw_http_is_hop(const char *name, size_t len);
/* Is name listed as a token in any Connection field of h? */
int nw_http_conn_lists(const nw_hfields_t *h, const char *name, size_t len);
/* Does any field called name contain token (comma-separated, any case)? */
int nw_http_has_token(const nw_hfields_t *h, const char *name, const char *token);

/* Copy the end-to-end fields of h into out (capacity cap), dropping
 * hop-by-hop ones, the ones Connection names, and any named in drop (a
 * NULL-terminated list). Returns the count, or -1 if cap is too small. */
int nw_http_filter(const nw_hfields_t *h, nw_hdr_t *out, size_t cap, const char *const *drop);

/* Reduce a request target to origin form: "http://h:1/p?q" -> "/p?q",
 * "/x" -> "/x", "*" -> "*". Returns 0; 1 when the absolute form had no path
 * ("http://h" or "http://h?q"), so the caller must put "/" before out; -1 for
 * anything else (authority form, garbage). */
int nw_http_origin_form(const char *t, size_t len, const char **out, size_t *out_len);
/* The authority of an absolute-form target ("http://a.example:8/x" ->
 * "a.example:8", never empty), or NULL for any other form. */
const char *nw_http_authority(const char *t, size_t len, size_t *alen);

/* Field syntax checks for heads that arrive over the tunnel: a peer must
 * not be able to inject CR/LF into what we write. */
int nw_http_token_ok(const char *p, size_t n);
int nw_http_value_ok(const char *p, size_t n);
int nw_http_fields_ok(const nw_hdr_t *h, size_t n);
/* Strict Content-Length: digits only, at most 19 of them. */
int nw_http_parse_cl(const char *p, size_t n, uint64_t *out);
/* One Content-Length field of a head, value p[0..n): the first one sets
 * *out and *seen; a second one, or a value that is not a strict number,
 * is -1 (RFC 9112 6.3: a recipient never picks one of several). */
int nw_http_take_cl(int *seen, const char *p, size_t n, uint64_t *out);

/* Append "name: value\r\n" to out. */
void nw_http_put_field(nw_sbuf_t *out, const char *name, size_t nlen, const char *value,
                       size_t vlen);

/* The chunk-size line for n body bytes ("%zx\r\n", without printf) into
 * buf, which holds NW_HTTP_CHUNK_LINE bytes; returns its length. */
#define NW_HTTP_CHUNK_LINE 20
size_t nw_http_chunk_line(char *buf, size_t n);

/* A request head checked byte by byte before llhttp sees it, for what
 * llhttp 8 accepts even in strict mode and a front-end must not (request
 * smuggling): a bare LF, obs-fold (a field line starting with SP or HTAB),
 * and a request line that is not exactly "method SP target SP version"
 * (double spaces, tabs). Leading empty lines are allowed (RFC 9112 2.2). */
typedef struct {
    unsigned line;     /* 0 = request line */
    size_t line_len;   /* bytes on this line so far, CR excluded */
    unsigned spaces;   /* SPs on the request line */
    unsigned char prev;
    const char *why;   /* set on a violation */
} nw_headscan_t;

void nw_headscan_init(nw_headscan_t *s);
/* Scan n bytes. Returns -1 on a violation (s->why says which), 1 when the
 * head ended (*used = bytes up to and including its final LF), else 0
 * (*used = n: all of it belongs to the head so far). */
int nw_headscan(nw_headscan_t *s, const char *p, size_t n, size_t *used);

/* A Host value: reg-name, IPv4 or [IPv6] with an optional port; empty
 * allowed (RFC 9112 3.2). */
int nw_http_host_ok(const char *p, size_t n);

/* Standard reason phrase for a status code ("" when unknown). */
const char *nw_http_reason(int status);

#endif
