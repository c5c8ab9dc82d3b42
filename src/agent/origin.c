/* origin.c: a request's public origin, and the URLs that cross between it
 * and the local service: what the OPEN says of the public side (the Host
 * the client used, its scheme), Destination and If made to name the
 * service, the service's redirects made to name the public origin (the
 * rewriting itself is redirect.c's). */
#include <string.h>

#include "agent_int.h"
#include "redirect.h"

/* The first element of a field value's comma-separated list, trimmed. */
static void first_elem(const nw_hdr_t *h, const char **p, size_t *n) {
    const char *v = h->value, *c = memchr(v, ',', h->value_len);
    size_t len = c ? (size_t)(c - v) : h->value_len;
    while (len && (*v == ' ' || *v == '\t'))
        v++, len--;
    while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
        len--;
    *p = v;
    *n = len;
}

/* Is p[0..n) a plausible Host value: a reg-name, IPv4 or [IPv6] with an
 * optional port, nothing a request head or a URL would misread? */
static int host_ok(const char *p, size_t n) {
    size_t i;
    if (n == 0 || n > 255)
        return 0;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr("-._~:[]!$&'()*+;=%", c)))
            return 0;
    }
    return 1;
}

/* What the OPEN says of the public side: the Host the client used
 * (X-Forwarded-Host, which serve always sets, else Host) and its scheme
 * (X-Forwarded-Proto), kept for PRESERVE_HOST and redirect rewriting. */
int lreq_public(lreq_t *r, const nw_mux_frame_t *f) {
    const char *host = NULL, *proto = NULL, *v;
    size_t hlen = 0, plen = 0, n, i;
    int xfh = 0;
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (!proto && NAME_IS(h, "x-forwarded-proto")) {
            first_elem(h, &proto, &plen);
        } else if (!xfh && NAME_IS(h, "x-forwarded-host")) {
            first_elem(h, &v, &n);
            xfh = 1, host = v, hlen = n;
        } else if (!host && NAME_IS(h, "host")) {
            first_elem(h, &host, &hlen);
        }
    }
    if (!host || !host_ok(host, hlen))
        return 0;
    lreq_note_origin(r, f, host, hlen, proto, plen);
    if (r->ag->cfg->preserve_host && nw_sbuf_append(&r->sent, host, hlen) != 0)
        return -1;
    if (!r->ag->cfg->rewrite_location || !proto ||
        !(nw_strieq(proto, plen, "http") || nw_strieq(proto, plen, "https")))
        return 0;
    if (nw_sbuf_appends(&r->pub, nw_strieq(proto, plen, "https") ? "https://" : "http://") != 0 ||
        nw_sbuf_append(&r->pub, host, hlen) != 0)
        return -1;
    return 0;
}

/* Destination and If URLs that name this request's public origin name the
 * service as it is addressed instead (RFC 4918 10.3, 10.4), or COPY and
 * MOVE are refused as cross-server and lock conditions fail; with
 * REWRITE_LOCATION=0 (r->pub empty) the service gets them as sent. Each
 * value, rewritten or not, goes into r->rw then a NUL (no field value
 * holds one), for lreq_build_head to take in order; the response's
 * redirects reuse r->rw later. */
int lreq_req_urls(lreq_t *r, const nw_mux_frame_t *f) {
    nw_requrl_t q;
    size_t i;
    int kind, rc;

    r->rw.len = 0;
    if (!r->pub.len)
        return 0;
    q.pub_tls = r->pub.p[4] == 's';  /* "https://" */
    q.pub_host = strstr(r->pub.p, "://") + 3;
    q.pub_host_len = r->pub.len - (size_t)(q.pub_host - r->pub.p);
    q.local_tls = r->ag->cfg->local.tls;
    q.local_auth = r->sent.len ? r->sent.p : r->ag->host_hdr; /* the Host sent */
    q.local_auth_len = r->sent.len ? r->sent.len : strlen(r->ag->host_hdr);
    q.base = r->ag->cfg->local.path;
    q.base_len = strlen(q.base);
    for (i = 0; i < f->nhdrs; i++) {
        const nw_hdr_t *h = &f->hdrs[i];
        if (!(kind = nw_redirect_req_field(h->name, h->name_len)))
            continue;
        rc = nw_redirect_request(&q, kind, h->value, h->value_len, &r->rw);
        if (rc < 0 || (rc == 0 && nw_sbuf_append(&r->rw, h->value, h->value_len) != 0) ||
            nw_sbuf_append(&r->rw, "", 1) != 0)
            return -1;
    }
    return 0;
}

/* Location, Content-Location and Refresh URLs that point at LOCAL_URL or
 * at the Host sent get the public origin (REWRITE_LOCATION). The new
 * values live in r->rw; hdrs point into it once it stops growing. */
int lreq_redirects(lreq_t *r, nw_hdr_t *hdrs, size_t n) {
    agent_t *ag = r->ag;
    nw_redirect_t rd;
    size_t i, k = 0, off[NW_HTTP_MAX_FIELDS], len[NW_HTTP_MAX_FIELDS], idx[NW_HTTP_MAX_FIELDS];
    int kind, rc;

    if (!r->pub.len)
        return 0;
    rd.local_tls = ag->cfg->local.tls;
    rd.local_host = ag->cfg->local.host;
    rd.local_port = ag->cfg->local.port;
    /* Without PRESERVE_HOST the Host sent is LOCAL_URL's authority: its
     * origin, scheme included, is the only match. */
    rd.sent = r->sent.p;
    rd.sent_len = r->sent.len;
    rd.pub = r->pub.p;
    rd.pub_len = r->pub.len;
    r->rw.len = 0;
    for (i = 0; i < n; i++) {
        size_t start = r->rw.len;
        if (!(kind = nw_redirect_field(hdrs[i].name, hdrs[i].name_len)))
            continue;
        rc = nw_redirect_rewrite(&rd, kind, hdrs[i].value, hdrs[i].value_len, &r->rw);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            idx[k] = i, off[k] = start, len[k] = r->rw.len - start;
            k++;
        }
    }
    for (i = 0; i < k; i++) {
        hdrs[idx[i]].value = r->rw.p + off[i];
        hdrs[idx[i]].value_len = len[i];
    }
    return 0;
}
