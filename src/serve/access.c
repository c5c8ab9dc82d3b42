/* access.c: request screening: AUTH_TOKEN/AUTH_RULE (Bearer and Basic), CGI aliases, handshake-header checks. */
#include <errno.h>
#include <llhttp.h>
#include <regex.h>
#include <unistd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "basic.h"
#include "cfg.h"
#include "conn.h"
#include "http1.h"
#include "log.h"
#include "path.h"
#include "serve.h"
#include "serve_int.h"
#include "handshake.h"
#include "tun.h"
#include "ws.h"

/* Validate the upgrade; on success write the 101 and return 0, else write
 * the refusal and return -1. */
/* got == want, in time that depends only on want's length (the secret's
 * bytes are never the cause of an early exit). */
int srv_token_eq(const char *got, size_t glen, const char *want, size_t wlen) {
    unsigned char d = glen != wlen;
    size_t i;
    for (i = 0; i < wlen; i++)
        d |= (unsigned char)(want[i] ^ (i < glen ? got[i] : 0));
    return d == 0;
}

/* The credential in an Authorization value: after "Bearer " (any case)
 * when bearer_only, else that or the whole value. */
int srv_auth_value(const nw_hdr_t *f, int bearer_only, const char **tok, size_t *len) {
    if (f->value_len > 7 && nw_strieq(f->value, 7, "bearer ")) {
        *tok = f->value + 7;
        *len = f->value_len - 7;
        while (*len && **tok == ' ')
            (*tok)++, (*len)--;
        return 1;
    }
    if (bearer_only)
        return 0;
    *tok = f->value;
    *len = f->value_len;
    return 1;
}

/* Equal under the CGI mapping (RFC 3875 4.1.18): any case, '_' as '-'.
 * With prefix, name only has to start with b. */
static int cgi_eq(const char *a, size_t alen, const char *b, int prefix) {
    size_t i, blen = strlen(b);
    if (prefix ? alen < blen : alen != blen)
        return 0;
    for (i = 0; i < blen; i++) {
        int c = a[i] == '_' ? '-' : (a[i] >= 'A' && a[i] <= 'Z' ? a[i] + 32 : a[i]);
        if (c != b[i])
            return 0;
    }
    return 1;
}

/* A field name with '_' that a CGI, WSGI or Rack service reads as one
 * that serve frames the request with or vouches for: that service would
 * see a second, unchecked Content-Length or X-Forwarded-For. */
static const char *cgi_alias(const char *name, size_t len) {
    static const char *const fields[] = {"content-length", "transfer-encoding", "keep-alive",
                                         "x-forwarded-for", "x-forwarded-proto",
                                         "x-forwarded-host", "x-real-ip", "x-original-url",
                                         "x-rewrite-url", NULL};
    size_t i;
    if (!memchr(name, '_', len))
        return NULL;
    for (i = 0; fields[i]; i++)
        if (cgi_eq(name, len, fields[i], 0))
            return fields[i];
    return NULL;
}

/* What llhttp 8 lets through and a front-end must refuse (the reason, or
 * NULL when the fields are fine): field names that
 * are not tokens, control bytes in values, a Host that is not a host, and
 * any Transfer-Encoding but a single "chunked" on HTTP/1.1 (RFC 9112 6.1:
 * an unknown coding cannot be framed; on 1.0 it invites smuggling). */
const char *pc_fields_why(pconn_t *pc) {
    nw_hfields_t *h = &pc->hf;
    const char *why = NULL;
    size_t i, te = 0, authz = 0;
    nw_hdr_t f;
    for (i = 0; i < h->n && !why; i++) {
        nw_hf_get(h, i, &f);
        if (!nw_http_token_ok(f.name, f.name_len))
            why = "invalid header field name";
        else if (!nw_http_value_ok(f.value, f.value_len))
            why = "control character in a header value";
        else if (nw_strieq(f.name, f.name_len, "host") && !nw_http_host_ok(f.value, f.value_len))
            why = "invalid Host";
        else if (cgi_alias(f.name, f.name_len))
            why = "a field name with '_' that CGI reads as a framing or forwarding field";
        else if (nw_strieq(f.name, f.name_len, "transfer-encoding") &&
                 (te++ || !pc->minor || !nw_strieq(f.value, f.value_len, "chunked")))
            why = "unsupported Transfer-Encoding (only a single 'chunked' on HTTP/1.1)";
        else if (nw_strieq(f.name, f.name_len, "authorization") && authz++)
            /* A singleton (RFC 9110 11.6.2). serve removes the one that
             * carried its credential; a copy would reach the service. */
            why = "more than one Authorization";
    }
    return why;
}

