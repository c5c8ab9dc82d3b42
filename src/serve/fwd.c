/* fwd.c: the forwarded head of a public request, a pure function (see fwd.h). */
#include <string.h>

#include "fwd.h"

size_t nw_fwd_drop_list(const nw_fwd_in_t *in, const char *drop[NW_FWD_MAX_DROP]) {
    /* X-Forwarded-* are rebuilt below and Expect is answered by serve.
     * X-Auth-Token is ours when AUTH_TOKEN is set, else the local service's;
 * so is the one Authorization field that carried AUTH_TOKEN (auth_field).
     * Forwarded and X-Real-IP name the client as X-Forwarded-For does, and
     * X-Original-URL and X-Rewrite-URL replace the path for services behind
     * IIS (Symfony, Laminas): a path AUTH_RULE never saw. Only a trusted
     * proxy may send them on. */
    size_t nd = 0;
    drop[nd++] = "x-forwarded-for", drop[nd++] = "x-forwarded-proto";
    drop[nd++] = "x-forwarded-host", drop[nd++] = "expect";
    if (in->auth_token)
        drop[nd++] = "x-auth-token";
    if (!in->trust) {
        drop[nd++] = "forwarded", drop[nd++] = "x-real-ip";
        drop[nd++] = "x-original-url", drop[nd++] = "x-rewrite-url";
    }
    if (in->authority)
        drop[nd++] = "host"; /* replaced by the target's authority */
    drop[nd] = NULL;
    return nd;
}

/* X-Forwarded-For, -Proto and -Host. Only a proxy we were told to trust
 * may speak for the client; from anyone else, X-Forwarded-* values are
 * dropped, not extended. */
static void add_forwarded(const nw_hfields_t *h, const nw_fwd_in_t *in, nw_fwd_head_t *out) {
    nw_hdr_t f = {0};
    int i = -1;
    while (in->trust && (i = nw_hf_find(h, "x-forwarded-for", (size_t)(i + 1))) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        nw_sbuf_append(&out->xff, f.value, f.value_len);
        nw_sbuf_append(&out->xff, ", ", 2);
    }
    if (out->xff.len) {
        nw_sbuf_append(&out->xff, in->ip, in->iplen);
        out->hdrs[out->n++] =
            (nw_hdr_t){"X-Forwarded-For", 15, out->xff.p ? out->xff.p : "", out->xff.len};
    } else {
        /* Just the client's address, which outlives the head: no copy (and
         * no allocation per request). */
        out->hdrs[out->n++] = (nw_hdr_t){"X-Forwarded-For", 15, in->ip ? in->ip : "", in->iplen};
    }
    if (in->trust && (i = nw_hf_find(h, "x-forwarded-proto", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        out->hdrs[out->n++] = (nw_hdr_t){"X-Forwarded-Proto", 17, f.value, f.value_len};
    } else {
        out->hdrs[out->n++] = (nw_hdr_t){"X-Forwarded-Proto", 17, in->https ? "https" : "http",
                                         in->https ? 5u : 4u};
    }
    if (in->trust && (i = nw_hf_find(h, "x-forwarded-host", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
    } else if (in->authority) {
        f.value = in->authority, f.value_len = in->alen;
    } else if ((i = nw_hf_find(h, "host", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
    }
    if (f.value)
        out->hdrs[out->n++] = (nw_hdr_t){"X-Forwarded-Host", 16, f.value, f.value_len};
}

/* Remove the forwarded field whose value is the head's field idx - 1. */
static void drop_field(const nw_hfields_t *h, size_t idx, nw_fwd_head_t *out) {
    nw_hdr_t f;
    size_t k;
    if (!idx || idx > h->n)
        return;
    nw_hf_get(h, idx - 1, &f);
    for (k = 0; k < out->n && out->hdrs[k].value != f.value; k++)
        ;
    if (k < out->n)
        memmove(out->hdrs + k, out->hdrs + k + 1, (out->n - k - 1) * sizeof(*out->hdrs)), out->n--;
}

int nw_fwd_build(const nw_hfields_t *h, const nw_fwd_in_t *in_, nw_fwd_head_t *out) {
    const char *drop[NW_FWD_MAX_DROP], *raw = h->raw.p ? h->raw.p : "";
    nw_fwd_in_t in1 = *in_, *in = &in1;
    nw_hdr_t f;
    int n, form, i;

    memset(out, 0, sizeof(*out));
    form = nw_http_origin_form(raw, h->first_len, &out->target, &out->tlen);
    if (form < 0)
        return -1;
    in->authority = nw_http_authority(raw, h->first_len, &in->alen);
    nw_fwd_drop_list(in, drop);
    n = nw_http_filter(h, out->hdrs, NW_HTTP_MAX_FIELDS, drop);
    if (n < 0)
        return -1;
    out->n = (size_t)n;
    drop_field(h, in->auth_field, out);
    if (in->route_auth != in->auth_field)
        drop_field(h, in->route_auth, out);
    if (in->authority)
        out->hdrs[out->n++] = (nw_hdr_t){"Host", 4, in->authority, in->alen};
    add_forwarded(h, in, out);
    if (in->upgrade && (i = nw_hf_find(h, "upgrade", 0)) >= 0) {
        nw_hf_get(h, (size_t)i, &f);
        out->hdrs[out->n++] = (nw_hdr_t){"Connection", 10, "Upgrade", 7};
        out->hdrs[out->n++] = (nw_hdr_t){"Upgrade", 7, f.value, f.value_len};
    }
    if (form == 1) { /* "http://h?q": the path is "/" */
        nw_sbuf_append(&out->tgt, "/", 1);
        nw_sbuf_append(&out->tgt, out->target, out->tlen);
        out->target = out->tgt.p;
        out->tlen = out->tgt.len;
    }
    return 0;
}

void nw_fwd_free(nw_fwd_head_t *out) {
    nw_sbuf_free(&out->xff);
    nw_sbuf_free(&out->tgt);
}
