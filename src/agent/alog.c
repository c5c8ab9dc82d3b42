/* alog.c: the agent's access-log line for one request from the tunnel
 * (accesslog.c formats and writes it): the request as sent to the local
 * service, the client serve named, the status that went back. */
#include <stdio.h>
#include <string.h>

#include "accesslog.h"
#include "agent_int.h"

/* The value of field name (lowercase) in the head sent to the service,
 * or NULL. */
static const char *head_field(const nw_sbuf_t *h, const char *name, size_t *len) {
    size_t nl = strlen(name);
    const char *p = h->p, *e = h->p + h->len, *eol;
    while (p && p < e && (eol = memchr(p, '\n', (size_t)(e - p))) != NULL) {
        p = eol + 1; /* the request line is skipped */
        if ((size_t)(e - p) > nl && p[nl] == ':' && nw_strieq(p, nl, name)) {
            const char *v = p + nl + 1, *ve = memchr(v, '\r', (size_t)(e - v));
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            *len = ve ? (size_t)(ve - v) : 0;
            return ve ? v : NULL;
        }
    }
    return NULL;
}

/* One access-log line for r: the request as sent to the service, the
 * client serve named (the last X-Forwarded-For element), the status that
 * went back through the tunnel (the service's, or the agent's own 503,
 * the 502/504 serve makes of a reset, 499 for a stream the server reset). */
void lreq_alog(lreq_t *r) {
    nw_alog_rec_t a = {0};
    char ip[64];
    const char *sp, *v;
    size_t n;
    if (!nw_alog_on() || !r->head.len)
        return;
    a.method = r->head.p;
    if ((sp = memchr(r->head.p, ' ', r->head.len)) != NULL) {
        const char *t = sp + 1, *te = memchr(t, ' ', r->head.len - (size_t)(t - r->head.p));
        a.method_len = (size_t)(sp - r->head.p);
        a.target = t;
        a.target_len = te ? (size_t)(te - t) : 0;
        a.proto = "HTTP/1.1";
    }
    if ((v = head_field(&r->head, "x-forwarded-for", &n)) != NULL) {
        const char *c = v + n;
        while (c > v && c[-1] != ',')
            c--;
        while (c < v + n && *c == ' ')
            c++;
        snprintf(ip, sizeof(ip), "%.*s", (int)(v + n - c), c);
        a.client = ip;
    }
    a.referer = head_field(&r->head, "referer", &a.referer_len);
    a.user_agent = head_field(&r->head, "user-agent", &a.user_agent_len);
    a.status = r->log_status ? r->log_status : 502;
    a.upstream_status = r->log_upstream;
    a.bytes_out = r->log_out;
    a.bytes_in = r->log_in;
    a.duration = (double)(uv_hrtime() - r->log_t0) / 1e9;
    a.tunnel = r->log_tun;
    nw_alog_write(&a);
}