/* Does the Authorization value f carry the token want? "Basic" with
 * the token as password (RFC 7617, any user-id: a browser's prompt),
 * "Bearer TOKEN", or the bare token. Malformed Basic is no credential. */
static int authz_matches(const nw_hdr_t *f, const char *want, size_t wlen) {
    char small[256], *buf;
    const char *tok;
    size_t len, cap = NW_BASIC_CAP(f->value_len);
    int rc, ok;
    buf = cap <= sizeof(small) ? small : nw_malloc(cap);
    if (!buf)
        return 0;
    rc = nw_basic_parse(f->value, f->value_len, buf, cap, &tok, &len);
    ok = rc == NW_BASIC_OK && srv_token_eq(tok, len, want, wlen);
    if (buf != small) {
        memset(buf, 0, cap);
        nw_free(buf);
    } else {
        memset(small, 0, sizeof(small));
    }
    if (ok)
        return 1;
    return srv_auth_value(f, 0, &tok, &len) && srv_token_eq(tok, len, want, wlen);
}

/* Does the rule match any reading of target's path: as sent, normalised
 * (norm, "" for none) or normalised but for dot segments (into buf, room
 * for 2 * (tlen + 2) bytes)? */
static int rule_hits(serve_t *srv, const char *target, size_t tlen, const char *norm, char *buf) {
    size_t len, plen = nw_path_len(target, tlen);
    char *raw = buf, *dots = buf + tlen + 2;
    if (plen == 0 || target[0] != '/')
        raw[0] = '/', memcpy(raw + 1, target, plen), plen++;
    else
        memcpy(raw, target, plen);
    raw[plen] = 0;
    if (nw_path_normalize(target, tlen, NW_PATH_KEEP_DOTS, dots, tlen + 2, &len) < 0)
        dots[0] = 0;
    return regexec(&srv->auth_re, raw, 0, NULL, 0) == 0 ||
           (norm[0] && regexec(&srv->auth_re, norm, 0, NULL, 0) == 0) ||
           (dots[0] && regexec(&srv->auth_re, dots, 0, NULL, 0) == 0);
}

/* Does a Destination (WebDAV COPY, MOVE: the resource they write) name a
 * path the rule matches? Its path is read on any host, as mod_dav does;
 * one serve cannot read as a path ("//h/p", a '#') counts as a match. */
static int dest_hits(pconn_t *pc) {
    nw_hdr_t f;
    char *buf;
    size_t len;
    int i = -1, hit = 0;
    while (!hit && (i = nw_hf_find(&pc->hf, "destination", (size_t)(i + 1))) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        if (!(buf = nw_malloc(3 * (f.value_len + 2))))
            return 1;
        hit = (f.value_len > 1 && f.value[0] == '/' && f.value[1] == '/') ||
              nw_path_normalize(f.value, f.value_len, 0, buf, f.value_len + 2, &len) < 0 ||
              rule_hits(pc->srv, f.value, f.value_len, buf, buf + f.value_len + 2);
        nw_free(buf);
    }
    return hit;
}

/* AUTH_TOKEN: 1 when the request may pass. The token comes in
 * X-Auth-Token, or in Authorization as Basic credentials whose password
 * it is, with "Bearer ", or bare. The Authorization field that carried
 * it is serve's and not forwarded (pc->auth_field); another one is the
 * service's. With
 * AUTH_RULE only paths it matches (a search, like grep -E; the query is
 * not part of the path) need it. The rule is tried on every reading of the
 * whole path a service may act on: as sent, normalised (norm, "" for "*"),
 * and normalised but for dot segments (a framework that decodes and routes
 * "/private/../x" without resolving it); a match on any needs the token.
 * So does a match on the path of a Destination (dest_hits), which COPY and
 * MOVE write to. buf has room for 2 * (tlen + 2) bytes. */
int pc_auth(pconn_t *pc, const char *target, size_t tlen, const char *norm, char *buf) {
    serve_t *srv = pc->srv;
    const char *want = srv->cfg->auth_token;
    size_t wlen = strlen(want);
    nw_hdr_t f;
    int i;
    pc->auth_field = 0;
    if (!wlen)
        return 1;
    if (srv->has_auth_rule && !rule_hits(srv, target, tlen, norm, buf) && !dest_hits(pc))
        return 1;
    /* Authorization first: a field that carries the token is serve's even
     * when X-Auth-Token carries it too, and must not reach the service. */
    i = -1;
    while ((i = nw_hf_find(&pc->hf, "authorization", (size_t)(i + 1))) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        if (authz_matches(&f, want, wlen)) {
            pc->auth_field = (unsigned)i + 1;
            return 1;
        }
    }
    if ((i = nw_hf_find(&pc->hf, "x-auth-token", 0)) >= 0) {
        nw_hf_get(&pc->hf, (size_t)i, &f);
        if (srv_token_eq(f.value, f.value_len, want, wlen))
            return 1;
    }
    nw_info("conn=%llu client=%s unauthorized: %s: 401", (unsigned long long)pc->id,
            pc->conn->peer, nw_hf_find(&pc->hf, "x-auth-token", 0) >= 0 ||
                                    nw_hf_find(&pc->hf, "authorization", 0) >= 0
                                ? "wrong token"
                                : "no token");
    return 0;
}

/* Does any Upgrade field offer HTTP itself (h2c, HTTP/2.0, ...)? Once a
 * service switched, the client would send it requests that serve never
 * sees: any path, past AUTH_RULE, with no X-Forwarded-For (the h2c
 * smuggling of proxies that pass such upgrades on). */
int srv_upgrade_to_http(const nw_hfields_t *h) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, "upgrade", (size_t)(i + 1))) >= 0) {
        size_t k = 0, e;
        nw_hf_get(h, (size_t)i, &f);
        while (k < f.value_len) {
            while (k < f.value_len && (f.value[k] == ' ' || f.value[k] == '\t' ||
                                       f.value[k] == ','))
                k++;
            for (e = k; e < f.value_len && f.value[e] != ','; e++)
                ;
            while (e > k && (f.value[e - 1] == ' ' || f.value[e - 1] == '\t'))
                e--;
            if (nw_strieq(f.value + k, e - k, "h2c") || nw_strieq(f.value + k, e - k, "http") ||
                (e - k > 5 && nw_strieq(f.value + k, 5, "http/")))
                return 1;
            k = e;
            while (k < f.value_len && f.value[k] != ',')
                k++;
        }
    }
    return 0;
}

/* Does any Sec-WebSocket-Protocol field offer a natwrp.* subprotocol? */
static int offers_natwrp(const nw_hfields_t *h) {
    int i = -1;
    nw_hdr_t f;
    while ((i = nw_hf_find(h, "sec-websocket-protocol", (size_t)(i + 1))) >= 0) {
        size_t k = 0;
        nw_hf_get(h, (size_t)i, &f);
        while (k < f.value_len) {
            while (k < f.value_len && (f.value[k] == ' ' || f.value[k] == '\t' ||
                                       f.value[k] == ','))
                k++;
            if (cgi_eq(f.value + k, f.value_len - k, NW_HS_SUBPROTO_PREFIX, 1))
                return 1;
            while (k < f.value_len && f.value[k] != ',')
                k++;
        }
    }
    return 0;
}

/* Checks on the target and head of a request for the local service, before
 * the token: NULL to go on, else why it gets 400. norm gets the
 * normalised path (room for tlen + 2), or "" for "*". */
const char *pc_screen(pconn_t *pc, const char *target, size_t tlen, char *norm) {
    nw_hfields_t *h = &pc->hf;
    const char *why = NULL;
    size_t nlen, i;
    int rc;
    nw_hdr_t f;

    rc = nw_path_normalize(target, tlen, 0, norm, tlen + 2, &nlen);
    if (rc < 0)
        norm[0] = 0; /* "*": no path to normalise */
    if (memchr(h->raw.p, '#', h->first_len))
        /* No request target has a fragment (RFC 9112 3.2). The checks here
         * end the path at '#', but a service may not: Go's net/http takes
         * "/public#/../private" as a path and cleans it to "/private". */
        why = "a fragment ('#') in the request target";
    else if (rc == NW_PATH_CLIMBS)
        /* "/../x" would leave LOCAL_URL's base path at the service. */
        why = "the path climbs above the root";
    else if (rc >= 0 && nw_strieq(norm, nlen, NW_TUNNEL_PATH))
        why = "the reserved tunnel path in another spelling";
    else if (offers_natwrp(h))
        /* A tunnel handshake (an agent whose REMOTE_URL has a path) must
         * never reach a local service: it carries the agent's CONN_TOKEN. */
        why = "a natwrp.* subprotocol outside the tunnel path";
    for (i = 0; i < h->n && !why; i++) {
        nw_hf_get(h, i, &f);
        if (cgi_eq(f.name, f.name_len, NW_HS_FIELD_PREFIX, 1))
            why = "an X-Natwrp-* field outside the tunnel path";
    }
    return why;
}
